"""The live service over a catalogue larger than the champion's item space: items added live are event targets,
count in the history, and are recommended through the content channel."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec_platform.live.channels import LiveRanking
from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.serving.bundle import current_bundle, load_bundle
from llmrec_platform.serving.service import LiveService, UnknownItemError


def test_items_added_live_join_the_catalogue_and_every_channel(tiny_home):
    service = LiveService(load_bundle(current_bundle(tiny_home.bundles)), EventLog(tiny_home.events), {"click": 4.0})
    n = service.n_champion
    horror = service.vectors[service.item_position["i6"]]  # group B's text direction
    with pytest.raises(UnknownItemError):
        service.check_item("new-horror")
    assert service.add_items(["new-horror", "new-horror-2"], ["Night", "Night II"], [["Horror"], ["Horror"]],
                             np.stack([2 * horror, horror + 0.01])) == 2
    assert service.add_items(["new-horror"], ["again"], [["Horror"]], horror[None, :]) == 0  # idempotent
    assert service.check_item("new-horror") == n and service.titles[n + 1] == "Night II"
    assert np.allclose(np.linalg.norm(service.vectors[n:], axis=1), 1.0)

    # A click on an item outside the champion's space is history: never listed again, and short-term evidence.
    before = [i["item_id"] for i in service.recommend("a00", 6).items]
    neighbour_before = service.scores("a00")[0][n + 1]
    service.apply(Event("a00", "new-horror", "click", timestamp=2_000_000_000))
    positions, _, _ = service.history_arrays("a00")
    assert n in positions.tolist()
    after = [i["item_id"] for i in service.recommend("a00", 6, explain=True).items]
    assert "new-horror" not in after and after != before
    assert "new-horror-2" in after  # its text neighbour, scored by the content channel
    assert service.scores("a00")[0][n + 1] > neighbour_before + 1  # more than a standard deviation up
    assert "new-horror-2" in [s["item_id"] for s in service.similar("new-horror", 2)]  # i6 has the same direction
    assert service.explain("a00", "new-horror-2").closest[0].item_id == "new-horror"

    # The champion alone cannot score what it never saw: such items come after all of its own.
    service.blend = LiveRanking(weight=0)
    assert [i["item_id"] for i in service.recommend("a00", 12).items][-1:] == ["new-horror-2"]


def test_at_or_above_the_ann_size_query_and_similar_items_search_the_hnsw_index(tiny_home):
    """A catalogue at `ann_min_items` is searched through faiss HNSW (`retrieval.VectorIndex`): on this small catalogue
    it returns what scoring every item returns, and an item added live is found at once."""
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    exact = LiveService(bundle, EventLog(tiny_home.events), {"click": 4.0})
    ann = LiveService(bundle, EventLog(tiny_home.events), {"click": 4.0}, ann_min_items=len(exact.item_ids))
    assert ann.index.approximate and not exact.index.approximate
    for position in range(len(exact.item_ids)):
        vector = exact.vectors[position]
        assert ann.query(vector, None, 5) == exact.query(vector, None, 5)
        assert ann.nearest(vector, np.array([position]), 4) == exact.nearest(vector, np.array([position]), 4)
    horror = exact.vectors[exact.item_position["i6"]]
    for service in (exact, ann):
        service.add_items(["new-horror"], ["Night"], [["Horror"]], horror[None, :] + 0.05)
    found = ann.query(horror + 0.05, None, 3)[0]
    assert found[0]["item_id"] == "new-horror" and found == exact.query(horror + 0.05, None, 3)[0]
    assert ann.similar("new-horror", 3) == exact.similar("new-horror", 3)
    assert "new-horror" not in [i["item_id"] for i in ann.similar("new-horror", 3)]
