"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from llmrec_platform.evaluation.metrics import accuracy_at_k, item_coverage, novelty, personalization


def test_single_list_by_hand():
    # Ranked list: hit, miss, hit, miss, miss; 3 relevant items in total.
    hits = np.array([[True, False, True, False, False]])
    m = accuracy_at_k(hits, np.array([3]), k=5)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # positions 1 and 3
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"][0] == pytest.approx(dcg / idcg)
    assert m["precision"][0] == pytest.approx(2 / 5)
    assert m["recall"][0] == pytest.approx(2 / 3)
    assert m["mrr"][0] == pytest.approx(1.0)
    assert m["hit"][0] == 1.0
    # AP: (P@1 * 1 + P@3 * 1) / min(3, 5) = (1 + 2/3) / 3
    assert m["map"][0] == pytest.approx((1 + 2 / 3) / 3)


def test_ideal_dcg_uses_min_of_relevant_and_k():
    # 10 relevant items but k = 2, both positions hit: a perfect list scores 1.
    m = accuracy_at_k(np.array([[True, True]]), np.array([10]), k=2)
    assert m["ndcg"][0] == pytest.approx(1.0)
    assert m["map"][0] == pytest.approx(1.0)
    assert m["recall"][0] == pytest.approx(0.2)


def test_first_hit_late_and_no_hit():
    hits = np.array([[False, False, False, True], [False, False, False, False]])
    m = accuracy_at_k(hits, np.array([1, 2]), k=4)
    assert m["mrr"].tolist() == pytest.approx([0.25, 0.0])
    assert m["ndcg"][0] == pytest.approx((1 / math.log2(5)) / 1.0)
    assert m["ndcg"][1] == 0.0
    assert m["hit"].tolist() == [1.0, 0.0]


def test_k_truncates_longer_lists():
    hits = np.array([[False, True, True]])
    m = accuracy_at_k(hits, np.array([2]), k=1)
    assert m["precision"][0] == 0.0 and m["ndcg"][0] == 0.0


def test_users_without_relevant_items_are_rejected():
    with pytest.raises(ValueError, match="relevant"):
        accuracy_at_k(np.array([[True]]), np.array([0]), k=1)


def test_beyond_accuracy_by_hand():
    lists = np.array([[0, 1], [0, 2], [3, 4]])
    assert item_coverage(lists, n_items=10) == pytest.approx(5 / 10)
    # Pairs: (u0,u1) share 1 of 2, (u0,u2) 0, (u1,u2) 0 -> mean overlap 1/6, personalization 5/6.
    assert personalization(lists, n_items=10) == pytest.approx(1 - 1 / 6)
    counts = np.array([3, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    expected = np.mean([-math.log2((counts[i] + 1) / 4) for i in lists.ravel()])
    assert novelty(lists, counts, n_users=3) == pytest.approx(expected)


def test_f1_by_hand():
    # u0: 2 hits in the top 5, 3 relevant -> P = 2/5, R = 2/3, F1 = 2PR/(P+R) = (8/15)/(16/15) = 1/2.
    # u1: 1 hit at k = 5, 1 relevant -> P = 1/5, R = 1, F1 = (2/5)/(6/5) = 1/3.
    # u2: no hit -> F1 = 0 (not NaN). Averaged over users like every other metric.
    hits = np.array([[True, False, True, False, False],
                     [False, False, False, False, True],
                     [False, False, False, False, False]])
    m = accuracy_at_k(hits, np.array([3, 1, 4]), k=5)
    assert m["f1"].tolist() == pytest.approx([0.5, 1 / 3, 0.0])
    p, r = m["precision"], m["recall"]
    np.testing.assert_allclose(m["f1"][:2], 2 * p[:2] * r[:2] / (p[:2] + r[:2]))
    # The harmonic mean per user, then the mean: not the harmonic mean of the mean P and mean R.
    assert m["f1"].mean() == pytest.approx((0.5 + 1 / 3) / 3)
    assert m["f1"].mean() != pytest.approx(2 * p.mean() * r.mean() / (p.mean() + r.mean()))
    # k truncates the list before F1: with k = 1, u1's hit at position 5 no longer counts.
    assert accuracy_at_k(hits, np.array([3, 1, 4]), k=1)["f1"].tolist() == pytest.approx([2 / 4, 0.0, 0.0])
