"""Wall time and peak memory of `llmrec demo`, per stage (cold embedding cache, then a second run).

    .venv/bin/python benchmarks/demo.py [--dataset ml-100k] [--runs 2] [--fast] [--show] [--keep-logs DIR] [--home DIR]

Each run is a fresh `llmrec demo` process in one temporary LLMREC_HOME, so the first run starts with an
empty warehouse and embedding cache, and later runs find them warm. Per stage: the Dagster step's own
start/end (from the run's step stats in the instance), the CPU seconds the process used meanwhile (less
sensitive than wall time to other jobs on a shared machine), and the peak RSS of the process while that step
ran (sampled from /proc every 20 ms, so a spike shorter than that can be missed). `start-up` is process start
to the run's start (imports, dataset check); `wrap-up` is run end to process exit (printing the tables).
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_S = 0.02
# Targets on 2 cores, seconds: (cold cache, warm cache; None: no target).
TARGETS: dict[str, tuple[float, float | None]] = {"ml-100k": (60.0, 15.0), "ml-1m": (300.0, None)}
# What a stage costs that no cache or setting removes without moving a metric, for the verdict lines.
KNOWN_COSTS = {
    "item_embeddings": "every item text through MiniLM on the CPU (cached by text: nothing to encode when warm)",
    "hybrid_ranker": "seeded LambdaRank models of 500 trees (three; one with --fast) and, unless --fast, the base "
                     "rankers refitted for pseudo-labels",
    "hybrid_ablation": "two one-model variants (their pseudo-label refits are the hybrid's) and scoring every "
                       "variant once for every test user",
    "multvae_ranker": "Mult-VAE epochs in torch on the CPU",
    "bpr_adam_ranker": "mini-batch Adam BPR epochs in torch on one thread (small batches: more threads add contention)",
    "evaluation_report": "full-ranking evaluation of every ranker and the paired bootstraps",
    "recommendations": "every ranker loaded from the artifacts, and the champion's lists (from the evaluation) written",
    "start-up": "importing Dagster, MLflow, pandas, DuckDB and the package, checking the dataset, opening the instance",
    "wrap-up": "printing the tables and exiting (the run's outputs are frozen out of the last garbage collection)",
}


@dataclass
class RunProfile:
    wall_s: float
    peak_gib: float
    log: str
    cpu_s: float = 0.0
    stages: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # step -> (s, cpu s, peak GiB)


TICKS = os.sysconf("SC_CLK_TCK")


def usage(pid: int) -> tuple[float, float] | None:
    """(RSS GiB, user + system CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return None
    return rss / 1024**2, (int(fields[11]) + int(fields[12])) / TICKS


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def step_table(home: Path, samples: list[tuple[float, float, float]], started: float, ended: float,
               total_cpu: float) -> dict:
    """Seconds, CPU seconds and peak RSS per Dagster step of the home's latest run, plus start-up and wrap-up."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        [run] = instance.get_runs(limit=1)
        stats = instance.get_run_stats(run.run_id)
        steps = sorted(instance.get_run_step_stats(run.run_id), key=lambda s: s.start_time)

    def cpu_at(t: float) -> float:
        return max((cpu for when, _, cpu in samples if when <= t), default=0.0)

    def stage(start: float, end: float, last: bool = False) -> tuple[float, float, float]:
        cpu = (total_cpu if last else cpu_at(end)) - cpu_at(start)
        return end - start, cpu, max((rss for t, rss, _ in samples if start <= t <= end), default=0.0)

    table = {"start-up": stage(started, stats.start_time)}
    for step in steps:
        table[step.step_key] = stage(step.start_time, step.end_time)
    table["wrap-up"] = stage(stats.end_time, ended, last=True)
    table["(job name)"] = run.job_name
    return table


def profile_demo(home: Path, command: list[str], env: dict[str, str]) -> RunProfile:
    """Run one `llmrec demo` child in `home`, sampling its CPU and memory, and build its per-stage table."""
    samples: list[tuple[float, float, float]] = []
    with tempfile.TemporaryFile("w+") as output:
        started = time.time()
        child = subprocess.Popen(command, env={**env, "LLMREC_HOME": str(home)}, stdout=output,
                                 stderr=subprocess.STDOUT, text=True)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                now = usage(child.pid)
                if now:
                    samples.append((time.time(), *now))
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, rusage = os.wait4(child.pid, 0)  # this child's own peak RSS (KiB on Linux)
        ended = time.time()
        done.set()
        sampler.join()
        output.seek(0)
        log = output.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(log[-5000:])
        raise SystemExit(f"llmrec demo failed with exit code {code}")
    cpu = rusage.ru_utime + rusage.ru_stime
    profile = RunProfile(ended - started, rusage.ru_maxrss / 1024**2, log, cpu)
    profile.stages = step_table(home, samples, started, ended, cpu)
    return profile


def run_once(home: Path, args: argparse.Namespace) -> RunProfile:
    llmrec = Path(sys.executable).with_name("llmrec")
    command = [str(llmrec), "demo", "--dataset", args.dataset, "--protocol", args.protocol]
    if args.cold_items:
        command += ["--cold-items", str(args.cold_items)]
    if args.fast:
        command.append("--fast")
    return profile_demo(home, command, dict(os.environ))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--protocol", default="recbole")
    parser.add_argument("--cold-items", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="llmrec demo --fast (job fast_pipeline)")
    parser.add_argument("--show", action="store_true", help="print each run's CLI output")
    parser.add_argument("--keep-logs", type=Path, help="write each run's CLI output to DIR/run<N>.txt")
    parser.add_argument("--home", type=Path, help="run in (and keep) this LLMREC_HOME instead of a temporary one")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; before: {load()}", flush=True)
    profiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            profile = run_once(args.home or Path(tmp), args)
            profiles.append(profile)
            label = "cold cache" if run == 0 else "warm cache"
            print(f"run {run + 1} ({label}): {profile.wall_s:.1f} s, {profile.cpu_s:.1f} CPU s, "
                  f"{profile.peak_gib:.2f} GiB peak RSS, "
                  f"job {profile.stages['(job name)']}; after: {load()}", flush=True)
            if args.show:
                print(profile.log)
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                (args.keep_logs / f"run{run + 1}.txt").write_text(profile.log)
    header = " | ".join(f"run {i + 1} s | CPU s | peak GiB" for i in range(len(profiles)))
    print(f"\n| stage | {header} |\n|---|" + "---:|---:|---:|" * len(profiles))
    stages = [s for s in profiles[0].stages if s != "(job name)"]
    stages = sorted(stages, key=lambda s: (s == "wrap-up", s != "start-up", -profiles[0].stages[s][0]))
    for stage in stages:
        cells = " | ".join("{:.1f} | {:.1f} | {:.2f}".format(*p.stages[stage]) if stage in p.stages else "— | — | —"
                           for p in profiles)
        print(f"| {stage} | {cells} |")
    cells = " | ".join(f"**{p.wall_s:.1f}** | **{p.cpu_s:.1f}** | **{p.peak_gib:.2f}**" for p in profiles)
    print(f"| **total (wall, process peak)** | {cells} |")
    print_verdicts(profiles, TARGETS.get(args.dataset))
    return 0


def print_verdicts(profiles: list[RunProfile], targets: tuple[float, float | None] | None) -> None:
    """Each run against its target; a miss names the stages that take the time and what they cost."""
    if not targets:
        return
    print()
    for run, profile in enumerate(profiles):
        target = targets[0] if run == 0 else targets[1]
        label = "cold cache" if run == 0 else "warm cache"
        if target is None:
            continue
        if profile.wall_s <= target:
            print(f"run {run + 1} ({label}): {profile.wall_s:.1f} s, meets the {target:.0f} s target")
            continue
        print(f"run {run + 1} ({label}): {profile.wall_s:.1f} s, misses the {target:.0f} s target by "
              f"{profile.wall_s - target:.1f} s; the largest stages:")
        stages = sorted(((s, v[0]) for s, v in profile.stages.items() if s != "(job name)"), key=lambda x: -x[1])
        for stage, seconds in stages[:4]:
            why = KNOWN_COSTS.get(stage, "")
            print(f"  {stage:<22} {seconds:6.1f} s  {why}")


if __name__ == "__main__":
    sys.exit(main())
