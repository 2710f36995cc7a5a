"""The hybrid ablation: slices by hand, a blank content ranker that removes the LLM columns, paired differences."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.ablation import (
    ABLATION_COLUMNS,
    ablate,
    ablation_markdown,
    ablation_slices,
    constant_content,
    hybrid_variants,
)
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import FeatureContext, HybridConfig, HybridRanker
from llmrec_platform.rankers.hybrid.model import TRAINING_SETS
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings


@pytest.fixture(scope="module")
def data() -> InteractionData:
    split = two_group_split()
    # Two sparse users: keep only 3 training rows of a00 and b00.
    sparse = split["user_id"].isin(["a00", "b00"]) & (split["fold"] == "train")
    drop = split[sparse].groupby("user_id").head(1).index
    return InteractionData.from_split(split.drop(index=drop))


def test_slices_by_hand(data):
    slices = ablation_slices(data)
    assert set(slices) == {"all", "sparse_users_le5", "long_tail_items"}  # no cold items here
    users, candidates = slices["sparse_users_le5"]
    assert candidates is None
    assert set(data.user_ids[users]) == set(data.user_ids)  # every user has 3-4 training items here (<= 5)
    _, tail = slices["long_tail_items"]
    popularity = np.asarray(data.train.getnnz(axis=0))
    # The head is the ceil(0.2 * 12) = 3 most popular items; the tail the other 9, all less popular or tied.
    assert tail.sum() == 9 and popularity[~tail].min() >= popularity[tail].max()


def test_cold_items_add_a_slice_and_restrict_the_main_ones():
    split = two_group_split()
    split = split.assign(fold=np.where(split["item_id"] == "i5", "test", split["fold"]))
    cold_data = InteractionData.from_split(split)
    slices = ablation_slices(cold_data)
    assert set(slices) == {"all", "sparse_users_le5", "long_tail_items", "cold"}
    i5 = list(cold_data.item_ids).index("i5")
    assert np.flatnonzero(slices["cold"][1]).tolist() == [i5] and slices["all"][1].sum() == 11
    assert not slices["long_tail_items"][1][i5] and not slices["all"][1][i5]


def test_constant_content_blanks_the_llm_columns(data):
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    blank = constant_content(content)
    assert np.ptp(blank.score(np.arange(data.n_users))) == 0.0  # every item scores the same for every user
    assert np.ptp(content.score(np.arange(data.n_users))) > 0.0  # and the original is untouched


def test_ablate_pairs_variants_with_the_reference(data):
    ease = EASERanker(reg_weight=5.0).fit(data)
    table = ablate({"with_llm": ease, "same": EASERanker(reg_weight=5.0).fit(data),
                    "popularity": PopularityRanker().fit(data)}, data, seed=3)
    assert list(table.columns) == ABLATION_COLUMNS
    assert set(table["slice"]) == {"all", "sparse_users_le5", "long_tail_items"}
    reference = table[table["variant"] == "with_llm"]
    assert reference["diff"].isna().all()
    same = table[table["variant"] == "same"]
    assert (same["diff"] == 0).all() and (same["ci_low"] == 0).all() and (same["p_value"] == 1.0).all()
    pop = table[(table["variant"] == "popularity") & (table["slice"] == "all")].iloc[0]
    ease_all = reference[reference["slice"] == "all"]["value"].iloc[0]
    assert pop["diff"] == pytest.approx(pop["value"] - ease_all)
    assert pop["ci_low"] <= pop["diff"] <= pop["ci_high"]
    assert "| all | popularity |" in ablation_markdown(table)
    with pytest.raises(ValueError, match="reference"):
        ablate({"popularity": PopularityRanker().fit(data)}, data)


def test_hybrid_without_llm_features_has_constant_llm_columns(data):
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=10, min_child_samples=2, num_leaves=4, n_models=1,
                          pseudo_label_share=0.25, seed=3, num_threads=1)
    candidates = {"ease": EASERanker(reg_weight=5.0).fit(data)}
    hybrid = HybridRanker(candidates, constant_content(content), {"genre_match": GenreMatchRanker(item_genres()).fit(data)},
                          config).fit(data)
    names = hybrid.feature_names
    llm = [i for i, n in enumerate(names) if n.startswith("llm_")]
    assert llm
    _, features = hybrid.context_.candidates_and_features(hybrid.context_.batch(np.arange(data.n_users)), 4)
    assert np.ptp(features[:, llm], axis=0).max() == 0.0
    assert pd.Series(hybrid.training_log_.importances)[[names[i] for i in llm]].sum() == 0.0


def test_variants_are_one_model_each_and_the_reference_is_the_hybrids_first(data):
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=10, min_child_samples=2, num_leaves=4, n_models=3,
                          pseudo_label_share=0.0, seed=3, num_threads=1)
    hybrid = HybridRanker({"ease": EASERanker(reg_weight=5.0).fit(data)}, content, {}, config).fit(data)
    variants = hybrid_variants(hybrid, data)
    assert set(variants) == {"with_llm", "without_llm"} and len(hybrid.extra_models_) == 2  # the hybrid keeps its 3
    assert variants["without_llm"].config.n_models == 1 and not variants["without_llm"].extra_models_
    users = np.arange(data.n_users)
    _, features = hybrid.context_.candidates_and_features(hybrid.context_.batch(users), 4)
    first = hybrid.model_.booster_.predict(features, num_iteration=hybrid.training_log_.best_iteration)
    reference = variants["with_llm"]
    np.testing.assert_allclose(reference.predict(features, hybrid.training_log_.best_iteration), first)
    assert not np.allclose(hybrid.predict(features, hybrid.training_log_.best_iteration), first)  # the mean differs


def test_variants_train_the_trees_the_reference_scores_with(data):
    """With early stopping the hybrid picks its number of trees; each variant trains exactly that many (no early
    stopping of its own), so the variants differ from `with_llm` in their columns only."""
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=60, min_child_samples=2, num_leaves=4, n_models=1,
                          early_stopping_rounds=3, holdout_users=0.5, pseudo_label_share=0.0, seed=3, num_threads=1)
    hybrid = HybridRanker({"ease": EASERanker(reg_weight=5.0).fit(data)}, content, {}, config).fit(data)
    best = hybrid.training_log_.best_iteration
    assert best < len(hybrid.training_log_.validation_curve) < 60  # it stopped early: the test means something
    variant = hybrid_variants(hybrid, data)["without_llm"]
    assert (variant.config.n_estimators, variant.config.early_stopping_rounds) == (best, 0)
    assert variant.model_.booster_.current_iteration() == variant.training_log_.best_iteration == best


class RecordingCache(FitCache):
    """A real fit cache that also records which entries were hits."""

    def __init__(self, folder):
        super().__init__(folder)
        self.calls: list[tuple[str, bool]] = []

    def get_or_fit(self, name, unfitted, data_fingerprint, fit):
        result, hit = super().get_or_fit(name, unfitted, data_fingerprint, fit)
        self.calls.append((name, hit))
        return result, hit

    def get_or_compute(self, name, key, compute):
        result, hit = super().get_or_compute(name, key, compute)
        if name == TRAINING_SETS:
            self.calls.append((name, hit))
        return result, hit


def test_variants_reuse_the_hybrids_matrices_and_equal_a_fit_from_scratch(data, tmp_path):
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    other_content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=7)).fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=10, min_child_samples=2, num_leaves=4, n_models=2,
                          pseudo_label_share=0.3, pseudo_draws=2, seed=3, num_threads=2)  # variants side by side
    rankers = {"ease": EASERanker(reg_weight=5.0).fit(data), "popularity": PopularityRanker().fit(data)}
    cache = RecordingCache(tmp_path)
    hybrid = HybridRanker(rankers, content, {}, config, refit_cache=cache).fit(data)
    refits = {name for name, _ in cache.calls} - {TRAINING_SETS}
    assert refits == {"hybrid_pseudo_ease", "hybrid_pseudo_popularity", "hybrid_pseudo_sequence"}
    assert not any(hit for _, hit in cache.calls)
    cache.calls.clear()
    # In the hybrid's process: its matrices are reused, nothing is refitted or even loaded from the cache.
    in_process = hybrid_variants(hybrid, data, other_content, refit_cache=cache)
    assert not cache.calls
    # In another process (the ablation asset gets the pickled hybrid): the matrices come from the refit cache.
    stored = hybrid_variants(pickle.loads(pickle.dumps(hybrid)), data, other_content, refit_cache=cache)
    assert cache.calls == [(TRAINING_SETS, True)]
    # Without any cache: the matrices are built again, refits and all.
    rebuilt = hybrid_variants(pickle.loads(pickle.dumps(hybrid)), data, other_content)
    # The old way, every part computed from scratch by a hybrid with the variant's content.
    scratch = {"without_llm": constant_content(content), "tfidf": other_content}
    users = np.arange(data.n_users)
    for name, variant_content in scratch.items():
        fresh = HybridRanker(rankers, variant_content, {}, dataclasses.replace(config, n_models=1)).fit(data)
        for variants in (in_process, stored, rebuilt):
            np.testing.assert_array_equal(variants[name].score(users), fresh.score(users))
            assert variants[name].training_log_.validation_curve == fresh.training_log_.validation_curve
    assert pickle.loads(pickle.dumps(hybrid)).refit_cache is None  # the cache is not part of the model


def test_variants_share_one_feature_pass_and_score_as_alone(data, monkeypatch):
    content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1)).fit(data)
    other_content = LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=7)).fit(data)
    config = HybridConfig(n_candidates=4, n_estimators=10, min_child_samples=2, num_leaves=4, n_models=1,
                          pseudo_label_share=0.0, seed=3, num_threads=1, batch_size=5)
    hybrid = HybridRanker({"ease": EASERanker(reg_weight=5.0).fit(data)}, content, {}, config).fit(data)
    variants = hybrid_variants(hybrid, data, other_content)
    users = np.arange(data.n_users)
    alone = {}
    for name, variant in hybrid_variants(hybrid, data, other_content).items():
        variant.feature_memo_ = None  # scored alone: retrieves and featurises every batch itself
        alone[name] = variant.score(users)
    calls = []
    retrieve = FeatureContext.candidates_and_features
    monkeypatch.setattr(FeatureContext, "candidates_and_features", lambda *args: calls.append(1) or retrieve(*args))
    shared = {name: variant.score(users) for name, variant in variants.items()}
    assert len(calls) == -(-data.n_users // 5)  # one pass per batch of 5 users, whatever the number of variants
    for name, scores in shared.items():
        np.testing.assert_array_equal(scores, alone[name])
    assert not np.array_equal(shared["with_llm"], shared["tfidf"])
