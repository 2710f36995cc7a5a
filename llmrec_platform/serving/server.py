"""`llmrec serve`: run the HTTP API with uvicorn (one process, or N workers sharing the event log)."""

from __future__ import annotations

from fastapi import FastAPI

from llmrec_platform.serving.app import create_app
from llmrec_platform.serving.auth import AccessPolicy
from llmrec_platform.serving.bundle import current_bundle
from llmrec_platform.settings import Settings


def limit_threads() -> None:
    """One BLAS/OpenMP thread per server process (the encoder sets torch's to one as well): a request's math
    is small, and threads that oversubscribe the cores cost more than they give (measured on a loaded 2-core
    machine: the short-term blend took 20 ms instead of 0.2 ms). Scale with --workers instead."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def app_from_env() -> FastAPI:
    """The uvicorn factory (`--workers N` imports it in each worker process)."""
    limit_threads()
    return create_app(Settings.from_env())


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "warning") -> None:
    """Serve `settings.home`'s current bundle until SIGINT/SIGTERM (uvicorn stops its workers cleanly).
    Fails at once, with what to run, when no bundle has been published or the token file is malformed."""
    import uvicorn

    bundle = current_bundle(settings.paths.bundles)
    AccessPolicy.from_settings(settings)  # a malformed token file stops here with one line, before any worker starts
    print(f"llmrec serve: bundle {bundle.name} on http://{host}:{port}  (OpenAPI: /docs; web page: /)", flush=True)
    if workers > 1:
        # Each worker imports the factory and reads the same settings from the environment.
        uvicorn.run("llmrec_platform.serving.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=False)
    else:
        limit_threads()
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)
