"""Where the heavy steps run: `InProcess`, or a Ray cluster (`connect(LLMREC_RAY_ADDRESS)`). Domain code takes a
`BlockMap` and never imports Ray; `cluster` imports it only when a cluster is used."""

from llmrec_platform.compute.blocks import LOCAL_NODE, BlockMap, InProcess, Placement, cut, rows_by_node

__all__ = ["LOCAL_NODE", "BlockMap", "InProcess", "Placement", "cut", "rows_by_node"]
