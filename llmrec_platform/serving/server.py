"""`llmrec serve`: run the HTTP API with granian or uvicorn (one process, or N workers sharing the event log).

With several workers, each is its own process with its own metrics: `serve` points prometheus_client's
multiprocess mode at a fresh folder under the home (`<home>/metrics/serve-<pid>`, removed on exit), and
`/metrics` sums every worker's files (`routes/ops.py`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi import FastAPI

from llmrec_platform.serving.app import create_app
from llmrec_platform.serving.auth import AccessPolicy
from llmrec_platform.serving.bundle import current_bundle
from llmrec_platform.serving.metrics import use_multiprocess_values
from llmrec_platform.settings import Settings, export_metrics_dir

SERVERS = ("uvicorn", "granian")
FACTORY = "llmrec_platform.serving.server:app_from_env"


GIL_SWITCH_SECONDS = 0.0005


def limit_threads() -> None:
    """One BLAS/OpenMP thread per server process (the encoder sets torch's to one as well): a request's math
    is small, and threads that oversubscribe the cores cost more than they give (measured on a loaded 2-core
    machine: the short-term blend took 20 ms instead of 0.2 ms). Scale with --workers instead.

    And a short GIL switch interval: the group-commit thread needs the GIL around each write and fsync, and
    with the default 5 ms a request's durable append waits up to 5 ms per hand-over while the event loop
    scores other requests."""
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def app_from_env() -> FastAPI:
    """The server's factory (with `--workers N` each worker process imports and calls it)."""
    limit_threads()
    settings = Settings.from_env()
    if settings.metrics_dir is not None:
        use_multiprocess_values()
    return create_app(settings)


def metrics_folder(settings: Settings) -> Path:
    """A fresh, empty folder for this server's multiprocess metrics (a stale one would add old counts)."""
    folder = settings.home / "metrics" / f"serve-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "warning",
          server: str = "granian") -> None:
    """Serve `settings.home`'s current bundle until SIGINT/SIGTERM (the server stops its workers cleanly).
    Fails at once, with what to run, when no bundle has been published or the token file is malformed.

    granian (the default: its HTTP handling runs in Rust threads outside the GIL, which measured 2-3x the
    throughput of uvicorn on the 2-core machine, docs/serving.md) always runs the app in worker processes that
    read the settings from the environment, as uvicorn's `--workers N` do; `settings` must therefore be
    `Settings.from_env()`, as the CLI's are. uvicorn with one worker serves `settings` in this process."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}: use one of {', '.join(SERVERS)}")
    bundle = current_bundle(settings.paths.bundles)
    AccessPolicy.from_settings(settings)  # a malformed token file stops here with one line, before any worker starts
    print(f"llmrec serve: bundle {bundle.name} on http://{host}:{port} with {server}, {workers} worker(s)  "
          "(OpenAPI: /docs; web page: /)", flush=True)
    folder = None
    if workers > 1:
        folder = metrics_folder(settings)
        export_metrics_dir(folder)  # the workers import prometheus_client after this, so they share the folder
    try:
        if server == "granian":
            from granian.constants import Interfaces, Loops
            from granian.log import LogLevels
            from granian.server import Server

            # Each granian worker is a process that imports the factory and reads the settings from the environment.
            Server(FACTORY, address=host, port=port, interface=Interfaces.ASGI, workers=workers, factory=True,
                   loop=Loops.uvloop, log_level=LogLevels(log_level), log_access=False).serve()
        elif workers > 1:
            import uvicorn

            uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                        access_log=False)
        else:
            import uvicorn

            limit_threads()
            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
