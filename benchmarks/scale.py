"""The whole default graph on synthetic shops of growing size: per stage wall time, CPU time and peak RSS, and
how time grows with the number of interactions.

    nice -n 10 .venv/bin/python benchmarks/scale.py --interactions 1000000 5000000 20000000 [--items 20000] \
        [--fast] [--time-limit 7200] [--keep DIR] [--ray]

For each size: writes a seeded synthetic shop (`llmrec_platform.data.synthetic`: power-law popularity and
activity, taste clusters the item texts name, 0.1 % bad rows; Parquet + dataset config), runs `llmrec demo
--dataset <config>` once in a fresh LLMREC_HOME (cold embedding cache; job full_pipeline unless --fast) and prints
the per-stage table of `benchmarks/demo.py` (Dagster step start/end, CPU seconds, peak RSS sampled every 20 ms),
the sizes after the split, and what the scale guards chose (dense item-item models above LLMREC_DENSE_MAX_ITEMS,
with the sparse stand-in named; the content ranker's retrieval). Then, between consecutive sizes, the growth
exponent b of time ~ interactions^b (log(t2 / t1) / log(n2 / n1)) for the whole run and each stage.
`--time-limit` stops a size's run after that many seconds and prints the steps it finished (partial).
`--ray` repeats each size's run in another fresh home with LLMREC_RAY_ADDRESS set to a local 2-node cluster
(`benchmarks/ray_demo.py`'s: 127.0.0.1, a head of 0 CPUs, 2 workers of 2 CPUs), prints the stage times of both side
by side with the cluster's own CPU seconds, and says whether the two printed metrics tables are identical.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import load, profile_demo  # noqa: E402  (the per-stage machinery)

from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic  # noqa: E402

GUARDED = ("ease_ranker", "llm_ease_map_ranker")
STOP_GRACE_S = 120  # after SIGTERM, how long a stopped run may take to record its interrupted step
NOTES = {"llm_content_ranker": "retrieval"}  # metadata that says which retrieval path the content ranker took


def run_demo(home: Path, config: Path, args: argparse.Namespace, ray_address: str | None = None):
    """One `llmrec demo` child (on the Ray cluster at `ray_address`, else in-process): its `demo.RunProfile`. A child
    past `--time-limit` is stopped (SIGTERM, by its pid) and SystemExit raised, as for a failed run."""
    command = [str(Path(sys.executable).with_name("llmrec")), "demo", "--dataset", str(config), "--protocol",
               args.protocol, "--device", "cpu"] + (["--fast"] if args.fast else [])
    env = {**{k: v for k, v in os.environ.items() if k != "LLMREC_RAY_ADDRESS"}, "LLMREC_HOME": str(home)}
    if ray_address:
        env["LLMREC_RAY_ADDRESS"] = ray_address
    if args.dense_max_items:
        env["LLMREC_DENSE_MAX_ITEMS"] = str(args.dense_max_items)
    before = set(children())
    timer = None
    if args.time_limit:
        def stop() -> None:
            started = set(children()) - before  # only the child this call started
            for pid in started:
                os.kill(pid, signal.SIGTERM)  # Dagster interrupts the running step
            time.sleep(STOP_GRACE_S)
            for pid in started & set(children()):
                os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(args.time_limit, stop)
        timer.start()
    try:
        return profile_demo(home, command, env)
    finally:
        if timer:
            timer.cancel()


def children() -> list[int]:
    """This process's child processes."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def finished_steps(home: Path) -> dict[str, float]:
    """Seconds of each step the home's latest run completed successfully (for a run that was stopped)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return {}
        steps = instance.get_run_step_stats(runs[0].run_id)
    return {s.step_key: s.end_time - s.start_time for s in steps
            if s.status is not None and s.status.value == "SUCCESS" and s.end_time and s.start_time}


def guard_notes(home: Path) -> list[str]:
    """The scale guards' choices, from the guarded assets' latest materializations."""
    import dagster as dg

    notes = []
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for name in (*GUARDED, *NOTES):
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
            if name in NOTES:
                notes.append(f"{name}: {metadata[NOTES[name]].value}" if NOTES[name] in metadata else f"{name}: -")
            else:
                notes.append(f"{name}: {metadata['skipped'].value}" if "skipped" in metadata else f"{name}: fitted (dense)")
    return notes


def split_sizes(home: Path) -> str:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        users, items, rows = conn.execute(
            "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) FROM split").fetchone()
    return f"split: {rows:,} interactions, {users:,} users, {items:,} items (ratings >= 3, 10-core)"


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    """b in t ~ n^b through two points."""
    return math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")


def run_size(interactions: int, root: Path, args: argparse.Namespace) -> dict | None:
    """Write the shop, run the graph, print its table; the stage table (None when the run did not finish)."""
    start = time.perf_counter()
    config = write_synthetic(root / "data", SyntheticSpec(interactions, args.items, bad_fraction=0.001))
    print(f"\n## {interactions:,} interactions, {args.items:,} items (shop written in "
          f"{time.perf_counter() - start:.1f} s); before: {load()}", flush=True)
    home = root / "home"
    try:
        profile = run_demo(home, config, args)
    except SystemExit as stopped:
        steps = finished_steps(home)
        print(f"run stopped ({stopped}); {len(steps)} steps finished, {sum(steps.values()):.1f} s of step time:")
        for name, seconds in sorted(steps.items(), key=lambda x: -x[1]):
            print(f"| {name} | {seconds:.1f} |")
        return None
    stages = profile.stages
    print(f"run: {profile.wall_s:.1f} s, {profile.cpu_s:.1f} CPU s, {profile.peak_gib:.2f} GiB peak RSS, "
          f"job {stages['(job name)']}; after: {load()}")
    print(split_sizes(home))
    for note in guard_notes(home):
        print(note)
    print("\n| stage | s | CPU s | peak GiB |\n|---|---:|---:|---:|")
    names = sorted((s for s in stages if s != "(job name)"),
                   key=lambda s: (s == "wrap-up", s != "start-up", -stages[s][0]))
    for name in names:
        print("| {} | {:.1f} | {:.1f} | {:.2f} |".format(name, *stages[name]))
    print(f"| **total (wall, process peak)** | **{profile.wall_s:.1f}** | **{profile.cpu_s:.1f}** | "
          f"**{profile.peak_gib:.2f}** |", flush=True)
    if args.keep:
        (root / "demo_output.txt").write_text(profile.log)
    if args.ray:
        compare_on_ray(profile, config, root, args)
    return {**{k: v for k, v in stages.items() if k != "(job name)"},
            "total": (profile.wall_s, profile.cpu_s, profile.peak_gib)}


def compare_on_ray(local, config: Path, root: Path, args: argparse.Namespace) -> None:
    """The same run on a local 2-node Ray cluster, in a fresh home: stage times beside the in-process ones."""
    from ray_demo import on_local_cluster, printed_table, side_by_side  # sets Ray's loopback variable first

    try:
        on_ray, ray_cpu_s, address = on_local_cluster(lambda address: run_demo(root / "home-ray", config, args, address))
    except SystemExit as stopped:
        print(f"\nthe run on Ray did not finish ({stopped})")
        return
    same = printed_table(local.log) == printed_table(on_ray.log)
    print(f"\non Ray ({address}, 2 worker nodes): {on_ray.wall_s:.1f} s, {on_ray.cpu_s:.1f} CPU s in the driver; "
          f"printed metrics tables {'identical' if same else 'DIFFERENT'}; after: {load()}")
    side_by_side(local, on_ray, ray_cpu_s)
    if args.keep:
        (root / "demo_output_ray.txt").write_text(on_ray.log)


def print_curve(results: dict[int, dict]) -> None:
    """Wall time and peak per size, and the growth exponent between consecutive sizes, for the whole run and the
    stages that take at least 5 % of the largest run."""
    sizes = sorted(results)
    largest = results[sizes[-1]]
    stages = ["total"] + sorted((s for s in largest if s != "total" and largest[s][0] >= 0.05 * largest["total"][0]),
                                key=lambda s: -largest[s][0])
    header = " | ".join(f"{n:,}: s / GiB" for n in sizes)
    pairs = [(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
    print(f"\n| stage | {header} | " + " | ".join(f"b {a:,}->{b:,}" for a, b in pairs) + " |")
    print("|---" * (1 + len(sizes) + len(pairs)) + "|")
    for stage in stages:
        cells = [f"{results[n][stage][0]:.1f} / {results[n][stage][2]:.2f}" if stage in results[n] else "-"
                 for n in sizes]
        growth = [f"{exponent(a, results[a][stage][0], b, results[b][stage][0]):.2f}"
                  if stage in results[a] and stage in results[b] else "-" for a, b in pairs]
        print(f"| {stage} | " + " | ".join(cells + growth) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--protocol", default="recbole")
    parser.add_argument("--fast", action="store_true", help="job fast_pipeline (no hybrid ablation)")
    parser.add_argument("--dense-max-items", type=int, default=0, help="LLMREC_DENSE_MAX_ITEMS for the run")
    parser.add_argument("--time-limit", type=float, default=0, help="stop a size's run after this many seconds")
    parser.add_argument("--keep", type=Path, help="keep the data and the homes in DIR/<interactions>")
    parser.add_argument("--ray", action="store_true", help="repeat each run on a local 2-node Ray cluster")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; {'job fast_pipeline' if args.fast else 'the default graph'}",
          flush=True)
    results = {}
    for interactions in sorted(args.interactions):
        with tempfile.TemporaryDirectory() as tmp:
            root = args.keep / str(interactions) if args.keep else Path(tmp)
            stages = run_size(interactions, root, args)
        if stages is None:
            break  # a larger size would not finish either
        results[interactions] = stages
    if results:
        print_curve(results)
    return 0 if len(results) == len(args.interactions) else 1


if __name__ == "__main__":
    sys.exit(main())
