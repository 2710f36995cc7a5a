"""The process's memory, as a step reports it (no Dagster).

`ru_maxrss` is the process-wide high-water mark and never falls, so a step in a shared process (Dagster's
in-process executor, `llmrec demo`) can report two honest numbers: the process peak after it, and how far it
raised that peak (0 when it stayed below what an earlier step reached: a lower bound of its own use).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field

GIB = 1024**3


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class PeakMark:
    """The process peak when a step began; `metadata()` when it ends."""

    start: int = field(default_factory=peak_rss_bytes)

    def raised_by(self) -> int:
        return max(peak_rss_bytes() - self.start, 0)

    def metadata(self) -> dict[str, float]:
        return {"process_peak_rss_gib": round(peak_rss_bytes() / GIB, 3),
                "step_raised_peak_by_gib": round(self.raised_by() / GIB, 3)}
