"""Serving benchmark: our server and Cornac's, the same load, the same bundle's data, one run.

    python benchmarks/serving.py --source /tmp/runs/ml1m/home --seconds 20 --warmup 3 --clients 16
    git archive HEAD | tar -x -C /tmp/before    # then add ease:before:1 to --configs and --before /tmp/before

`--source` is a home whose published bundle is served (the ML-1M demo: the hybrid champion, with EASE as its
`collab` ranker). It is copied (never written): once as it is ("hybrid") and once with the EASE ranker as the
champion ("ease"); each copy gets its champion's stored fold-ins (`live.long_term`) if the source lacks them
(written once per champion, before its servers start; the ML-100K hybrid took 6.8 ms of CPU per user).
Each (bundle, server, workers) configuration of `--configs` gets a fresh home, a server
started as `llmrec serve` does, `--warmup` seconds of load, then `--seconds` measured. The load: `--clients`
keep-alive HTTP/1.1 connections, each sending its next request when the last one is answered, 80 % GET
/users/{id}/recommendations?k=10 (a random known user) and 20 % POST /events (a click on a random catalogue
item; durable: fsynced before the 202). The client is a bare asyncio socket loop on uvloop in this process (about
0.1 ms of CPU per request), so what is measured is the server, not the client: its own CPU share over the measured
seconds is printed beside the server's ("client CPU %", of one core), because both share the machine's cores.

Cornac (`cornac.serving`, Flask, threaded) serves cornac's own EASE fitted on the same histories (its lambda
is ours: 750), with the same mix: GET /recommend?uid=..&k=10&remove_seen=true and POST /feedback (a CSV
append, no fsync, it does not change the next list). Prints one Markdown table: req/s, p50, p99, errors and
the POST p99 of each configuration, and the server's CPU milliseconds per request (user + sys of all its
processes over the measured seconds, from /proc): the steadier figure on a machine others load too.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import uvloop

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = "ease:uvicorn:1,ease:uvicorn:2,ease:granian:1,ease:granian:2,hybrid:uvicorn:1,hybrid:uvicorn:2," \
                  "hybrid:granian:2,ease:cornac:1"


@dataclass
class Load:
    """What the clients saw: latencies (seconds) per kind, error descriptions, measured seconds."""
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"get": [], "post": []})
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the server's (all its processes'), over the measured seconds
    client_cpu_seconds: float = 0.0  # this load generator's own, over the measured seconds


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read the status line, headers and body."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body or method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in fields:
            payload = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            payload = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                payload += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
        else:
            payload = await self.reader.read()
        if fields.get("connection", "").lower() == "close" or lines[0].startswith("HTTP/1.0"):
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def our_requests(users: list[str], items: list[str]):
    def make(rng: random.Random) -> tuple[str, str, str, bytes]:
        if rng.random() < 0.8:
            return "get", "GET", f"/users/{quote(rng.choice(users), safe='')}/recommendations?k=10", b""
        event = {"user_id": rng.choice(users), "item_id": rng.choice(items), "type": "click"}
        return "post", "POST", "/events", json.dumps(event).encode()
    return make


def cornac_requests(users: list[str], items: list[str]):
    def make(rng: random.Random) -> tuple[str, str, str, bytes]:
        if rng.random() < 0.8:
            return "get", "GET", f"/recommend?{urlencode({'uid': rng.choice(users), 'k': 10, 'remove_seen': 'true'})}", b""
        return "post", "POST", f"/feedback?{urlencode({'uid': rng.choice(users), 'iid': rng.choice(items)})}", b""
    return make


async def run_load(port: int, group: int, make_request, clients: int, warmup: float, seconds: float, seed: int) -> Load:
    load = Load()
    start = time.perf_counter()
    measure_from, deadline = start + warmup, start + warmup + seconds

    async def measure_cpu() -> None:
        await asyncio.sleep(warmup)
        load.cpu_seconds, load.client_cpu_seconds = -group_cpu_seconds(group), -time.process_time()
        await asyncio.sleep(max(deadline - time.perf_counter(), 0))
        load.cpu_seconds += group_cpu_seconds(group)
        load.client_cpu_seconds += time.process_time()

    async def client(n: int) -> None:
        rng = random.Random(seed + n)
        connection = Connection("127.0.0.1", port)
        while (now := time.perf_counter()) < deadline:
            kind, method, target, body = make_request(rng)
            try:
                status, payload = await connection.request(method, target, body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                connection.close()
                if now >= measure_from:
                    load.errors.append(type(exc).__name__)
                continue
            if now >= measure_from:
                load.latencies[kind].append(time.perf_counter() - now)
                if status >= 400:
                    load.errors.append(f"{status} {payload[:80]!r}")
        connection.close()

    await asyncio.gather(measure_cpu(), *(client(n) for n in range(clients)))
    load.seconds = seconds
    return load


def copy_home(source: Path, target: Path, champion: str, prepared: dict[str, Path]) -> Path:
    """A fresh home holding a copy of `source`'s current bundle, with `champion` ("hybrid": as published;
    "ease": the bundle's collab ranker) as the champion. Large files are hard-linked (they are only read). The
    champion's stored fold-ins (`live.long_term`) are written once per champion (`prepared` keeps the copy they
    were written into) when the source's belong to another ranker or are missing (a bundle published before them)."""
    from llmrec_platform.live.long_term import read_long_term
    from llmrec_platform.rankers.base import Ranker
    from llmrec_platform.serving.bundle import write_bundle_long_term

    bundle = prepared.get(champion) or (source / "bundles" / "current").resolve()
    copied = target / "bundles" / bundle.name
    copied.mkdir(parents=True)
    for path in bundle.iterdir():
        if path.name != "manifest.json":
            os.link(path, copied / path.name) if path.stat().st_dev == copied.stat().st_dev else shutil.copy(path, copied)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if champion == "ease" and manifest["champion"] != "ease":
        if manifest.get("collab") != "ease":
            raise SystemExit(f"{bundle}: its collab ranker is {manifest.get('collab')!r}, not EASE")
        (copied / "champion.pkl").unlink()
        os.link(copied / "collab.pkl", copied / "champion.pkl")
        manifest["champion"] = "ease"
    (copied / "manifest.json").write_text(json.dumps(manifest))
    if read_long_term(copied, Ranker.load(copied / "champion.pkl")) is None:  # another champion, or an older bundle
        print(f"writing the {champion} fold-ins of every user ...", file=sys.stderr, flush=True)
        write_bundle_long_term(copied)
    prepared[champion] = copied
    (target / "bundles" / "current").symlink_to(bundle.name)
    return copied


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(port: int, path: str, process: subprocess.Popen, limit: float = 600) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering {path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer {path} in {limit:.0f} s")


def warm_encoder(port: int) -> None:
    """One /query, so that the encoder (loaded in the background at start, holding the GIL for seconds) is
    ready before the load begins: the load measures a server in its steady state."""
    async def query() -> None:
        connection = Connection("127.0.0.1", port)
        status, payload = await asyncio.wait_for(connection.request("POST", "/query", b'{"text": "a film"}'), 600)
        connection.close()
        if status != 200:
            raise SystemExit(f"/query answered {status}: {payload[:200]!r}")
    asyncio.run(query())


def start_ours(home: Path, server: str, workers: int, port: int, before: Path | None) -> subprocess.Popen:
    """`llmrec serve` of this checkout, or (server "before") uvicorn from the checkout `--before` names, e.g. an
    export of the last commit (`git archive HEAD | tar -x -C /tmp/before`), for a before/after pair in one run."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}, "LLMREC_HOME": str(home)}
    command = [sys.executable, "-m", "llmrec_platform.cli", "serve", "--port", str(port), "--workers", str(workers)]
    if server == "before":
        if before is None:
            raise SystemExit("a `before` configuration needs --before CHECKOUT")
        return subprocess.Popen(command, cwd=before, env={**env, "PYTHONPATH": str(before)}, start_new_session=True)
    return subprocess.Popen([*command, "--server", server], cwd=REPO, env=env, start_new_session=True)


def start_cornac(work: Path, bundle: Path, port: int) -> subprocess.Popen:
    """Fit cornac's EASE on the bundle's histories (once per `work`), then serve it with `cornac.serving`."""
    model_dir = work / "cornac-ease"
    if not model_dir.exists():
        import cornac
        from cornac.data import Dataset

        histories = pd.read_parquet(bundle / "histories.parquet", columns=["user_id", "item_id", "rating"])
        triples = list(zip(histories["user_id"].astype(str), histories["item_id"].astype(str),
                           histories["rating"].astype(float), strict=True))
        train = Dataset.from_uir(triples, seed=2020)
        model = cornac.models.EASE(lamb=750.0, seed=2020, verbose=False)
        model.fit(train)
        saved = model.save(str(model_dir), save_trainset=True)
        (work / "cornac-model-path").write_text(saved)
    env = {**os.environ, "MODEL_PATH": (work / "cornac-model-path").read_text(), "MODEL_CLASS": "cornac.models.EASE",
           "FLASK_APP": "cornac.serving.app"}
    return subprocess.Popen([sys.executable, "-m", "flask", "run", "--port", str(port), "--with-threads"],
                            cwd=work, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    with_group = os.getpgid(process.pid)
    os.killpg(with_group, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(with_group, signal.SIGKILL)
        process.wait()


def group_cpu_seconds(group: int) -> float:
    """user + sys CPU seconds of every live process in a process group (the server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; then utime, stime at fields 11, 12 (after the command name)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def fast_paths(bundle: Path, repeats: int = 3) -> pd.DataFrame:
    """CPU µs per call of serving's one-user helpers against the sparse paths they replace, on the bundle's
    EASE ranker and real histories (every third user), one BLAS thread, best of `repeats` rounds."""
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from llmrec_platform.data.interactions import binarize
    from llmrec_platform.rankers.base import Histories, Ranker, top_k_positions, top_k_row

    threadpool_limits(1)
    ease = Ranker.load(bundle / "collab.pkl")
    n_items = len(ease.item_ids_)
    rows = [ease.train_[u] for u in range(0, ease.train_.shape[0], 3)]
    stamps = [ease.train_timestamps_[u] for u in range(0, ease.train_.shape[0], 3)]
    scores = np.random.default_rng(0).random(n_items).astype(np.float32)

    def coo(row, stamp):
        zeros = np.zeros(row.nnz, dtype=np.int64)
        return (sp.csr_matrix((row.data, (zeros, row.indices)), shape=(1, n_items)),
                sp.csr_matrix((stamp.data, (zeros, row.indices)), shape=(1, n_items)))

    def excluded(row):
        return sp.csr_matrix((np.ones(row.nnz, dtype=bool), (np.zeros(row.nnz, dtype=np.int64), row.indices)),
                             shape=(1, n_items))

    cases = {
        "history matrices: COO constructor": lambda r, t: coo(r, t),
        "history matrices: Histories.single": lambda r, t: Histories.single(r.indices, r.data, t.data, -1, n_items),
        "exclusion + top-10: sparse mask + top_k_positions": lambda r, t: top_k_positions(scores[None], excluded(r), 10),
        "exclusion + top-10: top_k_row": lambda r, t: top_k_row(scores, r.indices, 10),
        "EASE fold-in: sparse product": lambda r, t: np.asarray(binarize(r) @ ease.weights_, dtype=np.float32),
        "EASE fold-in: one-user path (sum_rows)": lambda r, t: ease._score_histories(Histories(r, t, np.array([-1]), (None,))),
    }
    table = []
    for name, case in cases.items():
        best = np.inf
        for _ in range(repeats):
            start = time.process_time()
            for row, stamp in zip(rows, stamps, strict=True):
                case(row, stamp)
            best = min(best, (time.process_time() - start) / len(rows))
        table.append({"step (one user)": name, "CPU µs per call": best * 1e6})
    return pd.DataFrame(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the home whose current bundle is served (copied)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated bundle:server:workers (bundle hybrid|ease; server granian|uvicorn|cornac|before)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--before", type=Path, help="a checkout whose server the `before` configurations run")
    parser.add_argument("--fast-paths", action="store_true", help="only time the one-user helpers in-process")
    args = parser.parse_args()
    bundle = (args.source / "bundles" / "current").resolve()
    if args.fast_paths:
        print(f"## One-user fast paths ({bundle.name}, EASE, every third user's training history)\n")
        print(fast_paths(bundle).to_markdown(index=False, floatfmt=".0f"))
        return
    users = sorted(pd.read_parquet(bundle / "histories.parquet", columns=["user_id"])["user_id"].astype(str).unique())
    items = pd.read_parquet(bundle / "items.parquet", columns=["item_id"])["item_id"].astype(str).tolist()
    rows, prepared = [], {}
    with tempfile.TemporaryDirectory(prefix="llmrec-serving-") as folder:
        work = Path(folder)
        for n, config in enumerate(args.configs.split(",")):
            champion, server, workers = config.split(":")
            port = free_port()
            if server == "cornac":
                process, make = start_cornac(work, bundle, port), cornac_requests(users, items)
                wait_ready(port, f"/recommend?{urlencode({'uid': users[0], 'k': 10, 'remove_seen': 'true'})}", process)
            else:
                home = work / f"home-{n}"
                copy_home(args.source, home, champion, prepared)
                process, make = start_ours(home, server, int(workers), port, args.before), our_requests(users, items)
                wait_ready(port, "/health", process)
                warm_encoder(port)
            load_before = os.getloadavg()[0]
            try:
                load = uvloop.run(run_load(port, process.pid, make, args.clients, args.warmup, args.seconds, args.seed))
            finally:
                stop(process)
            load_after = os.getloadavg()[0]
            every = load.latencies["get"] + load.latencies["post"]
            rows.append({"bundle": champion, "server": {"cornac": "Cornac (Flask)", "before": "ours before (--before)"}.get(
                             server, f"ours, {server}"),
                         "workers": int(workers), "req/s": len(every) / load.seconds, "p50 ms": ms(every, 50),
                         "p99 ms": ms(every, 99), "errors": len(load.errors),
                         "server CPU ms/req": load.cpu_seconds * 1000 / max(len(every), 1),
                         "client CPU %": load.client_cpu_seconds * 100 / load.seconds,
                         "GET p99 ms": ms(load.latencies["get"], 99),
                         "POST p50 ms": ms(load.latencies["post"], 50), "POST p99 ms": ms(load.latencies["post"], 99),
                         # the machine's 1-minute load average before and after: wall-clock columns are the machine's
                         # when other jobs share it (the CPU column is the steadier figure then)
                         "load avg": f"{load_before:.1f}-{load_after:.1f}"})
            print(pd.DataFrame(rows[-1:]).to_markdown(index=False, floatfmt=".1f"), file=sys.stderr, flush=True)
            if load.errors:
                print(f"  first errors: {sorted(set(load.errors))[:3]}", file=sys.stderr)
    print(f"## Serving, {bundle.name} ({len(users)} users, {len(items)} items): {args.clients} keep-alive clients, "
          f"80 % GET / 20 % POST, {args.seconds:.0f} s after {args.warmup:.0f} s of warm-up, {os.cpu_count()} CPUs\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
