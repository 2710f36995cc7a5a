"""The hybrid on fine-tuned encoder features: only its LLM columns change, and the paired frozen-vs-fine-tuned
comparison (assets/finetune.py) is the per-user difference, with the hybrids left out of the cold slice."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec_platform.assets.finetune import FINETUNED_PAIRS, paired_by_slice, with_content
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.suite import evaluate_suite
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.fit_cache import fit_key
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings


@pytest.fixture(scope="module")
def fitted():
    split = two_group_split()
    # Item i5 only in test: a cold item, so the suite has a cold slice the hybrids must stay out of.
    data = InteractionData.from_split(split.assign(fold=np.where(split["item_id"] == "i5", "test", split["fold"])))
    items = list(data.item_ids)
    frozen = LLMContentRanker(unit_embeddings(items, "item_id", seed=1)).fit(data)
    # Another seed's noise stands in for the fine-tuned encoder's vectors.
    tuned = LLMContentRanker(unit_embeddings(items, "item_id", seed=7), name="llm_content_finetuned").fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=10, min_child_samples=2, num_leaves=4, n_models=1,
                          pseudo_label_share=0.25, seed=3, num_threads=1)
    hybrid = HybridRanker({"ease": EASERanker(reg_weight=5.0).fit(data)}, frozen,
                          {"genre_match": GenreMatchRanker(item_genres()).fit(data)}, config)
    hybrid_key = fit_key(hybrid, "fp")
    hybrid.fit(data)
    finetuned = with_content(hybrid, tuned, "hybrid_finetuned")
    finetuned_key = fit_key(finetuned, "fp")  # hashed unfitted, as train_ranker does
    finetuned.fit(data)
    return data, {"llm_content": frozen, "llm_content_finetuned": tuned, "hybrid": hybrid,
                  "hybrid_finetuned": finetuned}, (hybrid_key, finetuned_key)


def test_only_the_llm_columns_come_from_the_finetuned_content(fitted):
    data, rankers, (hybrid_key, finetuned_key) = fitted
    hybrid, finetuned = rankers["hybrid"], rankers["hybrid_finetuned"]
    assert finetuned.name == "hybrid_finetuned" and hybrid.name == "hybrid"
    assert finetuned.config == hybrid.config and finetuned.candidate_rankers is hybrid.candidate_rankers
    assert finetuned.content is rankers["llm_content_finetuned"]
    assert finetuned_key != hybrid_key  # the fit cache keeps the two apart
    users = np.arange(data.n_users)
    names = hybrid.feature_names
    assert finetuned.feature_names == names
    llm = np.array([n.startswith("llm_") for n in names])
    assert llm.sum() == 4
    n = hybrid.config.n_candidates
    frozen_candidates, frozen_features = hybrid.context_.candidates_and_features(hybrid.context_.batch(users), n)
    tuned_candidates, tuned_features = finetuned.context_.candidates_and_features(finetuned.context_.batch(users), n)
    np.testing.assert_array_equal(tuned_candidates.items, frozen_candidates.items)
    np.testing.assert_array_equal(tuned_features[:, ~llm], frozen_features[:, ~llm])
    assert not np.allclose(tuned_features[:, llm], frozen_features[:, llm])


def test_paired_comparison_is_the_per_user_difference_and_skips_the_hybrids_cold_slice(fitted):
    data, rankers, _ = fitted
    trained = {name: TrainedRanker(r, f"run-{name}", "fp", {"ndcg@10": 0.5}, 0.0) for name, r in rankers.items()}
    suite = evaluate_suite(trained, data, seed=5)
    paired = paired_by_slice(suite, FINETUNED_PAIRS, seed=5)
    assert [(s, c.ranker, c.baseline) for s, c in paired] == [
        ("cold", "llm_content_finetuned", "llm_content"),
        ("warm", "llm_content_finetuned", "llm_content"), ("warm", "hybrid_finetuned", "hybrid")]
    # Every ranker is perfect on this toy data; against the random floor the differences are not zero.
    against_random = paired_by_slice(suite, (("hybrid_finetuned", "random"),), seed=5)
    assert [s for s, _ in against_random] == ["warm"] and against_random[0][1].mean_difference > 0.3
    for slice_name, c in paired + against_random:
        a = suite.per_user(c.ranker, "test", slice_name).set_index("user_id")["ndcg@10"]
        b = suite.per_user(c.baseline, "test", slice_name).set_index("user_id")["ndcg@10"]
        assert c.users == len(a.index.intersection(b.index))
        assert c.mean_difference == pytest.approx((a - b).dropna().mean())
        assert c.ci_low <= c.mean_difference <= c.ci_high and 0.0 <= c.wilcoxon_p <= 1.0
