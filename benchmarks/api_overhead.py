"""What the API's framework layers (middleware, access checks, rate limits) cost per request, in-process.

    python benchmarks/api_overhead.py --requests 3000

Calls the app through httpx's ASGI transport (no sockets, no uvicorn), over the tiny two-group bundle of the
serving tests, so the time is the framework's plus a tiny EASE fold-in: GET /users/{id}/recommendations,
GET /items/{id}/similar and POST /events (one at a time, so each pays its own fsyncs); without tokens, with
a bearer token from a token file, and with the token plus per-token and per-address rate limits high enough
never to refuse. Prints a Markdown table of the median
wall-clock and the mean CPU microseconds per request (CPU time is the steadier figure on a loaded machine).
Run it twice with PYTHONPATH set to another checkout to compare versions.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import asyncio
import contextlib
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from llmrec_platform.paths import Paths
from llmrec_platform.serving.app import create_app
from llmrec_platform.settings import Settings

TOKEN = "benchmark-token-0123456789abcdef"


async def timings(app, route: str, requests: int, headers: dict) -> tuple[list[float], float]:
    """(wall seconds of each request, CPU seconds of this process per request)."""
    method, path = route.split(" ")
    body = {"json": {"user_id": "bench-user", "item_id": "i3", "type": "view"}} if method == "POST" else {}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                    base_url="http://bench", headers=headers))
        for _ in range(50):  # warm-up
            (await client.request(method, path, **body)).raise_for_status()
        spent = []
        cpu = time.process_time()
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.request(method, path, **body)
            spent.append(time.perf_counter() - start)
            response.raise_for_status()
        return spent, (time.process_time() - cpu) / requests


def publish_tiny_bundle(home: Paths) -> None:
    """The serving tests' bundle (loaded by file path, so PYTHONPATH still picks the llmrec_platform measured)."""
    spec = importlib.util.spec_from_file_location("serving_conftest", Path(__file__).parents[1] / "tests/serving/conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    conftest.publish_tiny_bundle(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Paths(Path(folder) / "home").ensure()
        publish_tiny_bundle(home)
        tokens = Path(folder) / "tokens.json"
        tokens.write_text(json.dumps({"bench": {"token": TOKEN, "scopes": ["admin"]}}))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        setups = [("no tokens", {}, {})]
        if "api_tokens_file" in Settings.__dataclass_fields__:  # a version with scoped access
            setups += [("token file, bearer token", {"api_tokens_file": tokens}, bearer),
                       ("token + rate limits", {"api_tokens_file": tokens, "rate_limit_token": "1000000/minute",
                                                "rate_limit_address": "1000000/minute"}, bearer)]
        print(f"| setup | route | median wall µs | CPU µs per request |  ({args.requests} requests each)")
        print("|---|---|---:|---:|")
        for name, extra, headers in setups:
            for route in ("GET /users/a01/recommendations", "GET /items/i2/similar", "POST /events"):
                app = create_app(Settings(home=home.home, **extra))
                spent, cpu = asyncio.run(timings(app, route, args.requests, headers))
                print(f"| {name} | {route} | {statistics.median(spent) * 1e6:.0f} | {cpu * 1e6:.0f} |")


if __name__ == "__main__":
    main()
