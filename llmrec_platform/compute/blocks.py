"""Map a function over blocks of rows (users, texts) in this process; `cluster.RayBlocks` does the same on Ray.

Domain code takes a `BlockMap` and never knows where a block ran: the same function scores a block of users
in-process and on a worker node, so both give the same numbers. Each block's node is recorded (`placements`),
so a run can show where its rows went.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

LOCAL_NODE = "local"


@dataclass(frozen=True)
class Placement:
    """Where one block of a step ran: `node` is the Ray node id (`local` in-process)."""

    step: str
    block: int
    node: str
    rows: int


DEFAULT_BLOCK_USERS = 1024  # users scored together: one matrix product per block


class BlockMap(Protocol):
    """`map(step, fn, blocks, *shared)` returns `[fn(block, *shared) for block in blocks]`, in block order.

    `block_users` is how many users a scoring block holds, in-process and on a cluster alike: a BLAS product's
    last bits can depend on how many rows it multiplies, and tied scores then order differently, so the same
    blocks everywhere is what makes the two paths give the same lists."""

    name: str
    block_users: int
    min_blocks: int  # how many blocks to cut a small input into at least, so every node gets some
    placements: list[Placement]

    def map(self, step: str, fn: Callable[..., Any], blocks: Sequence[Any], *shared: Any,
            progress: bool = False) -> list[Any]: ...


def cut(rows: np.ndarray, block_size: int, min_blocks: int = 1) -> list[np.ndarray]:
    """`rows` in consecutive blocks of at most `block_size`, and at least `min_blocks` of them when there are
    enough rows (small inputs would otherwise arrive as one block and run on one node)."""
    if len(rows) == 0:
        return []
    if math.ceil(len(rows) / block_size) < min_blocks:
        return np.array_split(rows, min(min_blocks, len(rows)))
    return [rows[start:start + block_size] for start in range(0, len(rows), block_size)]


def rows_by_node(placements: Sequence[Placement], step: str | None = None) -> dict[str, int]:
    """Rows each node handled (of one `step`, or of all), for an asset's metadata."""
    counts: Counter[str] = Counter()
    for p in placements:
        if step is None or p.step == step:
            counts[p.node] += p.rows
    return dict(sorted(counts.items()))


@dataclass
class InProcess:
    """Every block in this process, one after the other (LLMREC_RAY_ADDRESS unset)."""

    name: str = "in-process"
    block_users: int = DEFAULT_BLOCK_USERS
    min_blocks: int = 1
    placements: list[Placement] = field(default_factory=list)

    def map(self, step: str, fn: Callable[..., Any], blocks: Sequence[Any], *shared: Any,
            progress: bool = False) -> list[Any]:
        results = []
        for index, block in enumerate(tqdm(blocks, desc=step, disable=not progress)):
            results.append(fn(block, *shared))
            self.placements.append(Placement(step, index, LOCAL_NODE, len(block)))
        return results
