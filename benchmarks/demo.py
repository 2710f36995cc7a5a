"""Wall time and peak memory of `llmrec demo` (cold embedding cache, then a second run).

    .venv/bin/python benchmarks/demo.py [--dataset ml-100k] [--runs 2]

Each run is a fresh `llmrec demo` process in one temporary LLMREC_HOME, so the first run starts with an
empty warehouse and embedding cache, and later runs find them warm. Peak memory is that process's max RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(home: Path, args: argparse.Namespace) -> tuple[float, float]:
    llmrec = Path(sys.executable).with_name("llmrec")
    command = [str(llmrec), "demo", "--dataset", args.dataset, "--protocol", args.protocol]
    if args.cold_items:
        command += ["--cold-items", str(args.cold_items)]
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, env={**os.environ, "LLMREC_HOME": str(home)}, stdout=output,
                                 stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (KiB on Linux)
        seconds = time.perf_counter() - start
        output.seek(0)
        log = output.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(log[-5000:])
        raise SystemExit(f"llmrec demo failed with exit code {code}")
    if args.show:
        print(log[log.find("Test fold"):])
    return seconds, usage.ru_maxrss / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--protocol", default="recbole")
    parser.add_argument("--cold-items", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print each run's metrics table")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print("| run | dataset | wall s | peak RSS GiB |\n|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            seconds, peak_gib = run_once(Path(tmp), args)
            label = "cold cache" if run == 0 else "warm cache"
            print(f"| {run + 1} ({label}) | {args.dataset} | {seconds:.1f} | {peak_gib:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
