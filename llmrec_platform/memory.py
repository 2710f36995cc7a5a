"""The process's memory, as a step reports it (no Dagster).

`ru_maxrss` is the process-wide high-water mark and never falls, so a step in a shared process (Dagster's
in-process executor, `llmrec demo`) can report two honest numbers: the process peak after it, and how far it
raised that peak (0 when it stayed below what an earlier step reached: a lower bound of its own use). The resident
set size *now* (`current_rss_bytes`) says what the process still holds after the step: when it does not fall back
between steps, something keeps the step's data alive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from dataclasses import dataclass, field

GIB = 1024**3


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """The process's resident set size now (it falls when memory is returned to the system): Linux's
    /proc/self/statm, else psutil."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except FileNotFoundError:
        import psutil  # not Linux

        return int(psutil.Process().memory_info().rss)


def return_freed_memory() -> None:
    """Give back to the system what the process has freed but its allocators still hold: unreachable Python cycles,
    Arrow's memory pool (jemalloc/mimalloc keep freed pages) and glibc's malloc heaps (`malloc_trim`). Called between
    the steps of an in-process run (`orchestration.in_process`), so that a step's freed data does not stay resident
    under the next one."""
    gc.collect()
    if "pyarrow" in sys.modules:  # only if something loaded it
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        ctypes.CDLL(libc).malloc_trim(0)


@dataclass
class PeakMark:
    """The process peak when a step began; `metadata()` when it ends."""

    start: int = field(default_factory=peak_rss_bytes)

    def raised_by(self) -> int:
        return max(peak_rss_bytes() - self.start, 0)

    def metadata(self) -> dict[str, float]:
        return {"process_peak_rss_gib": round(peak_rss_bytes() / GIB, 3),
                "step_raised_peak_by_gib": round(self.raised_by() / GIB, 3),
                "process_rss_now_gib": round(current_rss_bytes() / GIB, 3)}
