"""The whole graph on a synthetic shop: each stage's wall time, CPU time and peak memory.

    nice -n 5 .venv/bin/python benchmarks/scale.py --interactions 1000000 --items 20000 [--fast] [--keep DIR]

Writes a seeded synthetic shop (`llmrec_platform.data.synthetic`: power-law popularity and activity, item
texts from word lists, Parquet + dataset config) under a temporary folder, runs `llmrec demo --dataset
<config>` once in a fresh LLMREC_HOME (cold embedding cache) and prints the per-stage table of
`benchmarks/demo.py` (Dagster step start/end, CPU seconds, peak RSS sampled every 20 ms), the sizes after
the split, and which rankers the scale guard skipped (dense item-item models above LLMREC_DENSE_MAX_ITEMS,
with the sparse stand-in named). `--dense-max-items` sets that limit for the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import load, profile_demo  # noqa: E402  (the per-stage machinery)

from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic  # noqa: E402

GUARDED = ("ease_ranker", "llm_ease_map_ranker")


def run_demo(home: Path, config: Path, args: argparse.Namespace) -> tuple[dict, float, float, float, str]:
    """One `llmrec demo` child: (stage table, wall s, CPU s, peak GiB, its output)."""
    command = [str(Path(sys.executable).with_name("llmrec")), "demo", "--dataset", str(config), "--protocol",
               args.protocol, "--device", "cpu"] + (["--fast"] if args.fast else [])
    env = {**os.environ, "LLMREC_HOME": str(home)}
    if args.dense_max_items:
        env["LLMREC_DENSE_MAX_ITEMS"] = str(args.dense_max_items)
    profile = profile_demo(home, command, env)
    return profile.stages, profile.wall_s, profile.cpu_s, profile.peak_gib, profile.log


def guard_notes(home: Path) -> list[str]:
    """The scale guard's reasons, from the guarded assets' latest materializations."""
    import dagster as dg

    notes = []
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for name in GUARDED:
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
            notes.append(f"{name}: {metadata['skipped'].value}" if "skipped" in metadata else f"{name}: fitted (dense)")
    return notes


def split_sizes(home: Path) -> str:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        users, items, rows = conn.execute(
            "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM split").fetchone()
    return f"split: {rows:,} interactions, {users:,} users, {items:,} items (ratings >= 3, 10-core)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--protocol", default="recbole")
    parser.add_argument("--fast", action="store_true", help="job fast_pipeline (no hybrid ablation)")
    parser.add_argument("--dense-max-items", type=int, default=0, help="LLMREC_DENSE_MAX_ITEMS for the run")
    parser.add_argument("--keep", type=Path, help="keep the data and the home in DIR")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; before: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        config = write_synthetic(root / "data", SyntheticSpec(args.interactions, args.items, bad_fraction=0.001))
        print(f"synthetic shop: {args.interactions:,} interactions, {args.items:,} items "
              f"({time.perf_counter() - start:.1f} s to write)", flush=True)
        home = root / "home"
        stages, wall, cpu, peak, log = run_demo(home, config, args)
        print(f"run: {wall:.1f} s, {cpu:.1f} CPU s, {peak:.2f} GiB peak RSS, job {stages['(job name)']}; "
              f"after: {load()}")
        print(split_sizes(home))
        for note in guard_notes(home):
            print(note)
        print("\n| stage | s | CPU s | peak GiB |\n|---|---:|---:|---:|")
        names = sorted((s for s in stages if s != "(job name)"),
                       key=lambda s: (s == "wrap-up", s != "start-up", -stages[s][0]))
        for name in names:
            print("| {} | {:.1f} | {:.1f} | {:.2f} |".format(name, *stages[name]))
        print(f"| **total (wall, process peak)** | **{wall:.1f}** | **{cpu:.1f}** | **{peak:.2f}** |")
        if args.keep:
            (root / "demo_output.txt").write_text(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
