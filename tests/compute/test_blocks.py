"""Map over blocks in-process: how inputs are cut, and that the evaluation's reduce does not depend on the cut."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.compute import LOCAL_NODE, InProcess, cut, rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate_slices
from llmrec_platform.live.recommendations import TopKLists
from llmrec_platform.rankers.base import Ranker, excluded_items


class SeededScores(Ranker):
    """Scores drawn once per (user position, item): a user's row does not depend on how users are batched."""

    name = "seeded"

    def _fit(self, data):
        self.table = np.random.default_rng(3).random((data.n_users, data.n_items), dtype=np.float32).round(2)

    def _score_histories(self, histories):
        return self.table[histories.users]


@pytest.fixture
def data():
    rng = np.random.default_rng(11)
    rows = []
    for user in range(40):
        for item in rng.choice(30, size=8, replace=False):
            rows.append((f"u{user}", f"i{item}", 4, int(rng.integers(1, 100)), rng.choice(["train"] * 6 + ["valid", "test"])))
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def test_cut_gives_at_least_min_blocks_and_keeps_order():
    rows = np.arange(10)
    assert [len(b) for b in cut(rows, 1024)] == [10]
    blocks = cut(rows, 1024, min_blocks=4)
    assert [len(b) for b in blocks] == [3, 3, 2, 2] and np.array_equal(np.concatenate(blocks), rows)
    assert [len(b) for b in cut(rows, 4, min_blocks=2)] == [4, 4, 2]  # the block size still caps
    assert cut(np.arange(0), 8, 3) == []


def test_in_process_map_records_where_each_block_ran():
    mapper = InProcess()
    assert mapper.map("double", lambda block, factor: block * factor, cut(np.arange(5), 2), 2)[2].tolist() == [8]
    assert [(p.block, p.rows) for p in mapper.placements] == [(0, 2), (1, 2), (2, 1)]
    assert rows_by_node(mapper.placements) == {LOCAL_NODE: 5} and rows_by_node(mapper.placements, "other") == {}


def test_evaluation_and_lists_are_the_same_however_users_are_blocked(data):
    ranker = SeededScores().fit(data)
    slices = {"all": (None, None), "some": (np.arange(0, 40, 3), np.arange(30) % 2 == 0)}
    excluded = excluded_items(data.train, data.valid, data.test)
    whole_lists, blocked_lists = TopKLists(ranker, excluded, k=5), TopKLists(ranker, excluded, k=5)
    whole = evaluate_slices(ranker, data, slices, "test", ks=(3, 5), on_scores=whole_lists)
    mapper = InProcess(block_users=3)
    blocked = evaluate_slices(ranker, data, slices, "test", ks=(3, 5), on_scores=blocked_lists, blocks=mapper)
    assert len(mapper.placements) >= 6 and sum(p.rows for p in mapper.placements) == whole["all"].n_users
    for name in slices:
        assert whole[name].n_users > 0
        pd.testing.assert_frame_equal(whole[name].per_user, blocked[name].per_user)
        assert whole[name].summary == blocked[name].summary
    pd.testing.assert_frame_equal(whole_lists.frame(), blocked_lists.frame())


def test_a_plain_callback_cannot_go_to_a_cluster(data):
    @dataclass
    class FakeCluster:  # what evaluate_slices sees of a cluster: a BlockMap that is not InProcess
        name: str = "fake"
        block_users: int = 8
        min_blocks: int = 2
        placements: list = field(default_factory=list)
        map = InProcess.map

    ranker = SeededScores().fit(data)
    with pytest.raises(ValueError, match="ScoreSink"):
        evaluate_slices(ranker, data, {"all": (None, None)}, on_scores=lambda users, scores: None, blocks=FakeCluster())
