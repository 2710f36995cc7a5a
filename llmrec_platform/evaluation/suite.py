"""Evaluate a set of trained rankers on one split: slices, reference rankers, champion (no Dagster)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.compute import BlockMap
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import DEFAULT_KS, EvaluationResult, evaluate_slices
from llmrec_platform.evaluation.significance import PairedComparison, paired_bootstrap
from llmrec_platform.live.recommendations import TopKLists
from llmrec_platform.rankers.base import TrainedRanker, excluded_items
from llmrec_platform.rankers.simple import RandomRanker

CHAMPION_METRIC = "ndcg@10"
COMBINED_RANKERS = ("hybrid",)  # compared, per user, against every single ranker


@dataclass
class SuiteResult:
    metrics: pd.DataFrame  # ranker, slice, fold, metric, k, value
    results: list[EvaluationResult]
    champion: str
    valid_scores: dict[str, float] = field(default_factory=dict)
    comparisons: list[PairedComparison] = field(default_factory=list)
    recommendations: pd.DataFrame | None = None  # the champion's top-k per user, with `top_k`

    def per_user(self, ranker: str, fold: str = "test", slice_name: str = "all") -> pd.DataFrame:
        for result in self.results:
            if (result.ranker, result.fold, result.slice) == (ranker, fold, slice_name):
                return result.per_user
        raise KeyError(f"no {fold}/{slice_name} result for ranker {ranker!r}")


def slices(data: InteractionData) -> dict[str, np.ndarray | None]:
    """'all' when every item has training data; otherwise 'warm' and 'cold' candidate masks."""
    cold = data.cold_item_mask()
    if not cold.any():
        return {"all": None}
    return {"warm": ~cold, "cold": cold}


def evaluate_suite(
    trained: Mapping[str, TrainedRanker], data: InteractionData, seed: int, ks=DEFAULT_KS, folds=("test",),
    progress: bool | None = False, top_k: int | None = None, blocks: BlockMap | None = None,
    valid_scores: Mapping[str, float] | None = None,
) -> SuiteResult:
    """Every ranker on every fold and slice, the champion (best validation NDCG@10) and the combined rankers'
    paired comparisons. With `top_k`, also the champion's top-k for every user (`TopKLists`, excluding every
    interaction), from the test evaluation's own score batches.

    `trained` maps ranker names to their fits and is read one ranker at a time, each dropped before the next is
    read: a Mapping that loads on access keeps one ranker in memory (`assets.evaluation`). `valid_scores` (name ->
    validation NDCG@10), when given, spares reading every ranker once more to find the champion."""
    if not trained:
        raise ValueError("no rankers to evaluate")
    if valid_scores is None:
        valid_scores = {name: t.valid_metrics[CHAMPION_METRIC] for name, t in trained.items()}
    valid_scores = dict(valid_scores)
    champion = max(valid_scores, key=valid_scores.get)
    names = [*trained, "random"]
    exclude_all = excluded_items(data.train, data.valid, data.test) if top_k else None
    recommendations = None
    by_fold: dict[str, list[dict[str, EvaluationResult]]] = {fold: [] for fold in folds}
    for name in names:
        ranker = RandomRanker(seed=seed).fit(data) if name == "random" else trained[name].ranker
        lists = TopKLists(ranker, exclude_all, top_k) if top_k and name == champion else None
        for fold in folds:
            # Scored once for every slice; a ranker that cannot score cold items reports nothing there, not zero.
            ranker_slices = {slice_name: (None, candidates) for slice_name, candidates in slices(data).items()
                             if slice_name != "cold" or ranker.scores_cold_items}
            reuse = lists if fold == "test" else None
            by_fold[fold].append(evaluate_slices(ranker, data, ranker_slices, fold, ks, progress=progress,
                                                 on_scores=reuse, blocks=blocks))
        if lists is not None:
            recommendations = lists.frame()  # scores the users the test fold did not, while the champion is here
        del ranker, lists  # before the next ranker is read
    results = [by_slice[name] for fold in folds for name in slices(data) for by_slice in by_fold[fold]
               if name in by_slice]
    metrics = pd.concat([r.long() for r in results], ignore_index=True)
    suite = SuiteResult(metrics, results, champion, valid_scores, recommendations=recommendations)
    main_slice = next(iter(slices(data)))
    for combined in (r for r in COMBINED_RANKERS if r in names):
        for baseline in names:
            if baseline not in (combined, "random"):
                suite.comparisons.append(paired_bootstrap(
                    suite.per_user(combined, "test", main_slice), suite.per_user(baseline, "test", main_slice),
                    CHAMPION_METRIC, combined, baseline, seed=seed))
    return suite
