"""One fixed BLAS thread count per pipeline process, so the same inputs give the same metrics on any machine.

OpenBLAS chooses its kernels, and so its summation order, by thread count: factor-model and Mult-VAE scores
differed in their last bits between a 1-core and a 2-core machine, and the hybrid's LightGBM then binned a few
rows differently (ML-1M NDCG@10 0.3003 against 0.3004). The torch parts (the encoder, Mult-VAE and Adam-BPR
training) and LightGBM fix their own thread counts."""

from __future__ import annotations


def pin_blas_threads(n: int) -> None:
    """Limit every loaded OpenBLAS build to `n` threads for the rest of the process."""
    import numpy  # noqa: F401 - numpy and scipy each load their own OpenBLAS; the limit reaches loaded ones only
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(n, user_api="blas")
