"""Rankers behind one contract (`Ranker`, scoring a `Query` of `Interaction`s); see base.py."""

from llmrec_platform.rankers.base import (
    Histories,
    Interaction,
    NotFittedError,
    Query,
    Ranker,
    TrainedRanker,
    UnknownUserError,
    excluded_items,
)

__all__ = ["Histories", "Interaction", "NotFittedError", "Query", "Ranker", "TrainedRanker", "UnknownUserError",
           "excluded_items"]
