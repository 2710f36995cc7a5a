"""Online evaluation: impressions of served lists, and click-through rate per model version, arm and
position (no Dagster).

The server appends one JSON line per recommendation response to `impressions.jsonl` beside the event log
(request id, user, model version, ranker, arm, item ids in list order). An event that carries the
`request_id` of a response and names one of its items is a click on that impression (any event type
counts: a click, a favourite, a rating). `online_ctr` joins the two into `online_metrics` rows with a 95 %
Wilson interval, per (model_version, arm, position) and per (model_version, arm) with position 0 = all.
`private_online_ctr` is what leaves the platform when LLMREC_DP_EPSILON is set: the same rows from noisy counts.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.privacy.dp import CountRelease

IMPRESSIONS_NAME = "impressions.jsonl"
ONLINE_COLUMNS = ["model_version", "arm", "ranker", "position", "impressions", "clicks", "ctr", "ci_low", "ci_high"]


class ImpressionLog:
    """Append-only impressions; one `write` per line on an O_APPEND descriptor, so processes never interleave.
    Not fsynced: an impression lost in a crash only lowers the denominator of a CTR."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / IMPRESSIONS_NAME

    def append(self, request_id: str, user_id: str, model_version: str, ranker: str, arm: str, items: list[str]) -> None:
        line = json.dumps({"request_id": request_id, "user_id": user_id, "model_version": model_version,
                           "ranker": ranker, "arm": arm, "items": items, "timestamp": int(time.time())},
                          separators=(",", ":")) + "\n"
        try:  # the folder exists after the first call: no mkdir (a stat) per list
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read(self) -> pd.DataFrame:
        rows = []
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a torn last line from a crash
        return pd.DataFrame(rows, columns=["request_id", "user_id", "model_version", "ranker", "arm", "items", "timestamp"])


Z_95 = 1.959964
# One shown item counts in two rows (its position's and its arm's, position 0), as an impression and maybe a click.
ONLINE_CELLS = 4


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (0, 0 for no trials)."""
    if trials == 0:
        return 0.0, 0.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def online_ctr(impressions: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """`ONLINE_COLUMNS` rows: impressions and clicks per model version, arm and position (1-based; 0 = all
    positions). A (request, item) pair counts as clicked at most once."""
    if impressions.empty:
        return pd.DataFrame(columns=ONLINE_COLUMNS)
    shown = impressions.explode("items").rename(columns={"items": "item_id"}).dropna(subset=["item_id"])
    shown["position"] = shown.groupby("request_id").cumcount() + 1
    clicks = events.dropna(subset=["request_id"])[["request_id", "item_id"]].drop_duplicates() if len(events) \
        else pd.DataFrame(columns=["request_id", "item_id"])
    shown = shown.merge(clicks.assign(clicked=1), on=["request_id", "item_id"], how="left").fillna({"clicked": 0})
    keys = ["model_version", "arm", "ranker"]
    per_position = shown.groupby(keys + ["position"], as_index=False).agg(impressions=("clicked", "size"),
                                                                          clicks=("clicked", "sum"))
    overall = shown.groupby(keys, as_index=False).agg(impressions=("clicked", "size"), clicks=("clicked", "sum"))
    frame = pd.concat([overall.assign(position=0), per_position], ignore_index=True)
    frame["clicks"] = frame["clicks"].astype(int)
    frame["ctr"] = frame["clicks"] / frame["impressions"]
    bounds = [wilson_interval(c, n) for c, n in zip(frame["clicks"], frame["impressions"], strict=True)]
    frame["ci_low"] = [b[0] for b in bounds]
    frame["ci_high"] = [b[1] for b in bounds]
    return frame[ONLINE_COLUMNS].sort_values(["model_version", "arm", "position"], ignore_index=True)


def refresh_online_metrics(store, impressions: ImpressionLog, table: str = "online_metrics") -> pd.DataFrame:
    """Recompute `online_metrics` from every impression and the warehouse's `events` (idempotent)."""
    shown = impressions.read()
    if shown.empty or not store.has_table("events"):
        return pd.DataFrame(columns=ONLINE_COLUMNS)
    events = store.query("SELECT request_id, item_id FROM events WHERE request_id IS NOT NULL")
    frame = online_ctr(shown, events)
    store.replace(table, frame)
    return frame


def private_online_ctr(frame: pd.DataFrame, release: CountRelease) -> pd.DataFrame:
    """`online_ctr`'s rows rebuilt from impressions and clicks released with differential privacy (one release of
    both columns, `ONLINE_CELLS` counts per shown item), rounded and clipped to 0 <= clicks <= impressions. The 95 %
    interval adds, in quadrature to the Wilson half-width, the noise's: z * sigma * sqrt(1 + ctr^2) / impressions
    (the delta method for clicks / impressions with independent noise of deviation sigma on each)."""
    if release.exact or frame.empty:
        return frame
    n_rows = len(frame)
    noisy = release.release(np.concatenate([frame["impressions"].to_numpy(float), frame["clicks"].to_numpy(float)]),
                            cells=ONLINE_CELLS, stream="online_ctr")
    impressions = np.maximum(np.rint(noisy[:n_rows]), 0).astype(int)
    clicks = np.clip(np.rint(noisy[n_rows:]), 0, impressions).astype(int)
    ctr = np.divide(clicks, impressions, out=np.zeros(n_rows), where=impressions > 0)
    sigma = release.noise_std(ONLINE_CELLS)
    low, high = np.zeros(n_rows), np.ones(n_rows)  # no impressions left: nothing is known
    for i in np.flatnonzero(impressions > 0):
        w_low, w_high = wilson_interval(int(clicks[i]), int(impressions[i]))
        noise_half = Z_95 * sigma * math.sqrt(1 + ctr[i] ** 2) / impressions[i]
        half = math.hypot((w_high - w_low) / 2, noise_half)
        low[i], high[i] = max(0.0, (w_low + w_high) / 2 - half), min(1.0, (w_low + w_high) / 2 + half)
    return frame.assign(impressions=impressions, clicks=clicks, ctr=ctr, ci_low=low, ci_high=high)


def online_markdown(frame: pd.DataFrame, release: CountRelease | None = None) -> str:
    """The report section: CTR per model version and arm (all positions), with the 95 % interval; from noisy
    counts when `release` has a finite epsilon."""
    private = release is not None and not release.exact
    overall = private_online_ctr(frame, release) if private else frame
    overall = overall[overall["position"] == 0]
    lines = ["## Online (served lists)", "",
             *([f"Counts released with differential privacy: {release.describe()}.", ""] if private else []),
             "| model version | arm | ranker | impressions | clicks | CTR | 95 % CI |", "|---|---|---|---:|---:|---:|---|"]
    for row in overall.itertuples(index=False):
        lines.append(f"| {row.model_version} | {row.arm} | {row.ranker} | {row.impressions} | {row.clicks} | "
                     f"{row.ctr:.4f} | [{row.ci_low:.4f}, {row.ci_high:.4f}] |")
    return "\n".join(lines + [""])
