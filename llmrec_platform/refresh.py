"""Refresh the users touched by new events, between nightly retrains (no Dagster).

For a batch of events from the `EventLog`:

1. `record_events` upserts them (by event_id) into the warehouse table `events`;
2. `refresh_user_embeddings` recomputes each affected user's interest vector with the *same* function as
   the `user_embeddings` asset (`user_interest_vectors`), over the user's training rows of `split` plus
   *all* of the user's events so far (a `rating` event counts with its value as the rating, any other
   event type as an implicit positive), using the stored `item_embeddings` and the cached profile-text
   embedding; it replaces those users' rows of `user_embeddings`;
3. `refresh_recommendations` re-ranks those users with the published champion and replaces their rows of
   `recommendations`: items in `split` or in the user's events are excluded; a content ranker
   (`LLMContentRanker`) scores with the refreshed interest vector, so new events change the list at
   once; other rankers score the users they were fitted on (new events then only remove seen items).
   Users the champion cannot score wait for the nightly retrain.

Because vectors are recomputed from train + all events (not incrementally), a refresh is idempotent and
replaying a batch gives the same tables. The nightly retrain rebuilds both tables from `split`; events
reach training when they are landed as ratings (LLMREC_HOME/landing/).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.embeddings import align, user_interest_vectors
from llmrec_platform.events import EVENT_COLUMNS, EventBatch
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker, top_k
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.warehouse import Warehouse

EVENTS_TABLE = "events"
IMPLICIT_RATING = 4.0


@dataclass
class RefreshResult:
    users: list[str]
    embedded: list[str] = field(default_factory=list)
    recommended: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # users the champion cannot score yet
    notes: list[str] = field(default_factory=list)


def record_events(store: Warehouse, batch: EventBatch) -> int:
    """Upsert the batch's events by event_id (replaying a batch changes nothing)."""
    frame = batch.frame().astype({"value": "float64", "timestamp": "int64"})
    if frame.empty:
        return 0
    with store.connect() as conn:
        conn.register("incoming", frame)
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (event_id VARCHAR, user_id VARCHAR, item_id VARCHAR, "
                     "event_type VARCHAR, value DOUBLE, timestamp BIGINT)")
        conn.execute(f"DELETE FROM {EVENTS_TABLE} WHERE event_id IN (SELECT event_id FROM incoming)")
        conn.execute(f"INSERT INTO {EVENTS_TABLE} BY NAME SELECT {', '.join(EVENT_COLUMNS)} FROM incoming")
        conn.execute("COMMIT")
    return len(frame)


def _for_users(store: Warehouse, table: str, users: list[str], columns: str = "*", where: str = "") -> pd.DataFrame:
    if not store.has_table(table):
        return pd.DataFrame()
    extra = f" AND {where}" if where else ""
    return store.query(f"SELECT {columns} FROM {table} WHERE list_contains(?, user_id){extra}", [users])


def user_interactions(store: Warehouse, users: list[str], implicit_rating: float = IMPLICIT_RATING) -> pd.DataFrame:
    """Training rows of `split` plus all events of the users: one row per user-item (the latest)."""
    train = _for_users(store, "split", users, "user_id, item_id, rating, timestamp", "fold = 'train'")
    events = _for_users(store, EVENTS_TABLE, users, "user_id, item_id, event_type, value, timestamp")
    frames = [train] if len(train) else []
    if len(events):
        rating = np.where(events["event_type"] == "rating", events["value"], implicit_rating)
        frames.append(events.assign(rating=rating)[["user_id", "item_id", "rating", "timestamp"]])
    if not frames:
        return pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp"])
    frame = pd.concat(frames, ignore_index=True).astype(
        {"user_id": str, "item_id": str, "rating": "float64", "timestamp": "int64"})
    return frame.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")


def _replace_users(store: Warehouse, table: str, users: list[str], frame: pd.DataFrame) -> None:
    with store.connect() as conn:
        conn.register("incoming", frame)
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
        conn.execute(f"DELETE FROM {table} WHERE list_contains(?, user_id)", [users])
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        conn.execute("COMMIT")


def refresh_user_embeddings(
    store: Warehouse, users: list[str], profile_weight: float, half_life_days: float,
    implicit_rating: float = IMPLICIT_RATING, result: RefreshResult | None = None,
) -> pd.DataFrame:
    """Recompute and store the users' interest vectors; returns (user_id, model, embedding)."""
    result = result or RefreshResult(users)
    empty = pd.DataFrame(columns=["user_id", "model", "embedding"])
    if not store.has_table("item_embeddings"):
        result.notes.append("no item_embeddings yet: materialize the pipeline first")
        return empty
    items = store.query("SELECT item_id, model, embedding FROM item_embeddings")
    model = str(items["model"].iloc[0])
    interactions = user_interactions(store, users, implicit_rating)
    interactions = interactions[interactions["item_id"].isin(items["item_id"])]
    if interactions.empty:
        result.notes.append("no interactions with embedded items for these users")
        return empty
    data = InteractionData.from_split(interactions.assign(fold="train"))
    item_vectors = align(data.item_ids, items[items["item_id"].isin(data.item_ids)], "item_id", "items")
    profiles = np.zeros((data.n_users, item_vectors.shape[1]), dtype=np.float32)
    if store.has_table("user_texts") and store.has_table("embedding_cache"):
        cached = store.query(
            "SELECT t.user_id, c.embedding FROM user_texts t JOIN embedding_cache c "
            "ON c.text_hash = t.text_hash AND c.model = ? WHERE list_contains(?, t.user_id)", [model, users])
        cached = cached.drop_duplicates("user_id")
        if len(cached):
            positions = pd.Index(data.user_ids).get_indexer(cached["user_id"].astype(str))
            profiles[positions[positions >= 0]] = np.stack(cached["embedding"].to_numpy())[positions >= 0]
    vectors = user_interest_vectors(data, item_vectors, profiles, profile_weight=profile_weight,
                                    half_life_days=half_life_days)
    usable = np.linalg.norm(vectors, axis=1) > 0
    frame = pd.DataFrame({"user_id": data.user_ids[usable], "model": model, "embedding": list(vectors[usable])})
    if len(frame):
        _replace_users(store, "user_embeddings", frame["user_id"].tolist(), frame)
    result.embedded = frame["user_id"].tolist()
    return frame


def refresh_recommendations(
    store: Warehouse, users: list[str], champion: Ranker, user_vectors: pd.DataFrame, k: int,
    result: RefreshResult | None = None,
) -> pd.DataFrame:
    """Re-rank the users with the champion and store their lists; returns (ranker, user_id, rank, item_id, score)."""
    result = result or RefreshResult(users)
    item_index = pd.Index(champion.item_ids_)
    if isinstance(champion, LLMContentRanker):
        known = user_vectors[user_vectors["user_id"].isin(users)]
        scored_users = known["user_id"].astype(str).to_numpy()
        scores = (np.stack(known["embedding"].to_numpy()).astype(np.float32) @ champion.item_vectors_.T
                  if len(known) else np.zeros((0, len(item_index)), np.float32))
    else:
        positions = pd.Index(champion.user_ids_).get_indexer(users)
        scored_users = np.array(users, dtype=object)[positions >= 0]
        scores = champion.score(positions[positions >= 0]) if (positions >= 0).any() else np.zeros((0, len(item_index)))
    result.waiting = sorted(set(users) - set(scored_users))
    if not len(scored_users):
        return pd.DataFrame(columns=["ranker", "user_id", "rank", "item_id", "score"])
    seen = pd.concat([
        _for_users(store, "split", list(scored_users), "user_id, item_id"),
        _for_users(store, EVENTS_TABLE, list(scored_users), "user_id, item_id"),
    ], ignore_index=True)
    if len(seen):
        rows = pd.Index(scored_users).get_indexer(seen["user_id"].astype(str))
        cols = item_index.get_indexer(seen["item_id"].astype(str))
        ok = (rows >= 0) & (cols >= 0)
        scores[rows[ok], cols[ok]] = -np.inf
    top = top_k(scores, k)
    top_scores = np.take_along_axis(scores, top, axis=1)
    frame = pd.DataFrame({
        "ranker": champion.name,
        "user_id": np.repeat(scored_users, top.shape[1]),
        "rank": np.tile(np.arange(1, top.shape[1] + 1), len(scored_users)),
        "item_id": champion.item_ids_[top.ravel()],
        "score": top_scores.ravel().astype(np.float32),
    })
    frame = frame[np.isfinite(frame["score"])].reset_index(drop=True)
    _replace_users(store, "recommendations", list(scored_users), frame)
    result.recommended = list(scored_users)
    return frame
