"""`llmrec demo` in-process and on a local 2-node Ray cluster: the same printed table, and the stage times side by side.

    nice -n 10 .venv/bin/python benchmarks/ray_demo.py [--dataset ml-100k] [--fast] [--keep-logs DIR]

Runs `llmrec demo` twice, each in a fresh LLMREC_HOME (cold embedding cache, no fit cache to share): first
in-process, then with LLMREC_RAY_ADDRESS set to a cluster this script starts on 127.0.0.1 (a head of 0 CPUs and 2
worker nodes of 2 CPUs: `compute.cluster.start_local_cluster`). It diffs the metrics tables the two runs print (from
"Test fold" to the champion line) and exits 1 when they differ, then prints `benchmarks/demo.py`'s per-stage table
for both. The Ray run's CPU column is the demo process's; the cluster's own processes (actors, tasks, raylets) are
counted once, in the "Ray cluster CPU s" line. On one machine the two nodes share its cores, so this measures
Ray's overhead, not a speed-up.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import difflib
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path

from llmrec_platform.compute.cluster import LOOPBACK_ENV, start_local_cluster

os.environ.update(LOOPBACK_ENV)  # before anything imports Ray: this process starts the cluster on 127.0.0.1

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import RunProfile, load, profile_demo  # noqa: E402  (the per-stage machinery)
from scale import children  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def descendants_cpu_s(pids: list[int]) -> dict[int, float]:
    """Own CPU seconds (user + system) of `pids` and every live descendant, by pid."""
    found: dict[int, float] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            todo += [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                     for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return found


def on_local_cluster(run):
    """`run(address)` against a local 2-node cluster started for it (and stopped after): (its result, the CPU
    seconds the cluster's processes used meanwhile, the address). The cluster's processes (GCS, raylets, and the
    workers the raylets start and stop: actors, tasks) are sampled every 0.2 s, since Ray does not account its
    reaped workers to their parent; a worker that lives under 0.2 s is missed."""
    cluster = start_local_cluster()
    try:
        roots = children()  # only the cluster's processes so far: the demo child comes later
        before = descendants_cpu_s(roots)
        seen = dict(before)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                for pid, cpu in descendants_cpu_s(roots).items():
                    seen[pid] = max(cpu, seen.get(pid, 0.0))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = run(cluster.address)
        finally:
            done.set()
            sampler.join()
        return result, sum(seen.values()) - sum(before.values()), cluster.address
    finally:
        cluster.shutdown()


def printed_table(log: str) -> list[str]:
    """The metrics tables and champion line `llmrec demo` prints (not its timings or paths)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Test fold")), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("Report:")), None)
    if start is None or end is None:
        raise SystemExit("llmrec demo printed no metrics table:\n" + log[-3000:])
    return lines[start:end]


def demo(home: Path, args: argparse.Namespace, ray_address: str | None) -> RunProfile:
    command = [str(Path(sys.executable).with_name("llmrec")), "demo", "--dataset", args.dataset, "--protocol",
               args.protocol, "--device", "cpu"] + (["--fast"] if args.fast else [])
    env = {k: v for k, v in os.environ.items() if k != "LLMREC_RAY_ADDRESS"}
    if ray_address:
        env["LLMREC_RAY_ADDRESS"] = ray_address
    return profile_demo(home, command, env)


def side_by_side(local: RunProfile, on_ray: RunProfile, ray_cpu_s: float) -> None:
    print("\n| stage | in-process s | CPU s | on Ray s | CPU s (driver) | Ray / in-process |\n|---|---:|---:|---:|---:|---:|")
    stages = [s for s in {**local.stages, **on_ray.stages} if s != "(job name)"]
    stages.sort(key=lambda s: (s == "wrap-up", s != "start-up", -local.stages.get(s, (0,))[0]))
    for stage in stages:
        a, b = local.stages.get(stage), on_ray.stages.get(stage)
        cells = [f"{a[0]:.1f} | {a[1]:.1f}" if a else "- | -", f"{b[0]:.1f} | {b[1]:.1f}" if b else "- | -",
                 f"{b[0] / a[0]:.2f}x" if a and b and a[0] > 0 else "-"]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print(f"| **total** | **{local.wall_s:.1f}** | **{local.cpu_s:.1f}** | **{on_ray.wall_s:.1f}** | "
          f"**{on_ray.cpu_s:.1f}** | **{on_ray.wall_s / local.wall_s:.2f}x** |")
    print(f"\nRay cluster CPU s during the Ray run (GCS, raylets, encoder actors, scoring tasks): {ray_cpu_s:.1f}; "
          f"the Ray run in all: {on_ray.cpu_s + ray_cpu_s:.1f} CPU s against {local.cpu_s:.1f} in-process")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--protocol", default="recbole")
    parser.add_argument("--fast", action="store_true", help="llmrec demo --fast (job fast_pipeline)")
    parser.add_argument("--keep-logs", type=Path, help="write both runs' CLI output to DIR")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; before: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = demo(Path(tmp) / "in-process", args, None)
        print(f"in-process: {local.wall_s:.1f} s, {local.cpu_s:.1f} CPU s; after: {load()}", flush=True)
        on_ray, ray_cpu_s, address = on_local_cluster(lambda address: demo(Path(tmp) / "on-ray", args, address))
        print(f"on Ray ({address}, 2 worker nodes): {on_ray.wall_s:.1f} s, {on_ray.cpu_s:.1f} CPU s in the "
              f"driver; after: {load()}", flush=True)
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
        (args.keep_logs / "in-process.txt").write_text(local.log)
        (args.keep_logs / "on-ray.txt").write_text(on_ray.log)
    expected, got = printed_table(local.log), printed_table(on_ray.log)
    same = expected == got
    print("\n" + "\n".join(expected))
    print(f"\nprinted tables: {'identical' if same else 'DIFFERENT'} ({len(expected)} lines)")
    if not same:
        print("\n".join(difflib.unified_diff(expected, got, "in-process", "on Ray", lineterm="")))
    side_by_side(local, on_ray, ray_cpu_s)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
