"""Short-term interest: the names the live loop had before its channels (`llmrec_platform.live.channels`).

`ShortTermBlend` is `LiveRanking`: the same four first fields (weight, recent, decay, llm_share), so settings,
benchmarks and callers that build one keep working.
"""

from __future__ import annotations

from llmrec_platform.live.channels import LiveRanking, latest_positions, standardize

ShortTermBlend = LiveRanking

__all__ = ["LiveRanking", "ShortTermBlend", "latest_positions", "standardize"]
