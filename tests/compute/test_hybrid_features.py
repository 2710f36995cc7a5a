"""The hybrid's feature building over user blocks: wherever a block runs (this process, a copy of the context shipped
to another process, a Ray worker node), the training matrices are the in-process ones to the last bit."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.compute import InProcess, Placement, rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker
from tests.test_hybrid import content_ranker

BLOCK_USERS = 16  # the hybrid's batch_size: the 48 training users make 3 blocks, the pseudo part's 60 make 4


@pytest.fixture(scope="module")
def data() -> InteractionData:
    rng = np.random.default_rng(4)
    rows = []
    for u in range(60):
        group = np.arange(0, 25) if u % 2 else np.arange(15, 40)
        for pos, item in enumerate(rng.choice(group, size=16, replace=False)):
            fold = "train" if pos < 11 else ("valid" if pos < 14 else "test")
            rows.append((f"u{u:02d}", f"i{item:02d}", float(rng.integers(1, 6)), 1000 + 86400 * pos, fold))
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def unfitted_hybrid(data: InteractionData, blocks=None) -> HybridRanker:
    """EASE (a dense item-item product), ItemKNN and popularity candidates, random text vectors, pseudo-labels."""
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "itemknn": ItemKNNRanker(k=10).fit(data),
                  "popularity": PopularityRanker().fit(data)}
    config = HybridConfig(n_candidates=6, batch_size=BLOCK_USERS, pseudo_label_share=0.25, num_threads=1)
    return HybridRanker(candidates, content_ranker(data), config=config, blocks=blocks)


def training_parts(data: InteractionData, blocks=None) -> dict:
    hybrid = unfitted_hybrid(data, blocks)
    hybrid.prepare(data)
    return hybrid.training_parts(data)


def assert_parts_equal(parts: dict, expected: dict) -> None:
    assert list(parts) == list(expected) == ["valid_train", "holdout", "pseudo_0"]
    for name, part in expected.items():
        assert len(part.y) and part.y.sum() > 0, name  # something to compare
        for attribute in ("X", "y", "groups", "n_relevant", "users", "items"):
            np.testing.assert_array_equal(getattr(parts[name], attribute), getattr(part, attribute), err_msg=name)
            assert getattr(parts[name], attribute).dtype == getattr(part, attribute).dtype, (name, attribute)
        assert parts[name].n_users == part.n_users


@dataclass
class ShippedBlocks:
    """A BlockMap that runs each block on a pickled copy of the function and its inputs, as a Ray worker does."""

    name: str = "shipped"
    block_users: int = 1024
    min_blocks: int = 1
    placements: list = field(default_factory=list)

    def map(self, step, fn, blocks, *shared, progress=False):
        results = []
        for index, block in enumerate(blocks):
            copy_fn, copy_block, copy_shared = pickle.loads(pickle.dumps((fn, block, shared)))
            results.append(copy_fn(copy_block, *copy_shared))
            self.placements.append(Placement(step, index, f"copy{index % 2}", len(block)))
        return results


@pytest.fixture(scope="module")
def in_process_parts(data):
    return training_parts(data, InProcess())


def test_features_are_built_block_by_block_and_equal_one_call_per_batch(data, in_process_parts):
    blocks = InProcess()
    hybrid = unfitted_hybrid(data, blocks)
    hybrid.prepare(data)
    parts = hybrid.training_parts(data)
    assert_parts_equal(parts, in_process_parts)
    # Every user of every part went through one block of at most BLOCK_USERS users.
    assert {p.step for p in blocks.placements} == {"hybrid features"}
    assert max(p.rows for p in blocks.placements) == BLOCK_USERS
    assert len(blocks.placements) == sum(-(-part.n_users // BLOCK_USERS) for part in parts.values()) > 3
    pseudo_users = parts["pseudo_0"].n_users
    assert rows_by_node(blocks.placements) == {"local": parts["valid_train"].n_users + parts["holdout"].n_users
                                               + pseudo_users}
    # The first block's rows are those of one `candidates_and_features` call on its users, for the users kept.
    valid_users = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
    first_block = np.setdiff1d(valid_users, hybrid.validation_users_)[:BLOCK_USERS]
    candidates, features = hybrid.context_.candidates_and_features(hybrid.context_.batch(first_block), 6)
    train = parts["valid_train"]
    kept = train.users[np.isin(train.users, first_block)]
    assert 0 < len(kept) < len(train.users) and np.array_equal(train.users[:len(kept)], kept)
    mine = np.isin(first_block[candidates.rows], kept)
    np.testing.assert_array_equal(train.X[:train.groups[:len(kept)].sum()], features[mine])
    np.testing.assert_array_equal(train.items[:mine.sum()], candidates.items[mine])


def test_a_shipped_context_gives_the_same_matrices_bit_for_bit(data, in_process_parts):
    """A block computed on an unpickled copy of the context (its dense caches rebuilt there) changes nothing."""
    blocks = ShippedBlocks()
    assert_parts_equal(training_parts(data, blocks), in_process_parts)
    assert set(rows_by_node(blocks.placements)) == {"copy0", "copy1"}


def test_the_block_map_is_not_part_of_the_model(data):
    hybrid = unfitted_hybrid(data, ShippedBlocks())
    assert pickle.loads(pickle.dumps(hybrid)).blocks is None
    assert pickle.dumps(hybrid) == pickle.dumps(unfitted_hybrid(data))  # so the fit cache's key ignores it


@pytest.mark.slow
def test_features_built_on_the_ray_nodes_equal_the_in_process_ones(data, in_process_parts, ray_cluster):
    from llmrec_platform.compute.cluster import connect

    blocks = connect(ray_cluster.address)
    assert_parts_equal(training_parts(data, blocks), in_process_parts)
    by_node = rows_by_node(blocks.placements, "hybrid features")
    assert set(by_node) == ray_cluster.worker_node_ids and all(rows > 0 for rows in by_node.values()), by_node
