"""The TF-IDF content baseline and the text-to-EASE map pass the ranker contract, score cold items from text, and
match hand-computed / reference values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import Ridge

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.suite import slices
from llmrec_platform.rankers.base import Interaction, Query
from llmrec_platform.rankers.collab_map import CollabMapRanker, pseudo_cold_split, ridge_operator
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.tfidf import TfidfContentRanker
from llmrec_platform.testing import GROUPS, RankerContract, group_of, two_group_split, unit_embeddings

WORDS = {"a": "funny comedy laughs friends wedding", "b": "scary horror thriller killer night"}


def item_texts(items: list[str]) -> pd.DataFrame:
    """Group A texts share comedy words, group B horror words; each item adds a title word of its own."""
    return pd.DataFrame({"id": items, "text": [f"Title{i} ({1990 + n}). {WORDS[group_of(i)]}" for n, i in enumerate(items)]})


def cold_split() -> pd.DataFrame:
    """The contract's two-group split with i5 (group A) and i11 (group B) cold: all their rows go to test."""
    split = two_group_split()
    cold = split["item_id"].isin(["i5", "i11"])
    return split.assign(fold=np.where(cold, "test", split["fold"]))


class TestTfidfContent(RankerContract):
    def make(self, data):
        return TfidfContentRanker(item_texts(list(data.item_ids)), svd_dims=3, seed=1)


class TestTfidfContentNoSVD(RankerContract):
    def make(self, data):
        return TfidfContentRanker(item_texts(list(data.item_ids)), svd_dims=0)


class TestCollabMap(RankerContract):
    def make(self, data):
        return CollabMapRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1), reg_weight=5.0, alpha=0.1)


class TestCollabMapEverywhere(RankerContract):
    def make(self, data):
        return CollabMapRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1), reg_weight=5.0, alpha=0.1,
                               warm="map")


def test_tfidf_vectors_are_sklearns_and_scores_follow_llm_content():
    data = InteractionData.from_split(two_group_split())
    texts = item_texts(list(data.item_ids))
    ranker = TfidfContentRanker(texts, svd_dims=0, history_weight=1.0).fit(data)
    from sklearn.feature_extraction.text import TfidfVectorizer

    reference = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2)).fit_transform(texts["text"])
    np.testing.assert_allclose(ranker.item_vectors_, reference.toarray(), rtol=1e-5, atol=1e-6)
    # history_weight 1: the score of item i is its best cosine with a history item (by hand for user 0).
    history = data.train[0].indices
    cosines = reference.toarray() @ reference.toarray().T
    np.testing.assert_allclose(ranker.score(np.array([0]))[0], cosines[history].max(axis=0), rtol=1e-5, atol=1e-6)


def test_tfidf_query_text_and_cold_items():
    data = InteractionData.from_split(cold_split())
    ranker = TfidfContentRanker(item_texts(list(data.item_ids)), svd_dims=0).fit(data)
    assert TfidfContentRanker.scores_cold_items and TfidfContentRanker.scores_text
    # Free text alone ranks by words: "horror" finds group B, with no encoder and no history.
    recs = ranker.recommend(Query(user_id="someone-new", text="a scary horror night"), k=6)
    assert {group_of(i) for i in recs["item_id"]} == {"b"}
    # Every user ranks their own group's cold item first among the cold items.
    cold = np.flatnonzero(data.cold_item_mask())
    scores = ranker.score(np.arange(data.n_users))[:, cold]
    best = data.item_ids[cold][scores.argmax(axis=1)]
    assert [group_of(i) for i in best] == [group_of(u) for u in data.user_ids]


def test_tfidf_refit_copy_keeps_the_text_model():
    data = InteractionData.from_split(two_group_split())
    ranker = TfidfContentRanker(item_texts(list(data.item_ids)), svd_dims=3, seed=1).fit(data)
    half = InteractionData(data.user_ids, data.item_ids, data.train.multiply(data.train > 4.5).tocsr(),
                           data.train_timestamps.multiply(data.train > 4.5).tocsr(), data.valid, data.test)
    copy = ranker.refit_copy(half)
    np.testing.assert_array_equal(copy.item_vectors_, ranker.item_vectors_)
    np.testing.assert_allclose(copy.score(np.array([0])), ranker.score_histories(copy.training_histories(np.array([0]))))
    assert not np.allclose(copy.user_vectors_, ranker.user_vectors_)


def test_tfidf_missing_text_fails_loudly():
    data = InteractionData.from_split(two_group_split())
    with pytest.raises(KeyError, match="no text"):
        TfidfContentRanker(item_texts(list(data.item_ids))[1:]).fit(data)


@pytest.mark.parametrize("n_features", [4, 50])  # primal (features < rows) and dual (features > rows) forms
def test_ridge_operator_matches_sklearn(n_features):
    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(30, n_features)), rng.normal(size=(30, 7))
    queries = rng.normal(size=(5, n_features))
    operator = ridge_operator(features, queries, alpha=2.5)
    assert operator.shape == (5, 30)
    target_mean = targets.mean(axis=0)
    reference = Ridge(alpha=2.5, fit_intercept=True).fit(features, targets)
    np.testing.assert_allclose(target_mean + operator @ (targets - target_mean), reference.predict(queries),
                               rtol=1e-6, atol=1e-10)


def test_collab_map_fills_cold_columns_and_keeps_ease():
    data = InteractionData.from_split(cold_split())
    embeddings = unit_embeddings(list(data.item_ids), "item_id", seed=1)
    ranker = CollabMapRanker(embeddings, reg_weight=5.0, alpha=0.1).fit(data)
    ease = EASERanker(reg_weight=5.0).fit(data)
    cold = data.cold_item_mask()
    assert cold.sum() == 2
    np.testing.assert_allclose(ranker.weights_[:, ~cold], ease.weights_[:, ~cold], rtol=1e-5, atol=1e-7)
    assert np.abs(ease.weights_[:, cold]).max() == 0.0 and np.abs(ranker.weights_[:, cold]).max() > 0
    # The cold columns are the ridge prediction from the embeddings (by the reference formula).
    vectors = np.stack(embeddings.set_index("item_id").loc[data.item_ids, "embedding"])
    ridge = Ridge(alpha=0.1, fit_intercept=True).fit(vectors[~cold], ease.weights_[:, ~cold].T.astype(np.float64))
    expected = ridge.predict(vectors[cold]).T
    expected[np.flatnonzero(cold), np.arange(cold.sum())] = 0.0
    np.testing.assert_allclose(ranker.weights_[:, cold], expected, rtol=1e-4, atol=1e-6)
    # Each user ranks the cold item of their own group first, and beats genre-free random on the cold slice.
    scores = ranker.score(np.arange(data.n_users))[:, cold]
    best = data.item_ids[np.flatnonzero(cold)][scores.argmax(axis=1)]
    assert [group_of(i) for i in best] == [group_of(u) for u in data.user_ids]
    result = evaluate(ranker, data, "test", slice_name="cold", candidate_items=slices(data)["cold"])
    assert result.summary["ndcg@10"] > 0.99
    # A live history of group B items puts group B's cold item above group A's.
    live = ranker.score_query(Query(history=tuple(Interaction(i, 5.0, float(t)) for t, i in enumerate(GROUPS["b"][:3]))))
    position = {item: p for p, item in enumerate(data.item_ids)}
    assert live[position["i11"]] > live[position["i5"]]
    # Similar items of a cold item come from the text space (its EASE row is empty).
    assert group_of(ranker.similar_items("i11", k=3)["item_id"].iloc[0]) == "b"


def test_collab_map_rejects_bad_settings():
    frame = unit_embeddings(["i0"], "item_id", seed=1)
    for kwargs in ({"alpha": 0.0}, {"reg_weight": -1.0}, {"warm": "both"}):
        with pytest.raises(ValueError):
            CollabMapRanker(frame, **kwargs)


def test_pseudo_cold_split_never_uses_test():
    split = cold_split()
    pseudo = pseudo_cold_split(split, share=0.2, seed=3)
    real_test = split[split["fold"] == "test"]
    assert not set(pseudo["item_id"]) & {"i5", "i11"}  # the real cold items are gone
    assert len(pseudo) == len(split) - len(real_test)  # the real cold items only had test rows
    # No real test row survives: every pseudo row is a train or valid row of the original split.
    keys = ["user_id", "item_id"]
    merged = pseudo.merge(split, on=keys, suffixes=("", "_orig"))
    assert len(merged) == len(pseudo) and (merged["fold_orig"] != "test").all()
    data = InteractionData.from_split(pseudo)
    cold = data.item_ids[data.cold_item_mask()]
    assert len(cold) == 2  # round(0.2 * 10)
    assert set(pseudo.loc[pseudo["fold"] == "test", "item_id"]) == set(cold)
    np.testing.assert_array_equal(pseudo_cold_split(split, share=0.2, seed=3), pseudo)  # seeded


def test_ranker_assets_fit_log_and_report(tmp_path):
    """The two assets, materialized on the cold two-group split: thin wrappers that fit, log to MLflow and say
    what they built; both are in the evaluation report's ranker list."""
    import dagster as dg

    from llmrec_platform.assets.rankers import RANKER_ASSETS, ease_ranker, llm_ease_map_ranker, tfidf_content_ranker
    from llmrec_platform.resources import DatasetResource, ExperimentResource, TrackingResource

    frame = cold_split()
    items, users = sorted(frame["item_id"].unique()), sorted(frame["user_id"].unique())

    @dg.asset(name="split")
    def split_asset() -> pa.Table:
        return pa.Table.from_pandas(frame, preserve_index=False)

    @dg.asset(name="item_texts")
    def item_texts_asset() -> pd.DataFrame:
        return item_texts(items)

    @dg.asset(name="user_texts")
    def user_texts_asset() -> pd.DataFrame:
        return pd.DataFrame({"id": users, "text": "someone who enjoys watching movies"})

    @dg.asset(name="item_embeddings")
    def item_embeddings_asset() -> pd.DataFrame:
        return unit_embeddings(items, "item_id", seed=1).assign(model="test-encoder")

    result = dg.materialize(
        [split_asset, item_texts_asset, user_texts_asset, item_embeddings_asset, tfidf_content_ranker,
         ease_ranker, llm_ease_map_ranker],
        resources={"io_manager": dg.InMemoryIOManager(), "artifacts_io": dg.InMemoryIOManager(),
                   "tracking": TrackingResource(home=str(tmp_path)), "dataset": DatasetResource(source="ml-100k"),
                   "experiment": ExperimentResource(protocol="recbole", cold_items=0.1, seed=5)},
        run_config={"ops": {"tfidf_content_ranker": {"config": {"svd_dims": 3}},
                            "ease_ranker": {"config": {"reg_weight": 5.0}},
                            "llm_ease_map_ranker": {"config": {"reg_weight": 5.0, "alpha": 0.1}}}},
    )
    assert result.success
    tfidf = result.output_for_node("tfidf_content_ranker")
    assert tfidf.ranker.name == "tfidf_content" and tfidf.ranker.vectorizer.seed == 5  # the experiment's seed
    assert 0.0 <= tfidf.valid_metrics["ndcg@10"] <= 1.0 and tfidf.mlflow_run_id
    [event] = result.asset_materializations_for_node("tfidf_content_ranker")
    assert event.metadata["text_dim"].value == 3 and "mlflow_run_id" in event.metadata
    mapped = result.output_for_node("llm_ease_map_ranker")
    assert mapped.ranker.name == "llm_ease_map" and mapped.ranker.alpha == 0.1
    [event] = result.asset_materializations_for_node("llm_ease_map_ranker")
    assert event.metadata["cold_items_mapped"].value == 2 and event.metadata["ease_weights"].value == "ease_ranker"
    assert {"tfidf_content_ranker", "llm_ease_map_ranker"} <= set(RANKER_ASSETS)


def test_tfidf_user_texts_of_no_split_user_give_no_profiles():
    """A shop whose user texts name no user of the split (or has none) fits like one without user texts."""
    data = InteractionData.from_split(two_group_split())
    texts = item_texts(list(data.item_ids))
    strangers = pd.DataFrame({"id": ["nobody"], "text": ["likes trail running"]})
    plain = TfidfContentRanker(texts, svd_dims=0).fit(data)
    for user_texts in (strangers, strangers.iloc[:0]):
        ranker = TfidfContentRanker(texts, user_texts=user_texts, svd_dims=0).fit(data)
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(ranker.score(users), plain.score(users))
