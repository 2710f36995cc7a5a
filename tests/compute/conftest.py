"""One local Ray cluster for the session, on loopback only: a head with no CPUs and two worker nodes of 2 CPUs."""

from __future__ import annotations

import pytest

OBJECT_STORE_BYTES = 100 * 1024 ** 2  # Ray's floor is 75 MiB; the test inputs are a few MiB


@pytest.fixture(scope="session")
def ray_cluster():
    """`ray.cluster_utils.Cluster`; the driver joins it through LLMREC_RAY_ADDRESS (= `cluster.address`)."""
    with pytest.MonkeyPatch.context() as mp:
        # Without it the driver swaps 127.0.0.1 for the host's address (and waits for a node there), and Ray
        # traffic leaves loopback. Ray reads it once, on import: set it before, and on the constant if too late.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray_cluster_utils = pytest.importorskip("ray.cluster_utils")
        from ray._private import ray_constants

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False})
        workers = [cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES)
                   for _ in range(2)]
        cluster.wait_for_nodes()
        cluster.worker_node_ids = {node.node_id for node in workers}
        try:
            yield cluster
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
