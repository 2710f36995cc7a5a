"""A small shop dataset unlike MovieLens (string ids, other column names, Parquet, JSONL, a Latin-1 CSV) and
the dataset config that maps it: the manual's "Bring your own data" example (docs/own-data.md), built in a temporary
folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

OWN_DATA_PAGE = Path(__file__).resolve().parent.parent / "docs" / "own-data.md"
RUNNING = ["Trail runner", "Road racer", "Marathon flat", "Cushioned trainer", "Track spike", "Ultra trail shoe",
           "Tempo trainer", "Stability runner", "Carbon racer", "Recovery shoe", "Minimal runner", "Waterproof trail",
           "Lightweight racer", "Daily trainer", "Sprint spike"]
KITCHEN = ["Chef knife", "Cast iron pan", "Espresso grinder", "Dutch oven", "Paring knife", "Stock pot", "Pour-over kettle",
           "Santoku knife", "Wok", "Bread knife", "Milk frother", "Sauce pan", "Moka pot", "Cutting board", "Tea kettle"]


def manual_config() -> str:
    """The first YAML example of the manual's "Bring your own data" page."""
    text = OWN_DATA_PAGE.read_text(encoding="utf-8")
    section = text[text.index("# Bring your own data"):]
    return re.search(r"```yaml\n(.*?)```", section, re.S)[1]


def write_shop(folder: Path, n_customers: int = 30, per_customer: int = 14, seed: int = 11) -> Path:
    """The files the manual's example names, under `folder`; returns the config file's path."""
    rng = np.random.default_rng(seed)
    (folder / "data" / "events").mkdir(parents=True, exist_ok=True)
    skus = [f"RUN-{i:03d}" for i in range(len(RUNNING))] + [f"KIT-{i:03d}" for i in range(len(KITCHEN))]
    catalog = [{"sku": s, "name": n, "description": f"{n} for {'runners' if s.startswith('RUN') else 'home cooks'}"
                " &amp; enthusiasts", "category": ["running", "shoes"] if s.startswith("RUN") else "kitchen|cookware"}
               for s, n in zip(skus, RUNNING + KITCHEN, strict=True)]
    catalog[3]["description"] = "CafÃ© racer edition"  # mojibake that the text normalisation repairs
    (folder / "data" / "catalog.jsonl").write_text("\n".join(json.dumps(c) for c in catalog) + "\n", encoding="utf-8")
    rows = []
    start = pd.Timestamp("2024-03-01", tz="UTC")
    for c in range(n_customers):
        runner = c % 2 == 0
        pool = np.arange(0, 20) if runner else np.arange(10, 30)
        for item in rng.choice(pool, size=per_customer, replace=False):
            when = start + pd.Timedelta(seconds=int(rng.integers(0, 120 * 86400)))
            rows.append({"customer_id": f"C{c:04d}", "sku": skus[item], "stars": int(rng.integers(3, 6)),
                         "ts": when.isoformat()})
    events = pd.DataFrame(rows)
    half = len(events) // 2
    events.iloc[:half].to_parquet(folder / "data" / "events" / "part-0.parquet", index=False)
    events.iloc[half:].to_parquet(folder / "data" / "events" / "part-1.parquet", index=False)
    lines = ["customer_id;bio"] + [f"C{c:04d};{'Läuferin aus München' if c % 2 == 0 else 'Cuisinière à Lyon'}"
                                   for c in range(n_customers)]
    (folder / "data" / "customers.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    reviews = [{"customer_id": f"C{c:04d}", "body": "Great for my morning runs" if c % 2 == 0 else "Sharp and sturdy",
                "created_at": "2024-05-01T10:00:00Z"} for c in range(0, n_customers, 3)]
    (folder / "data" / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in reviews) + "\n", encoding="utf-8")
    config = folder / "my-shop.yaml"
    config.write_text(manual_config(), encoding="utf-8")
    return config
