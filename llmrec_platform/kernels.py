"""One set of float kernels on every x86-64 CPU, so the same inputs give the same numbers on any machine.

OpenBLAS, MKL (torch's matrix products), oneDNN and torch's own vectorised code choose their kernels by the CPU
they find, and kernels differ in their last bits. Measured on this Xeon (AVX-512), small synthetic data
(`tests/test_cpu_kernels.py`): forcing another core type moved ALS, Adam-BPR, Mult-VAE and content scores by
1e-8 to 1e-7; on ML-1M such differences let the hybrid's LightGBM bin a few rows differently (test NDCG@10 0.3005
on an AMD EPYC against 0.3011 here). Pinning every library to its AVX2 kernels (which every x86-64 CPU since
2013-2015 runs, Intel and AMD alike; MKL documents `MKL_CBWR=AVX2` as reproducible across them) removes the CPU
from the numbers. `LLMREC_CPU_KERNELS=native` lets each library pick the fastest kernels instead.

numpy dispatches its own SIMD loops too: on an AVX-512 CPU its log1p (the hybrid's item_popularity and
user_activity) differed from an AVX2 CPU's in the last bit (measured with NPY_DISABLE_CPU_FEATURES standing in
for the AVX2 CPU), and its argpartition picks other members of a tie. The pin turns numpy's targets above AVX2 off.

The pins are environment variables the libraries read once, when they load, so the package applies them on
import, before anything imports numpy or torch; this is the one reader of the environment outside
`settings.py`, for that reason. A script that imports numpy (or pandas, torch) first runs the CPU's own kernels:
its numbers differ from the pipeline's, so the package warns (`LateImportWarning`).
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from collections.abc import MutableMapping

CPU_KERNELS_ENV = "LLMREC_CPU_KERNELS"
CPU_KERNEL_CHOICES = ("avx2", "native")
AVX2_PINS = {
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS
    "MKL_CBWR": "AVX2",  # torch's MKL matrix products (conditional numerical reproducibility)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN kernels
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "FAISS_OPT_LEVEL": "AVX2",  # faiss's SIMD build (the ANN index of retrieval.py)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy >= 2.4's targets above AVX2 (X86_V3)
}
# The libraries that read a pin when they load.
PINNED_LIBRARIES = ("numpy", "torch", "faiss")


class LateImportWarning(RuntimeWarning):
    """A pinned library was loaded before the package set its pins: this process runs the CPU's own kernels."""


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
    # A library that loaded before the pins were in the environment (inherited ones were there at its load) has
    # chosen its kernels already.
    late = [name for name in PINNED_LIBRARIES if name in sys.modules]
    if late and environ is os.environ and any(environ.get(k) != v for k, v in AVX2_PINS.items()):
        warnings.warn(f"{', '.join(late)} loaded before llmrec_platform: the CPU-kernel pins ({CPU_KERNELS_ENV}, "
                      "kernels.py) do not reach it, so this process's numbers may differ from the pipeline's in the "
                      "last bits; import llmrec_platform first", LateImportWarning, stacklevel=2)
    environ.update(AVX2_PINS)
    return dict(AVX2_PINS)
