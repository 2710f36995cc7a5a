"""The live ranking's channels on small real data: the two taste groups, a real EASE, real replay steps."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.replay import replay, replay_per_step, replay_steps
from llmrec_platform.live.channels import LiveRanking, latest_positions, one_per_item, standardize, training_horizon
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.testing import two_group_split, unit_embeddings


@pytest.fixture(scope="module")
def fitted():
    split = two_group_split()
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    vectors = np.stack(unit_embeddings([str(i) for i in ease.item_ids_], "item_id", seed=0)["embedding"])
    return split, ease, vectors


def a_user(ease):
    """User a00's training history: group A items, all on or before the training horizon."""
    row = ease.train_[0]
    stamps = ease.train_timestamps_[0, row.indices].toarray().ravel()
    return ease.score_histories(ease.training_histories(np.array([0])))[0], row.indices, stamps


def test_off_or_without_new_events_the_champion_order_is_kept(fitted):
    _, ease, vectors = fitted
    champion, positions, stamps = a_user(ease)
    horizon = training_horizon(ease)
    assert horizon == ease.train_timestamps_.data.max()
    off = LiveRanking(weight=0).scores(champion, len(champion), positions, stamps, horizon, vectors, ease._similar_item_scores)
    assert np.array_equal(off, champion)  # the raw scores: what the champion's own recommend shows
    on = LiveRanking().scores(champion, len(champion), positions, stamps, horizon, vectors, ease._similar_item_scores)
    assert np.array_equal(np.argsort(-on, kind="stable"), np.argsort(-champion, kind="stable"))


def test_new_events_in_another_group_lift_that_group_more_when_far_from_the_profile(fitted):
    _, ease, vectors = fitted
    champion, positions, stamps = a_user(ease)
    horizon = training_horizon(ease)
    b_items = np.array([ease._item_position[i] for i in ("i6", "i7")])
    history = np.r_[positions, b_items]
    times = np.r_[stamps, [horizon + 10, horizon + 20]]
    b_rest = np.array([ease._item_position[i] for i in ("i8", "i9", "i10", "i11")])
    a_rest = np.setdiff1d(np.array([ease._item_position[f"i{j}"] for j in range(6)]), positions)
    lifted = {}
    for shift in (0.0, 4.0):
        scores = LiveRanking(weight=1.0, shift_weight=shift).scores(champion, len(champion), history, times, horizon,
                                                                    vectors, ease._similar_item_scores)
        lifted[shift] = (scores[b_rest].mean() - scores[a_rest].mean()) - (
            standardize(champion)[b_rest].mean() - standardize(champion)[a_rest].mean())
    assert champion[b_rest].mean() < champion[a_rest].mean()
    assert lifted[0.0] > 0.5  # two fresh clicks close the gap to the long history's group by half a deviation
    assert lifted[4.0] > 2 * lifted[0.0]  # far from the long-term profile: the per-user weight grows


def test_catalogue_items_beyond_the_champion_are_scored_on_its_scale(fitted):
    _, ease, vectors = fitted
    champion, positions, stamps = a_user(ease)
    n = len(champion)
    extra = np.stack([vectors[ease._item_position["i0"]], vectors[ease._item_position["i6"]]])  # an A-like, a B-like item
    catalogue = np.r_[vectors, extra]
    live = LiveRanking()
    scores = live.scores(champion, n + 2, positions, stamps, training_horizon(ease), catalogue, ease._similar_item_scores)
    assert scores.shape == (n + 2,) and np.isfinite(scores).all()
    assert scores[n] > scores[n + 1]  # the long-term content channel: like the user's history, then not
    assert scores[n] < standardize(champion)[positions].max()  # content_offset: below the champion's best evidence
    # A click on the new B-like item (outside the champion's space) is short-term evidence for group B.
    clicked = live.scores(champion, n + 2, np.r_[positions, n + 1], np.r_[stamps, training_horizon(ease) + 1],
                          training_horizon(ease), catalogue, ease._similar_item_scores)
    b_items = [ease._item_position[f"i{j}"] for j in range(6, 12)]
    assert (clicked[b_items] - scores[b_items]).min() > 0
    off = LiveRanking(weight=0).scores(champion, n + 2, positions, stamps, 0.0, catalogue, None)
    assert off[n:].max() < off[:n].min()  # the champion alone cannot recommend what it does not know


def test_history_helpers():
    positions, ratings, stamps = one_per_item(np.array([5, 3, 5, 1]), np.array([1.0, 2.0, 3.0, 4.0]),
                                              np.array([10.0, 11.0, 10.0, 9.0]))
    assert positions.tolist() == [1, 3, 5] and ratings.tolist() == [4.0, 2.0, 3.0]  # the tie: later in order wins
    assert latest_positions(np.array([5, 3, 5, 1]), np.array([10.0, 11.0, 12.0, 9.0]), 2).tolist() == [5, 3]
    with pytest.raises(ValueError, match="0 < decay <= 1"):
        LiveRanking(decay=0)


def test_replay_scores_the_same_path_and_pairs_users(fitted):
    split, ease, vectors = fitted
    steps = replay_steps(ease, split, "test")
    assert len(steps) == split["fold"].eq("test").sum() and {s.user_id for s in steps} == set(split["user_id"])
    variants = {"champion": LiveRanking(weight=0), "live": LiveRanking()}
    per_step = replay_per_step(ease, steps, vectors, variants)
    assert len(per_step) == 2 * len(steps) and per_step["ndcg@10"].between(0, 1).all()
    summary = replay(ease, steps, vectors, variants)
    assert summary["variant"].tolist() == ["champion", "live"]
    champion = per_step[per_step["variant"] == "champion"]
    assert summary.loc[0, "ndcg@10"] == pytest.approx(champion["ndcg@10"].mean())
    # The test events of this split are within the training timeline: nothing is short-term, the lists agree.
    assert (per_step.loc[per_step["variant"] == "live", "rank"].to_numpy() == champion["rank"].to_numpy()).all()
