"""Where the heavy steps run: in-process, or on the Ray cluster named by LLMREC_RAY_ADDRESS (Dagster side only).

dagster-ray's `LocalRay` cannot join a given address (its `ray_address` is always None: ray.init starts a private
cluster), so this resource takes the address itself; on Kubernetes, a KubeRay cluster's head service address
(`ray://<head>:10001`) goes here.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from llmrec_platform.compute import BlockMap, InProcess
from llmrec_platform.compute.blocks import DEFAULT_BLOCK_USERS
from llmrec_platform.settings import DEFAULT_NUM_THREADS


class ComputeResource(dg.ConfigurableResource):
    """The block map of the heavy assets (encoding, all-user scoring): in-process, or Ray at `ray_address`."""

    ray_address: str = Field(default="", description="auto, host:port or ray://host:port; empty: in-process "
                                                     "(LLMREC_RAY_ADDRESS)")
    num_threads: int = Field(default=DEFAULT_NUM_THREADS, description="BLAS threads of each worker (LLMREC_NUM_THREADS)")
    cpu_kernels: str = Field(default="avx2", description="CPU kernels of each worker (LLMREC_CPU_KERNELS)")
    block_users: int = Field(default=DEFAULT_BLOCK_USERS, ge=1,
                             description="users per scoring block, in-process and on Ray alike (LLMREC_BLOCK_USERS)")

    def blocks(self) -> BlockMap:
        """A fresh block map (its placements are this step's); joins the cluster, or fails in one line naming the
        address, before any work."""
        if not self.ray_address:
            return InProcess(block_users=self.block_users)
        from llmrec_platform.compute.cluster import connect

        return connect(self.ray_address, self.num_threads, self.cpu_kernels, self.block_users)
