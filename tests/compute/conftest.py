"""One local Ray cluster for the session, on loopback only: a head with no CPUs and two worker nodes of 2 CPUs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """`compute.cluster.start_local_cluster()`; the driver joins it through LLMREC_RAY_ADDRESS (= `cluster.address`)."""
    from llmrec_platform.compute.cluster import LOOPBACK_ENV, start_local_cluster  # imports no Ray

    with pytest.MonkeyPatch.context() as mp:
        # Ray reads it once, on import; start_local_cluster also sets the constant, for when that was too late.
        for name, value in LOOPBACK_ENV.items():
            mp.setenv(name, value)
        pytest.importorskip("ray")
        from ray._private import ray_constants

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # restored after the session
        cluster = start_local_cluster()
        try:
            yield cluster
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
