"""Evaluate a set of trained rankers on one split: slices, reference rankers, champion (no Dagster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import DEFAULT_KS, EvaluationResult, evaluate_slices
from llmrec_platform.evaluation.significance import PairedComparison, paired_bootstrap
from llmrec_platform.rankers.base import TrainedRanker
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
    progress: bool | None = False,
) -> SuiteResult:
    if not trained:
        raise ValueError("no rankers to evaluate")
    rankers = {name: t.ranker for name, t in trained.items()}
    rankers["random"] = RandomRanker(seed=seed).fit(data)
    results = []
    for fold in folds:
        # Each ranker scores its users once for every slice; one that cannot score cold items reports nothing
        # for that slice, not zero.
        by_ranker = [evaluate_slices(ranker, data, {name: (None, candidates) for name, candidates in slices(data).items()
                                                    if name != "cold" or ranker.scores_cold_items},
                                     fold, ks, progress=progress) for ranker in rankers.values()]
        results.extend(by_slice[name] for name in slices(data) for by_slice in by_ranker if name in by_slice)
    metrics = pd.concat([r.long() for r in results], ignore_index=True)
    valid_scores = {t.ranker.name: t.valid_metrics[CHAMPION_METRIC] for t in trained.values()}
    champion = max(valid_scores, key=valid_scores.get)
    suite = SuiteResult(metrics, results, champion, valid_scores)
    main_slice = next(iter(slices(data)))
    for combined in (r for r in COMBINED_RANKERS if r in rankers):
        for baseline in rankers:
            if baseline not in (combined, "random"):
                suite.comparisons.append(paired_bootstrap(
                    suite.per_user(combined, "test", main_slice), suite.per_user(baseline, "test", main_slice),
                    CHAMPION_METRIC, combined, baseline, seed=seed))
    return suite
