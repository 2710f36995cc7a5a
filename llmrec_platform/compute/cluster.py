"""The heavy steps on a Ray cluster (LLMREC_RAY_ADDRESS): the only module that imports Ray, and only when called.

- `map` runs one Ray task per block with scheduling_strategy="SPREAD" (small tasks would otherwise pack onto one
  node); the driver does the reduce. A failed or killed task fails the step (no retry: Dagster's retry policy is the
  place for that, and a silent rescore would hide a dying node), and the step's other tasks are cancelled.
- `encode` is Ray Data `map_batches` over an actor pool of one encoder per worker node (`ActorPoolStrategy`), held
  one per node by a STRICT_SPREAD placement group, each actor asking for one GPU when the device is CUDA and one CPU
  otherwise, so a 2-CPU node keeps a CPU for Ray Data's own tasks (a pool that takes every CPU deadlocks them). The
  driver plans the batches the in-process encoder would make and ships whole batches, so the vectors are the
  in-process ones bit for bit, and every actor gets at least one batch when there are as many batches as nodes.

Every worker process gets the driver's CPU kernel pins (`kernels.py`) through the job's runtime environment, and
pins its BLAS threads like a pipeline process, so a block gives the same numbers on a worker as in-process.
"""

from __future__ import annotations

import logging
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


# A driver that joins a cluster on 127.0.0.1 needs this in its environment before it imports Ray; otherwise Ray
# swaps 127.0.0.1 for the host's address (and waits for a node there), and Ray traffic leaves loopback.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 ** 2  # Ray's floor is 75 MiB; blocks of users and texts are a few MiB


def start_local_cluster(workers: int = 2, cpus_per_worker: int = 2, object_store_bytes: int = LOCAL_OBJECT_STORE_BYTES):
    """A `ray.cluster_utils.Cluster` on loopback only: a head with no CPUs (nothing runs on the driver's node) and
    `workers` nodes of `cpus_per_worker` logical CPUs. `.address` is what LLMREC_RAY_ADDRESS takes,
    `.worker_node_ids` the workers' node ids; `.shutdown()` stops it. For tests and benchmarks on one machine: this
    process must have LOOPBACK_ENV set before it imported Ray (so must every driver that joins)."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # what LOOPBACK_ENV sets, had Ray been imported before it
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": object_store_bytes,
        "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=cpus_per_worker, node_ip_address="127.0.0.1",
                              object_store_memory=object_store_bytes) for _ in range(workers)]
    cluster.wait_for_nodes()
    cluster.worker_node_ids = {node.node_id for node in nodes}
    return cluster


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
        """`batch` holds whole planned batches (one row each): each is encoded on its own, as in-process."""
        positions, vectors = [], []
        for rows, texts in zip(batch["positions"], batch["texts"], strict=True):
            positions.append(np.asarray(rows, dtype=np.int64))
            vectors.append(self.encoder.encode([str(t) for t in texts], progress=False)[0])
        return {"position": np.concatenate(positions), "embedding": np.concatenate(vectors),
                "node": np.full(sum(len(p) for p in positions), self.node)}


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
        return 2 * self.nodes  # every node gets a block of a small input, and a slow block does not hold the others back

    def map(self, step: str, fn: Callable[..., Any], blocks: Sequence[Any], *shared: Any,
            progress: bool = False) -> list[Any]:
        import ray

        refs = [ray.put(value) for value in shared]  # shipped once, not once per block
        task = ray.remote(_run_block).options(scheduling_strategy="SPREAD", num_cpus=1, max_retries=0,
                                              name=f"llmrec:{step}")
        running = [task.remote(fn, block, self.num_threads, *refs) for block in blocks]
        try:
            done = ray.get(running)
        except BaseException:
            # A failed step leaves nothing behind: its other blocks would hold the nodes' CPUs until they finished.
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        self.placements.extend(Placement(step, i, node, len(block))
                               for i, ((node, _), block) in enumerate(zip(done, blocks, strict=True)))
        return [result for _, result in done]

    def encode(self, step: str, texts: list[str], model: str, device: str, precision: str,
               batch_size: int) -> np.ndarray:
        """Unit-norm embeddings of `texts`, in order, bit for bit those of `TextEncoder.encode` in-process: the
        driver plans the batches the in-process encoder would make, and Ray Data hands whole batches to a pool of
        one encoder actor per node, each actor on its own node."""
        import ray
        from ray.data import DataContext
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from llmrec_platform.encoders.models import TextEncoder

        planner = TextEncoder(model, device="cpu", batch_size=batch_size)  # for its plan only
        plan = planner.batches(texts)
        if not plan:
            return np.zeros((0, planner.dim), dtype=np.float32)
        gpu = device.startswith("cuda")
        hosts = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) >= 1) if gpu else self.nodes
        if hosts == 0:
            raise RuntimeError(f"{step}: the device is {device}, but no node of the cluster has a GPU")
        actors = min(hosts, len(plan))
        # STRICT_SPREAD: one bundle per node, so no two actors share a node (SPREAD alone is best effort, and
        # once put both actors on one node). Each actor fills its bundle: a GPU, or one of the node's CPUs, the
        # other left to Ray Data's own tasks (a pool that takes every CPU deadlocks them).
        group = placement_group([{"GPU": 1} if gpu else {"CPU": 1}] * actors, strategy="STRICT_SPREAD")
        try:
            ray.get(group.ready(), timeout=ACTORS_READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
            raise RuntimeError(f"{step}: the cluster has no {actors} nodes with a free {'GPU' if gpu else 'CPU'} "
                               f"each for the encoder actors") from None
        try:
            # Dispatch only once every actor has loaded its model: the first one up would otherwise take every batch.
            DataContext.get_current().wait_for_min_actors_s = ACTORS_READY_TIMEOUT_S
            rows = ray.data.from_items([{"positions": batch.tolist(), "texts": [texts[i] for i in batch]}
                                        for batch in plan], override_num_blocks=len(plan))  # a block per batch
            encoded = rows.map_batches(
                _EncoderActor,
                fn_constructor_args=(model, "cuda" if gpu else "cpu", precision, batch_size, self.num_threads),
                # One batch in flight per actor: an idle actor takes the next batch, so every actor gets one.
                compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                batch_size=1, batch_format="numpy", num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group),
                max_restarts=0, max_task_retries=0,  # a dead actor fails the step, as a dead task does (`map`)
            )
            parts = list(encoded.iter_batches(batch_size=None, batch_format="numpy"))
        finally:
            remove_placement_group(group)
        positions = np.concatenate([p["position"] for p in parts])
        vectors = np.empty((len(texts), parts[0]["embedding"].shape[1]), dtype=np.float32)
        vectors[positions] = np.concatenate([p["embedding"] for p in parts])
        if not np.array_equal(np.sort(positions), np.arange(len(texts))):
            raise RuntimeError(f"{step}: the encoder actors returned {len(positions)} rows for {len(texts)} texts")
        nodes = np.concatenate([p["node"] for p in parts])
        for index, node in enumerate(sorted(set(nodes.tolist()))):
            self.placements.append(Placement(step, index, node, int((nodes == node).sum())))
        return vectors
