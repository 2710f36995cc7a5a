"""Serving benchmark: `llmrec serve` measured from this (separate) process over loopback.

    python benchmarks/serving.py --dataset ml-1m --seconds 60 --clients 16    # builds an EASE bundle first
    python benchmarks/serving.py --home .llmrec                                 # the bundle a run published

Mix: 80 % GET /users/{id}/recommendations (k=10, a random known user), 20 % POST /events (a click), over
`--clients` keep-alive connections for `--seconds`. Then /query latency (encoding included), freshness (202
-> the next GET shows a changed list), the fsync batch sizes from /metrics, and where a request's time goes
(measured in-process on the same bundle). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
QUERIES = ["animated film for children", "a dark thriller about a detective", "romantic comedy in New York",
           "science fiction with space battles", "film de guerre historique", "una comedia familiar", "恐怖电影"]


def build_bundle(home: Path, dataset_name: str, seed: int) -> None:
    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
    from llmrec_platform.data.text import build_item_texts
    from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder
    from llmrec_platform.paths import Paths
    from llmrec_platform.rankers.ease import EASERanker
    from llmrec_platform.serving.bundle import publish_bundle

    dataset = load_dataset(dataset_name)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=seed))
    ease = EASERanker().fit(InteractionData.from_split(split))
    texts, _ = build_item_texts(dataset.items)
    vectors, _ = TextEncoder().encode(texts["text"].tolist())
    publish_bundle(Paths(home).ensure().bundles, ease, dataset.items.merge(texts[["item_id", "text"]], on="item_id"),
                   pd.DataFrame({"item_id": texts["item_id"], "embedding": list(vectors)}), split,
                   {"event_offset": 0, "encoder": DEFAULT_MODEL, "data_fingerprint": dataset_name}, collab=ease)


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if len(values) else float("nan")


async def load(url: str, users: list[str], items: list[str], clients: int, seconds: float, seed: int) -> dict:
    latencies = {"recommend": [], "event": []}
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(n: int):
        rng = random.Random(seed + n)
        async with httpx.AsyncClient(base_url=url, timeout=10) as session:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    if rng.random() < 0.8:
                        kind = "recommend"
                        response = await session.get(f"/users/{rng.choice(users)}/recommendations", params={"k": 10})
                    else:
                        kind = "event"
                        response = await session.post("/events", json={"user_id": rng.choice(users),
                                                                      "item_id": rng.choice(items), "type": "click"})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                latencies[kind].append(time.perf_counter() - start)
                if response.status_code >= 400:
                    errors.append(str(response.status_code))

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - began}


def freshness(url: str, users: list[str], items: list[str], trials: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    times = []
    with httpx.Client(base_url=url, timeout=10) as session:
        for _ in range(trials):
            user = rng.choice(users)
            before = [i["item_id"] for i in session.get(f"/users/{user}/recommendations").json()["items"]]
            session.post("/events", json={"user_id": user, "item_id": before[0], "type": "click"}).raise_for_status()
            start = time.perf_counter()  # the 202 is in: how long until a GET shows a changed list?
            while True:
                after = [i["item_id"] for i in session.get(f"/users/{user}/recommendations").json()["items"]]
                if after != before:
                    break
            times.append(time.perf_counter() - start)
    return times


def breakdown(home: Path, users: list[str], samples: int, seed: int) -> dict[str, float]:
    """Mean milliseconds per stage of one recommendation, in-process on the served bundle."""
    import orjson

    from llmrec_platform.live.events import Event, EventLog
    from llmrec_platform.live.short_term import ShortTermBlend
    from llmrec_platform.serving.bundle import current_bundle, load_bundle
    from llmrec_platform.serving.service import LiveService
    from llmrec_platform.settings import Settings

    settings = Settings(home=home)
    bundle = load_bundle(current_bundle(settings.paths.bundles))
    service = LiveService(bundle, EventLog(Path(tempfile.mkdtemp())), dict(settings.event_weights), settings.short_term)
    plain = LiveService(bundle, EventLog(Path(tempfile.mkdtemp())), dict(settings.event_weights), ShortTermBlend(weight=0))
    rng = random.Random(seed)
    stages = {"history arrays (bundle + live)": 0.0, "fold-in (score_histories)": 0.0, "short-term blend": 0.0,
              "exclusion + top-k": 0.0, "serialization (JSON)": 0.0}
    for _ in range(samples):
        user = rng.choice(users)
        t0 = time.perf_counter()
        service.history_arrays(user)
        t1 = time.perf_counter()
        plain.scores(user)
        t2 = time.perf_counter()
        scores, positions, _ = service.scores(user)
        t3 = time.perf_counter()
        top = service._top(scores, positions, 10)
        t4 = time.perf_counter()
        orjson.dumps({"items": [{"item_id": str(service.item_ids[p]), "title": service.titles[p],
                                 "score": float(scores[p])} for p in top]})
        t5 = time.perf_counter()
        # the blend's cost is what the blended scores take beyond the plain fold-in
        for stage, seconds in zip(stages, (t1 - t0, t2 - t1 - (t1 - t0), (t3 - t2) - (t2 - t1), t4 - t3, t5 - t4),
                                  strict=True):
            stages[stage] += seconds
    log = EventLog(home / "benchmark-fsync")
    start = time.perf_counter()
    for n in range(100):
        log.append([Event(user_id="u", item_id=str(n), event_type="click")])
    stages["fsync (one event, no group commit)"] = (time.perf_counter() - start) / 100 * samples
    return {stage: seconds / samples * 1000 for stage, seconds in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="serve this home's published bundle (default: build one)")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="llmrec-serving-"))
    if args.home is None:
        started = time.perf_counter()
        build_bundle(home, args.dataset, args.seed)
        print(f"bundle built in {time.perf_counter() - started:.0f} s under {home}", file=sys.stderr)
    from llmrec_platform.serving.bundle import current_bundle

    bundle = current_bundle(Path(home) / "bundles")
    histories = pd.read_parquet(bundle / "histories.parquet", columns=["user_id"])
    users = sorted(histories["user_id"].unique())
    items = pd.read_parquet(bundle / "items.parquet", columns=["item_id"])["item_id"].tolist()

    port = 18000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}, "LLMREC_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "llmrec_platform.cli", "serve", "--port", str(port),
                               "--workers", str(args.workers)], cwd=REPO, env=env, start_new_session=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        for text in QUERIES:  # warm the encoder
            httpx.post(url + "/query", json={"text": text}, timeout=120).raise_for_status()
        result = asyncio.run(load(url, users, items, args.clients, args.seconds, args.seed))
        query_times = []
        with httpx.Client(base_url=url, timeout=30) as session:
            for n in range(200):
                start = time.perf_counter()
                session.post("/query", json={"text": QUERIES[n % len(QUERIES)], "k": 10}).raise_for_status()
                query_times.append(time.perf_counter() - start)
        fresh = freshness(url, users, items, 200, args.seed)
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=30)

    manifest = bundle / "manifest.json"
    print(f"## Serving ({bundle.name}: champion {pd.read_json(manifest, typ='series')['champion']}, "
          f"{len(users)} users, {len(items)} items; {args.workers} worker(s), {args.clients} clients, "
          f"{args.seconds:.0f} s, {os.cpu_count()} CPUs)\n")
    rows = []
    for kind, values in result["latencies"].items():
        rows.append({"request": kind, "count": len(values), "req/s": len(values) / result["seconds"],
                     "p50 ms": percentile(values, 50), "p99 ms": percentile(values, 99)})
    every = result["latencies"]["recommend"] + result["latencies"]["event"]
    rows.append({"request": "all", "count": len(every), "req/s": len(every) / result["seconds"],
                 "p50 ms": percentile(every, 50), "p99 ms": percentile(every, 99)})
    rows.append({"request": "/query (sequential, encoding included)", "count": len(query_times), "req/s": float("nan"),
                 "p50 ms": percentile(query_times, 50), "p99 ms": percentile(query_times, 99)})
    rows.append({"request": "freshness: 202 -> changed list", "count": len(fresh), "req/s": float("nan"),
                 "p50 ms": percentile(fresh, 50), "p99 ms": percentile(fresh, 99)})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))
    print(f"\nerrors: {len(result['errors'])} {sorted(set(result['errors']))[:5]}")
    count = float(re.search(r"llmrec_fsync_batch_events_count ([\d.e+]+)", metrics).group(1))
    total = float(re.search(r"llmrec_fsync_batch_events_sum ([\d.e+]+)", metrics).group(1))
    print(f"group commit: {total:.0f} events in {count:.0f} fsyncs (mean batch {total / max(count, 1):.2f}; "
          "metrics of the worker that answered /metrics)")
    print("\n## Where a recommendation's time goes (in-process, mean ms)\n")
    stages = breakdown(Path(home), users, 300, args.seed)
    print(pd.DataFrame({"stage": list(stages), "ms": list(stages.values())}).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
