"""The heavy steps on a Ray cluster (LLMREC_RAY_ADDRESS): the only module that imports Ray, and only when called.

- `map` runs one Ray task per block with scheduling_strategy="SPREAD" (small tasks would otherwise pack onto one
  node); the driver does the reduce. A failed or killed task fails the step (no retry: Dagster's retry policy is the
  place for that, and a silent rescore would hide a dying node).
- `encode` is Ray Data `map_batches` over an actor pool of one encoder per worker node (`ActorPoolStrategy`),
  each actor asking for one GPU when the device is CUDA and one CPU otherwise, so a 2-CPU node keeps a CPU for
  Ray Data's read and write tasks (a pool that takes every CPU deadlocks them).

Every worker process gets the driver's CPU kernel pins (`kernels.py`) through the job's runtime environment, and
pins its BLAS threads like a pipeline process, so a block gives the same numbers on a worker as in-process.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from llmrec_platform.compute.blocks import DEFAULT_BLOCK_USERS, Placement
from llmrec_platform.kernels import AVX2_PINS, CPU_KERNELS_ENV

CONNECT_TIMEOUT_S = 5.0
ACTORS_READY_TIMEOUT_S = 600  # loading a model on a busy node takes tens of seconds


class RayUnreachable(RuntimeError):
    """LLMREC_RAY_ADDRESS names no running cluster; raised before any work."""


def _probe(address: str) -> None:
    """A TCP connect to `host:port` / `ray://host:port`, so an unreachable address fails in seconds, not after
    ray.init's minute of retries. `auto` is checked by ray.init itself (it fails at once without a cluster)."""
    if address == "auto":
        return
    target = urlsplit(address if "://" in address else f"gcs://{address}")
    if not target.hostname or not target.port:
        raise RayUnreachable(f"LLMREC_RAY_ADDRESS={address!r}: expected auto, host:port or ray://host:port")
    try:
        with socket.create_connection((target.hostname, target.port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayUnreachable(f"LLMREC_RAY_ADDRESS={address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
                             "start one (`ray start --head`) or unset the variable to run in-process") from None


def connect(address: str, num_threads: int = 2, cpu_kernels: str = "avx2",
            block_users: int = DEFAULT_BLOCK_USERS) -> RayBlocks:
    """Join the cluster at `address` (auto | host:port | ray://host:port) with this process as the driver."""
    _probe(address)
    import ray

    if not ray.is_initialized():
        env_vars = {CPU_KERNELS_ENV: cpu_kernels, **(AVX2_PINS if cpu_kernels == "avx2" else {})}
        try:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, logging_level="warning",
                     log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise RayUnreachable(f"LLMREC_RAY_ADDRESS={address!r}: {str(exc).splitlines()[0]}") from None
        from ray.data import DataContext

        context = DataContext.get_current()  # quiet: the step's own log and metadata say what ran where
        context.enable_progress_bars = context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise RayUnreachable(f"LLMREC_RAY_ADDRESS={address!r}: the cluster has no node with a CPU to run on")
    return RayBlocks(address=address, nodes=len(nodes), num_threads=num_threads, block_users=block_users)


def _run_block(fn: Callable[..., Any], block: Any, num_threads: int, *shared: Any) -> tuple[str, Any]:
    """One block on a worker: pinned like a pipeline process; returns (node id, result)."""
    import ray

    from llmrec_platform.threads import pin_blas_threads

    pin_blas_threads(num_threads)
    return ray.get_runtime_context().get_node_id(), fn(block, *shared)


class _EncoderActor:
    """One text encoder per actor (loaded once, from the installed wheel: nothing is downloaded)."""

    def __init__(self, model: str, device: str, precision: str, batch_size: int, num_threads: int):
        import ray

        from llmrec_platform.encoders.models import TextEncoder
        from llmrec_platform.threads import pin_blas_threads

        pin_blas_threads(num_threads)
        self.node = ray.get_runtime_context().get_node_id()
        self.encoder = TextEncoder(model, device=device, precision=precision, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors, _ = self.encoder.encode([str(t) for t in batch["text"]])
        return {"row": batch["row"], "embedding": vectors, "node": np.full(len(vectors), self.node)}


@dataclass
class RayBlocks:
    """A `BlockMap` on a Ray cluster the driver has joined (`connect`)."""

    address: str
    nodes: int
    num_threads: int = 2
    block_users: int = DEFAULT_BLOCK_USERS
    placements: list[Placement] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"ray ({self.address}, {self.nodes} nodes)"

    @property
    def min_blocks(self) -> int:
        return 2 * self.nodes  # every node gets texts to encode, and a slow block does not hold the others back

    def map(self, step: str, fn: Callable[..., Any], blocks: Sequence[Any], *shared: Any,
            progress: bool = False) -> list[Any]:
        import ray

        refs = [ray.put(value) for value in shared]  # shipped once, not once per block
        task = ray.remote(_run_block).options(scheduling_strategy="SPREAD", num_cpus=1, max_retries=0,
                                              name=f"llmrec:{step}")
        done = ray.get([task.remote(fn, block, self.num_threads, *refs) for block in blocks])
        self.placements.extend(Placement(step, i, node, len(block))
                               for i, ((node, _), block) in enumerate(zip(done, blocks, strict=True)))
        return [result for _, result in done]

    def encode(self, step: str, texts: list[str], model: str, device: str, precision: str,
               batch_size: int) -> np.ndarray:
        """Unit-norm embeddings of `texts`, in order: Ray Data over an actor pool of one encoder per node."""
        import ray
        from ray.data import DataContext

        # Dispatch only once every actor has loaded its model: the first one up would otherwise take every block.
        DataContext.get_current().wait_for_min_actors_s = ACTORS_READY_TIMEOUT_S
        # Small inputs would arrive as one block, and Ray Data bundles rows up to the batch size before it hands
        # them to an actor: cut both so that every node gets a share.
        per_task = max(1, min(batch_size, math.ceil(len(texts) / self.min_blocks)))
        rows = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)],
                                   override_num_blocks=math.ceil(len(texts) / per_task))
        gpu = device.startswith("cuda")
        encoded = rows.map_batches(
            _EncoderActor, fn_constructor_args=(model, "cuda" if gpu else "cpu", precision, batch_size, self.num_threads),
            compute=ray.data.ActorPoolStrategy(size=self.nodes, max_tasks_in_flight_per_actor=1), batch_size=per_task,
            batch_format="numpy", num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,  # Ray Data spreads by default
        )
        parts = list(encoded.iter_batches(batch_size=None, batch_format="numpy"))
        order = np.concatenate([p["row"] for p in parts])
        vectors = np.concatenate([p["embedding"] for p in parts]).astype(np.float32)[np.argsort(order, kind="stable")]
        nodes = np.concatenate([p["node"] for p in parts])
        for index, node in enumerate(sorted(set(nodes.tolist()))):
            self.placements.append(Placement(step, index, node, int((nodes == node).sum())))
        return vectors
