"""One set of float kernels on every x86-64 CPU, so the same inputs give the same numbers on any machine.

OpenBLAS, MKL (torch's matrix products), oneDNN and torch's own vectorised code choose their kernels by the CPU
they find, and kernels differ in their last bits. Measured on this Xeon (AVX-512), small synthetic data
(`tests/test_cpu_kernels.py`): forcing another core type moved ALS, Adam-BPR, Mult-VAE and content scores by
1e-8 to 1e-7; on ML-1M such differences let the hybrid's LightGBM bin a few rows differently (test NDCG@10 0.3005
on an AMD EPYC against 0.3011 here). Pinning every library to its AVX2 kernels (which every x86-64 CPU since
2013-2015 runs, Intel and AMD alike; MKL documents `MKL_CBWR=AVX2` as reproducible across them) removes the CPU
from the numbers. `LLMREC_CPU_KERNELS=native` lets each library pick the fastest kernels instead.

The pins are environment variables the libraries read once, when they load, so the package applies them on
import, before anything imports numpy or torch; this is the one reader of the environment outside
`settings.py`, for that reason.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

CPU_KERNELS_ENV = "LLMREC_CPU_KERNELS"
CPU_KERNEL_CHOICES = ("avx2", "native")
AVX2_PINS = {
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS
    "MKL_CBWR": "AVX2",  # torch's MKL matrix products (conditional numerical reproducibility)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN kernels
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "FAISS_OPT_LEVEL": "AVX2",  # faiss's SIMD build (the ANN index of retrieval.py)
}


def cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return False


def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the AVX2 pins in `environ` (they override what is there) and return them; nothing on a CPU without
    AVX2, off x86-64, or with LLMREC_CPU_KERNELS=native."""
    choice = environ.get(CPU_KERNELS_ENV, "").strip().lower() or "avx2"
    if choice == "native" or platform.machine().lower() not in ("x86_64", "amd64") or not cpu_has_avx2():
        return {}
    environ.update(AVX2_PINS)
    return dict(AVX2_PINS)
