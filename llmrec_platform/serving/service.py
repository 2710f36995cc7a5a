"""What the server does, without the web framework: live histories over a bundle and the event log.

A `LiveService` holds one published `Bundle` and the event log. Every known interaction comes from the
bundle (its histories include the log up to `bundle.event_offset`); every event after that offset is
replayed from the log into in-memory live histories, on start and before every answer (`catch_up`), so a
restart loses nothing and several server processes on one log all read their own and each other's writes.
A list is the live ranking (`LiveRanking`, `live/channels.py`) over the whole catalogue: the champion's fold-in
of bundle history + live events (`score_histories`, what `score_query` does for a history), the short-term
neighbours of the events newer than the champion's training timeline, and the text vectors for the catalogue
items the champion cannot score; never showing what the history holds. The item space is the catalogue:
positions [0, n) are the champion's items in its order, then the bundle's other items, then items added live
(`add_items`); every one of them is a valid event target. A user erased by `llmrec forget` or `DELETE /users/{id}` (the erasure
ledger, `llmrec_platform.erasure`) is dropped before the next answer (`drop_erased`).
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.live.channels import LiveRanking, one_per_item, standardize, training_horizon
from llmrec_platform.live.events import Event, EventLog, event_rating
from llmrec_platform.live.long_term import REFRESH_MODES, Row, fold_in, read_long_term
from llmrec_platform.rankers.base import Interaction, Query, Ranker, top_k_row
from llmrec_platform.retrieval import DEFAULT_ANN_MIN_ITEMS, VectorIndex
from llmrec_platform.serving.bundle import Bundle
from llmrec_platform.serving.explain import Evidence, evidence

# Each user's memo keeps the top of their list (positions and scores) for the lists that follow in the same state:
# 50 covers the usual page sizes (the benchmark's k = 10, the web page's 20) in about 1 KB a user.
TOP_MEMO = 50
TOP_MEMO_KEY = "top"


def same_events(seen: tuple[int, Interaction | None], live: list[Interaction]) -> bool:
    """Whether `live` is the list of live events `seen` = (count, last event) was taken from."""
    return seen[0] == len(live) and (seen[1] is live[-1] if live else seen[1] is None)


class UnknownItemError(KeyError):
    def __str__(self) -> str:
        return f"unknown item {self.args[0]!r}: it is not in the served catalogue"


@dataclass
class Recommendation:
    user_id: str
    request_id: str
    model_version: str
    ranker: str
    arm: str
    cold_start: bool
    items: list[dict] = field(default_factory=list)


class LiveService:
    def __init__(self, bundle: Bundle, log: EventLog | None, event_weights: dict[str, float],
                 blend: LiveRanking | None = None, challenger_share: float = 0.0,
                 query_user_weight: float = 0.5, refresh: str = "request", ann_min_items: int = DEFAULT_ANN_MIN_ITEMS):
        """`log` None: no live events (a bundle's own histories only). `refresh` says when the long-term channel
        (the ranker's fold-in) follows a changed history: "request" (on the next request: every list is exactly
        the fold-in of the whole history) or "background" (the server's refresher recomputes it, `refresh_stale`;
        until then the previous fold-in serves, and new events act through the short-term channel and the
        exclusion). `ann_min_items`: from this catalogue size on, `/query` without a personal blend and the similar
        items of an item outside the champion's space search a faiss HNSW index (`retrieval.VectorIndex`, which
        items added live join); below it they score every item."""
        if refresh not in REFRESH_MODES:
            raise ValueError(f"refresh must be one of {REFRESH_MODES}, got {refresh!r}")
        self.bundle = bundle
        self.refresh = refresh
        self.log = log
        self.event_weights = event_weights
        self.blend = blend or LiveRanking()
        self.challenger_share = challenger_share if bundle.challenger is not None else 0.0
        self.query_user_weight = query_user_weight
        champion_items = np.asarray(bundle.champion.item_ids_).astype(str)
        self.n_champion = len(champion_items)
        catalogue = bundle.items["item_id"].astype(str).to_numpy()
        if not np.array_equal(catalogue[:self.n_champion], champion_items):
            raise ValueError(f"bundle {bundle.path}: items.parquet must start with the champion's "
                             f"{self.n_champion} items in its order")
        self.item_ids = catalogue.astype(object)
        self.item_position = {i: p for p, i in enumerate(catalogue)}
        self.titles = bundle.items["title"].astype(str).tolist()
        self.genres = [list(g) for g in bundle.items["genres"]]
        self.index = VectorIndex(np.ascontiguousarray(bundle.item_vectors, dtype=np.float32), ann_min_items)
        # Events after the champion's training data are new to it: the short-term channel's events.
        self.horizons = {"champion": training_horizon(bundle.champion)}
        if bundle.challenger is not None:
            self.horizons["challenger"] = training_horizon(bundle.challenger)
        collab = bundle.collab  # explanations cite its item-item weights when it shares the item space
        self._collab_scores = collab._similar_item_scores if collab is not None and \
            np.array_equal(np.asarray(collab.item_ids_).astype(str), champion_items) else None
        self._index_histories(bundle.histories)
        self.live: dict[str, list[Interaction]] = defaultdict(list)
        self._bundle_arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # `history_arrays` of the bundle's rows
        # Per user while their history stays: `history_arrays` with live events, and the live ranking's memo
        # (`LiveRanking.scores`) with the (arm, live events, fold-in) it belongs to. Live events are told apart by
        # their count and the last one's identity (a caller may replace a user's events: `evaluation.genre_shift`).
        self._live_arrays: dict[str, tuple[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._memos: dict[str, tuple[tuple, dict]] = {}
        self.offset = bundle.event_offset
        self.events_applied = 0
        # Erasures before this service started are in its bundle and log already; later ones are dropped on the way.
        self._erased = log.erased.current().hashes if log is not None and log.erased is not None else frozenset()
        self.catalogue = None  # a follower of the items log (`live.catalogue.CatalogueFollower`): items added live
        # The long-term channel's fold-ins (`live.long_term`): the bundle's file for its users' bundle histories,
        # then per arm and user (number of live events folded in, scores); `stale` users wait for the refresher.
        self._stored = read_long_term(bundle.path, bundle.champion)
        self._folded: dict[str, dict[str, tuple[int, np.ndarray]]] = {"champion": {}, "challenger": {}}
        self._cold: dict[str, np.ndarray] = {}
        self.stale: dict[str, None] = {}
        self.catch_up()

    # -- histories ------------------------------------------------------------------------------------------------
    def _index_histories(self, frame: pd.DataFrame) -> None:
        users = frame["user_id"].to_numpy()
        boundaries = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
        ends = np.r_[boundaries[1:], len(users)]
        self._spans = {str(users[b]): (int(b), int(e)) for b, e in zip(boundaries, ends, strict=True)}
        self._h_items = frame["item_id"].astype(str).to_numpy()
        self._h_positions = pd.Index(self.item_ids.astype(str)).get_indexer(self._h_items)  # -1: not in the catalogue
        self._h_ratings = frame["rating"].to_numpy(dtype=np.float64)
        self._h_stamps = frame["timestamp"].to_numpy(dtype=np.float64)
        self._h_events = frame["event"].astype(str).to_numpy()

    def catch_up(self) -> int:
        """Apply the items and events appended to the logs since the last call (by any process); returns how many
        events."""
        self.drop_erased()
        if self.catalogue is not None:  # items first: an event may name an item added a moment before
            self.catalogue.catch_up(self)
        if self.log is None or self.log.size() == self.offset:
            return 0
        batch = self.log.read(self.offset)
        for event in batch.events:
            self.apply(event)
        self.offset = batch.end
        return len(batch.events)

    def drop_erased(self) -> int:
        """Forget the users erased (`llmrec forget`, `DELETE /users/{id}`) since the last call, by any process: one
        stat of the erasure ledger per call, the users' hashes only when someone was erased. Returns how many."""
        erased = self.log.erased.current() if self.log is not None and self.log.erased is not None else None
        if erased is None or erased.hashes == self._erased:
            return 0
        new, self._erased = erased.hashes - self._erased, erased.hashes
        return sum(self.forget(user) for user in [*self._spans, *self.live] if erased.hash(user) in new)

    def forget(self, user_id: str) -> bool:
        """Drop one user's live state: their live events and their part of the bundle's histories (they are then
        an unknown user). Returns whether anything was held."""
        user = str(user_id)
        held = self._spans.pop(user, None) is not None
        self._bundle_arrays.pop(user, None)
        self._live_arrays.pop(user, None)
        self._memos.pop(user, None)
        for folded in self._folded.values():
            folded.pop(user, None)
        self.stale.pop(user, None)
        if self._stored is not None:
            self._stored[1].pop(user, None)
        return self.live.pop(user, None) is not None or held

    def apply(self, event: Event) -> None:
        rating = event_rating(event.event_type, event.value, self.event_weights)
        self.live[event.user_id].append(Interaction(event.item_id, rating, float(event.timestamp), event.event_type))
        self.events_applied += 1

    def history(self, user_id: str) -> list[Interaction]:
        """Everything the user did, as stored: the bundle's interactions, then live events in log order."""
        start, end = self._spans.get(str(user_id), (0, 0))
        stored = [Interaction(i, float(r), float(t), str(e)) for i, r, t, e in zip(
            self._h_items[start:end], self._h_ratings[start:end], self._h_stamps[start:end],
            self._h_events[start:end], strict=True)]
        return stored + self.live.get(str(user_id), [])

    def history_arrays(self, user_id: str, live: list[Interaction] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(catalogue positions, ratings, timestamps) of the user's history, one entry per item (its latest
        interaction, as `Ranker.histories` keeps it), sorted by position. Items beyond the champion's count too.
        `live`: the user's live events to use (a snapshot taken by the caller), default the current ones."""
        user = str(user_id)
        live = self.live.get(user, []) if live is None else live
        stored = self._bundle_arrays.get(user)
        if stored is None:
            stored = self._history_arrays(user, [])
            if user in self._spans:  # once per bundle user: most lists are for users without live events
                self._bundle_arrays[user] = stored
        if not live:
            return stored
        held = self._live_arrays.get(user)
        if held is None or not same_events(held[0], live):
            held = self._live_arrays[user] = ((len(live), live[-1]), self._history_arrays(user, live, stored))
        return held[1]

    def _history_arrays(self, user: str, live: list[Interaction], stored: tuple[np.ndarray, ...] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`history_arrays` from the bundle's rows of the user (or their `stored` reduction: one entry per item,
        the latest, so reducing it again with the live events after it picks what the whole history picks), then
        `live`. The arrays are read-only: the stored ones are shared between requests."""
        if stored is None:
            start, end = self._spans.get(user, (0, 0))
            stored = self._h_positions[start:end], self._h_ratings[start:end], self._h_stamps[start:end]
        positions = np.concatenate([stored[0], np.fromiter((self.item_position.get(h.item_id, -1) for h in live),
                                                           np.int64, len(live))])
        ratings = np.concatenate([stored[1], np.fromiter((h.rating for h in live), np.float64, len(live))])
        stamps = np.concatenate([stored[2], np.fromiter((h.timestamp for h in live), np.float64, len(live))])
        known = positions >= 0
        arrays = one_per_item(positions[known], ratings[known], stamps[known])
        for array in arrays:
            array.flags.writeable = False
        return arrays

    @property
    def vectors(self) -> np.ndarray:
        """The catalogue's unit-norm text vectors, (catalogue items, dim) float32 (the index holds them)."""
        return self.index.vectors

    def bundle_users(self) -> list[str]:
        """The users of the bundle's histories, in its order."""
        return list(self._spans)

    def champion_row(self, user_id: str, ranker: Ranker, live: list[Interaction] | None = None) -> Row | None:
        """The user's history in the ranker's item space, as `fold_in` takes it (None: no item of that space)."""
        positions, ratings, stamps = self.history_arrays(user_id, live)
        known = positions < self.n_champion  # sorted by position: the champion's items come first
        if not known.any():
            return None
        return ranker._user_position.get(str(user_id), -1), positions[known], ratings[known], stamps[known]

    def knows(self, user_id: str) -> bool:
        return str(user_id) in self._spans or str(user_id) in self.live

    def check_item(self, item_id: str) -> int:
        """The catalogue position of an item (any catalogue item, including those added live)."""
        position = self.item_position.get(str(item_id))
        if position is None:
            raise UnknownItemError(item_id)
        return position

    def add_items(self, item_ids, titles, genres, vectors: np.ndarray) -> int:
        """Append catalogue items added live (POST /items, the items log): they become event targets and join the
        content channel at once. `vectors` are their text embeddings (normalized here). An id already in the
        catalogue is skipped, so replaying the items log is idempotent. Returns how many were added."""
        item_ids = [str(i) for i in item_ids]
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not len(item_ids) == len(titles) == len(genres) == len(vectors):
            raise ValueError(f"add_items: {len(item_ids)} ids, {len(titles)} titles, {len(genres)} genre lists and "
                             f"{len(vectors)} vectors: one of each per item")
        if len(vectors) and vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"add_items: vectors of dimension {vectors.shape[1]}, the bundle's are {self.vectors.shape[1]}")
        fresh = [j for j, i in enumerate(item_ids) if i not in self.item_position and i not in item_ids[:j]]
        if not fresh:
            return 0
        norms = np.linalg.norm(vectors[fresh], axis=1, keepdims=True)
        for j in fresh:
            self.item_position[item_ids[j]] = len(self.item_ids) + fresh.index(j)
        self.item_ids = np.r_[self.item_ids, np.array([item_ids[j] for j in fresh], dtype=object)]
        self.titles += [str(titles[j]) for j in fresh]
        self.genres += [list(genres[j] or []) for j in fresh]
        self.index.add(vectors[fresh] / np.where(norms > 0, norms, 1.0))
        unknown = np.flatnonzero(self._h_positions < 0)  # bundle history on items the catalogue lacked until now
        if len(unknown):
            self._h_positions[unknown] = [self.item_position.get(i, -1) for i in self._h_items[unknown]]
            self._bundle_arrays.clear()  # some users' bundle history holds a catalogue item now
            self._live_arrays.clear()
        self._memos.clear()  # the content channel covers the new items too
        return len(fresh)

    # -- ranking --------------------------------------------------------------------------------------------------
    def arm(self, user_id: str) -> tuple[str, Ranker]:
        """The ranker this user sees: the challenger for a stable hash-share of users, else the champion."""
        if self.challenger_share > 0:
            bucket = int.from_bytes(hashlib.sha256(str(user_id).encode()).digest()[:8], "big") / 2**64
            if bucket < self.challenger_share:
                return "challenger", self.bundle.challenger
        return "champion", self.bundle.champion

    def scores(self, user_id: str, ranker: Ranker | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(scores over the catalogue, the history's catalogue positions, cold start?) for a user: the live
        ranking of the ranker's fold-in of the history (`score_histories`, what `score_query` does for a
        history), or its cold start."""
        score, positions, cold, _ = self._scorer(str(user_id), ranker or self.bundle.champion)
        return score(), positions, cold

    def _scorer(self, user: str, ranker: Ranker) -> tuple[Callable[[], np.ndarray], np.ndarray, bool, dict | None]:
        """`scores` not yet computed: (a function that computes them, history positions, cold start?, the user's
        live-ranking memo for this state of their history, or None)."""
        arm = "challenger" if ranker is self.bundle.challenger else "champion"
        live = list(self.live.get(user, ()))  # one snapshot: the fold-in and the channels see the same events
        positions, _, stamps = self.history_arrays(user, live)
        if not len(positions):
            return (lambda: self.blend.scores(self.cold_start(arm, ranker), len(self.item_ids), positions, stamps,
                                              np.inf, None, None)), positions, True, None
        # Only items outside the champion's space: it answers as for a newcomer, the other channels personalise.
        folded, source = self._long_term(user, arm, ranker, live)
        memo = self._memo(user, arm, live, source)
        return (lambda: self.blend.scores(folded, len(self.item_ids), positions, stamps, self.horizons[arm],
                                          self.vectors, ranker._similar_item_scores, memo)), positions, False, memo

    def ranked(self, user_id: str, k: int, ranker: Ranker | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(the top k catalogue positions, best first, never one the history holds; their scores; the history's
        positions; cold start?). The top `TOP_MEMO` are kept in the user's memo while their history and fold-in
        stay (the memo's own rule), so a repeated list costs no full-catalogue pass: `top_k` orders by (-score,
        position), so the first k of the kept list are the top k."""
        score, positions, cold, memo = self._scorer(str(user_id), ranker or self.bundle.champion)
        held = memo.get(TOP_MEMO_KEY) if memo is not None else None
        if held is None or (len(held[0]) < k and not held[2]):
            scores = score()
            top = self._top(scores, positions, max(k, TOP_MEMO))
            held = (top, scores[top], len(top) < max(k, TOP_MEMO))  # complete: fewer candidates than asked for
            if memo is not None:
                for array in held[:2]:
                    array.flags.writeable = False
                memo[TOP_MEMO_KEY] = held
        return held[0][:k], held[1][:k], positions, cold

    def _memo(self, user: str, arm: str, live: list[Interaction], source: object | None) -> dict | None:
        """The user's live-ranking memo for this state of their history and fold-in (`source`: the fold-in's
        entry; None: a fold-in of this request only, so nothing to keep)."""
        if source is None:
            return None
        held = self._memos.get(user)
        if held is None or held[0][0] != arm or held[0][1] is not source or not same_events(held[0][2], live):
            held = self._memos[user] = ((arm, source, (len(live), live[-1] if live else None)), {})
        return held[1]

    def prepare_lists(self) -> int:
        """Build the live ranking's memo of every bundle user with a stored fold-in now, not on their first list:
        their lists then skip the long-term channel's full-catalogue passes (ML-1M hybrid: about 0.4 ms of CPU a
        user, 12 KB) and, until their history changes, the scoring itself (the kept top, `ranked`). Call after the
        items log is replayed (an added item clears the memos). Returns how many."""
        if not self.blend.active or self._stored is None:
            return 0
        users = [user for user in self._stored[1] if self.arm(user)[0] == "champion"]
        for user in users:
            self.ranked(user, TOP_MEMO)
        return len(users)

    def cold_start(self, arm: str, ranker: Ranker) -> np.ndarray:
        if arm not in self._cold:
            self._cold[arm] = ranker.score_query(Query())
        return self._cold[arm]

    def long_term(self, user: str, arm: str, ranker: Ranker, live: list[Interaction]) -> np.ndarray:
        """The ranker's fold-in of the user's history (bundle + `live` events), from the cache when it holds it
        (`live.long_term`). With refresh "background" an older fold-in serves and the user is marked stale."""
        return self._long_term(user, arm, ranker, live)[0]

    def _long_term(self, user: str, arm: str, ranker: Ranker, live: list[Interaction]) -> tuple[np.ndarray, object | None]:
        """`long_term`, and where it came from: the held entry (the bundle's file, or a `_folded` entry: the same
        object until it is replaced), or None for a fold-in computed for this request only."""
        stored = self._stored[1].get(user) if self._stored is not None and arm == "champion" else None
        entry = self._folded[arm].get(user)
        source = entry
        if entry is None and stored is not None:
            entry, source = (0, self._stored[0][stored]), self._stored
        if entry is not None and (entry[0] == len(live) or self.refresh == "background"):
            if entry[0] != len(live):
                self.stale[user] = None
            return entry[1], source
        row = self.champion_row(user, ranker, live)
        folded = fold_in(ranker, [row])[0] if row is not None else self.cold_start(arm, ranker)
        if self.refresh == "background" or not live:  # "request" keeps only the bundle history's fold-in
            entry = self._folded[arm][user] = (len(live), folded)
            return folded, entry
        return folded, None

    def take_stale(self, limit: int) -> list[str]:
        """Up to `limit` users whose long-term fold-in is older than their history, oldest first (on the event
        loop, where `stale` changes)."""
        users = list(itertools.islice(self.stale, limit))
        for user in users:
            del self.stale[user]
        return users

    def refresh_stale(self, users: list[str]) -> float:
        """Recompute the users' long-term fold-ins from their current histories, in one batch per arm (the
        server's refresher runs this in a worker thread). Returns the wall seconds it took."""
        start = time.perf_counter()
        for arm, ranker in (("champion", self.bundle.champion), ("challenger", self.bundle.challenger)):
            if ranker is None:
                continue
            batch = []
            for user in users:
                if self.arm(user)[0] == arm:
                    live = list(self.live.get(user, ()))
                    if (row := self.champion_row(user, ranker, live)) is not None:
                        batch.append((user, len(live), row))
            if batch:
                for (user, version, _), folded in zip(batch, fold_in(ranker, [b[2] for b in batch]), strict=True):
                    if self.knows(user):  # not erased while this ran
                        self._folded[arm][user] = (version, folded)
        return time.perf_counter() - start

    def recommend(self, user_id: str, k: int = 10, explain: bool = False) -> Recommendation:
        self.catch_up()
        arm, ranker = self.arm(user_id)
        top, top_scores, positions, cold = self.ranked(user_id, k, ranker)
        result = Recommendation(str(user_id), uuid.uuid4().hex, self.bundle.version, ranker.name, arm, cold)
        for position, score in zip(top.tolist(), top_scores.tolist(), strict=True):
            item = {"item_id": str(self.item_ids[position]), "title": self.titles[position], "score": round(score, 6)}
            if explain and len(positions):
                item["because"] = self.evidence_for(position, positions).as_dict()
            result.items.append(item)
        return result

    def _top(self, scores: np.ndarray, history_positions: np.ndarray, k: int) -> np.ndarray:
        """The one exclusion rule (`excluded_items`: never what the history holds), then the top k."""
        return top_k_row(scores, history_positions, k)

    def evidence_for(self, item: int, history_positions: np.ndarray) -> Evidence:
        collab = self._collab_scores
        if collab is not None and item >= self.n_champion:
            collab = None  # the collaborative weights know nothing of an item outside the champion's space
        elif collab is not None:
            n, inner = self.n_champion, collab
            collab = lambda h: inner(h) if h < n else np.zeros(n, dtype=np.float32)  # noqa: E731
        return evidence(item, history_positions, self.item_ids, self.titles, self.genres, self.vectors, collab,
                        content=item >= self.n_champion)

    def explain(self, user_id: str, item_id: str) -> Evidence | None:
        """The evidence for one item of a user's list (None for a user without a usable history)."""
        self.catch_up()
        item = self.check_item(item_id)
        positions, _, _ = self.history_arrays(user_id)
        return self.evidence_for(item, positions) if len(positions) else None

    def query(self, text_vector: np.ndarray, user_id: str | None, k: int) -> tuple[list[dict], bool]:
        """Items closest to an encoded free-text need, blended with the user's own list when one is given;
        returns (items, personalised?)."""
        self.catch_up()
        vector = np.asarray(text_vector, dtype=np.float32)
        positions = np.zeros(0, np.int64)
        if user_id is not None and self.knows(user_id):
            user_scores, positions, cold = self.scores(user_id)
            if not cold and self.query_user_weight > 0:
                scores = (standardize((self.vectors @ vector)[None, :])
                          + self.query_user_weight * standardize(user_scores[None, :]))[0].astype(np.float32)
                return [{"item_id": str(self.item_ids[p]), "title": self.titles[p], "score": round(float(scores[p]), 6)}
                        for p in self._top(scores, positions, k)], True
        return self.nearest(vector, positions, k), False

    def nearest(self, vector: np.ndarray, excluded: np.ndarray, k: int) -> list[dict]:
        """The k catalogue items closest to a unit-norm vector in text, never an `excluded` position: the HNSW
        index at or above `ann_min_items` (the scores are exact cosines either way), else every item scored."""
        if self.index.approximate:
            top, cosines = self.index.search(vector, k, exclude=[excluded])
            found = top[0] >= 0
            pairs = zip(top[0][found].tolist(), cosines[0][found].tolist(), strict=True)
        else:
            scores = self.vectors @ vector
            pairs = ((p, scores[p]) for p in self._top(scores, excluded, k).tolist())
        return [{"item_id": str(self.item_ids[p]), "title": self.titles[p], "score": round(float(s), 6)} for p, s in pairs]

    def similar(self, item_id: str, k: int) -> list[dict]:
        """The champion's similar items; for an item outside its space, the nearest in text over the catalogue."""
        position = self.check_item(item_id)
        if position >= self.n_champion:
            return self.nearest(self.vectors[position], np.array([position]), k)
        frame = self.bundle.champion.similar_items(item_id, k)
        return [{"item_id": str(i), "title": self.titles[self.item_position[str(i)]], "score": round(float(s), 6)}
                for i, s in zip(frame["item_id"], frame["score"], strict=True)]
