"""Bundles: atomic publication, pruning, the event-log offset they include, and the live service over them."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.live.short_term import ShortTermBlend
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.base import Interaction, Query
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.serving.bundle import (
    KEEP_BUNDLES,
    BundleError,
    current_bundle,
    current_version,
    load_bundle,
    publish_bundle,
)
from llmrec_platform.serving.service import LiveService, UnknownItemError
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings
from tests.serving.conftest import publish_tiny_bundle


def test_publication_moves_current_atomically_and_prunes(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    with pytest.raises(BundleError, match="llmrec demo"):
        current_bundle(home.bundles)
    published = [publish_tiny_bundle(home) for _ in range(KEEP_BUNDLES + 2)]
    assert os.path.islink(home.bundles / "current") and current_version(home.bundles) == published[-1].name
    assert current_bundle(home.bundles) == published[-1].resolve()
    kept = sorted(p.name for p in home.bundles.iterdir() if p.is_dir() and not p.is_symlink())
    assert kept == sorted(p.name for p in published[-KEEP_BUNDLES - 1:])  # current + the KEEP_BUNDLES before it
    assert not list(home.bundles.glob(".tmp-*"))
    bundle = load_bundle(current_bundle(home.bundles))
    assert bundle.items["title"].tolist() == [f"Film {i}" for i in bundle.champion.item_ids_]
    assert bundle.items["genres"].map(list).tolist()[0] == ["Comedy"]
    assert np.allclose(np.linalg.norm(bundle.item_vectors, axis=1), 1.0)
    (published[-1] / "champion.pkl").unlink()
    with pytest.raises(BundleError, match="champion.pkl is missing"):
        load_bundle(published[-1])


def test_the_live_service_replays_only_what_the_bundle_does_not_hold(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    log = EventLog(home.events)
    _, included = log.append([Event("a00", "i7", "click", timestamp=2_000_000_000)])
    log.append([Event("a00", "i8", "favorite", timestamp=2_000_000_100)])
    split = two_group_split()
    history = split[["user_id", "item_id", "rating", "timestamp"]]
    first = history.iloc[:0].assign(user_id=["a00"], item_id=["i7"], rating=[4.0], timestamp=[2_000_000_000.0])
    items = item_genres().assign(title=lambda f: "Film " + f["item_id"])
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    publish_bundle(home.bundles, ease, items, unit_embeddings(items["item_id"].tolist(), "item_id", 0),
                   pd.concat([history, first.assign(event="click")]), {"event_offset": included})
    service = LiveService(load_bundle(current_bundle(home.bundles)), log, {"click": 4.0, "favorite": 5.0},
                          ShortTermBlend(weight=0))
    events = [h for h in service.history("a00") if h.event != "rating"]
    assert [(h.item_id, h.event, h.rating) for h in events] == [("i7", "click", 4.0), ("i8", "favorite", 5.0)]
    assert service.offset == log.size() and service.events_applied == 1

    # The served fold-in equals the champion's own score_query on the same history.
    scores, positions, cold = service.scores("a00")
    expected = ease.score_query(Query(user_id="a00", history=tuple(service.history("a00"))))
    assert not cold and np.allclose(scores, expected) and len(positions) == 8
    with pytest.raises(UnknownItemError):
        service.check_item("zzz")


def test_history_arrays_keep_the_latest_interaction_per_item(tiny_home):
    service = LiveService(load_bundle(current_bundle(tiny_home.bundles)), EventLog(tiny_home.events), {"view": 2.0})
    service.apply(Event("x", "i3", "view", timestamp=10))
    service.apply(Event("x", "i3", "rate", value=1.0, timestamp=20))
    service.apply(Event("x", "i4", "view", timestamp=15))
    positions, ratings, stamps = service.history_arrays("x")
    by_item = dict(zip(service.item_ids[positions], zip(ratings, stamps, strict=True), strict=True))
    assert by_item == {"i3": (1.0, 20.0), "i4": (2.0, 15.0)}
    ranker = service.bundle.champion
    histories = ranker.histories([Query(history=tuple(Interaction(h.item_id, h.rating, h.timestamp)
                                                      for h in service.history("x")))])
    assert sorted(histories.ratings.indices.tolist()) == sorted(positions.tolist())
    assert sorted(histories.ratings.data.tolist()) == sorted(ratings.tolist())
