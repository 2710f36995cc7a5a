"""Evaluate a set of trained rankers on one split: slices, reference rankers, champion (no Dagster)."""

from __future__ import annotations

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
    trained: dict[str, TrainedRanker], data: InteractionData, seed: int, ks=DEFAULT_KS, folds=("test",),
    progress: bool | None = False, top_k: int | None = None, blocks: BlockMap | None = None,
) -> SuiteResult:
    """Every ranker on every fold and slice, the champion (best validation NDCG@10) and the combined rankers'
    paired comparisons. With `top_k`, also the champion's top-k for every user (`TopKLists`, excluding every
    interaction), from the test evaluation's own score batches."""
    if not trained:
        raise ValueError("no rankers to evaluate")
    rankers = {name: t.ranker for name, t in trained.items()}
    rankers["random"] = RandomRanker(seed=seed).fit(data)
    valid_scores = {t.ranker.name: t.valid_metrics[CHAMPION_METRIC] for t in trained.values()}
    champion = max(valid_scores, key=valid_scores.get)
    lists = (TopKLists(next(t.ranker for t in trained.values() if t.ranker.name == champion),
                       excluded_items(data.train, data.valid, data.test), top_k) if top_k else None)
    results = []
    for fold in folds:
        by_ranker = []
        for ranker in rankers.values():
            # Scored once for every slice; a ranker that cannot score cold items reports nothing there, not zero.
            ranker_slices = {slice_name: (None, candidates) for slice_name, candidates in slices(data).items()
                             if slice_name != "cold" or ranker.scores_cold_items}
            reuse = lists if lists is not None and fold == "test" and ranker.name == champion else None
            by_ranker.append(evaluate_slices(ranker, data, ranker_slices, fold, ks, progress=progress, on_scores=reuse,
                                             blocks=blocks))
        results.extend(by_slice[name] for name in slices(data) for by_slice in by_ranker if name in by_slice)
    metrics = pd.concat([r.long() for r in results], ignore_index=True)
    suite = SuiteResult(metrics, results, champion, valid_scores,
                        recommendations=lists.frame() if lists is not None else None)
    main_slice = next(iter(slices(data)))
    for combined in (r for r in COMBINED_RANKERS if r in rankers):
        for baseline in rankers:
            if baseline not in (combined, "random"):
                suite.comparisons.append(paired_bootstrap(
                    suite.per_user(combined, "test", main_slice), suite.per_user(baseline, "test", main_slice),
                    CHAMPION_METRIC, combined, baseline, seed=seed))
    return suite
