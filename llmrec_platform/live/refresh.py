"""Refresh the users touched by new events, between nightly retrains (no Dagster).

For a batch of events from the `EventLog`:

1. `record_events` upserts them (by event_id) into the warehouse table `events`;
2. `refresh_user_embeddings` recomputes each affected user's interest vector with the *same* function as
   the `user_embeddings` asset (`user_interest_vectors`), over the user's training rows of `split` plus
   *all* of the user's events so far (a `rating` event counts with its value as the rating, any other
   event type as the rating its weight says, `event_rating`, with LLMREC_EVENT_WEIGHTS), using the stored `item_embeddings`
   and the cached profile-text embedding; it replaces those users' rows of `user_embeddings`;
3. `refresh_recommendations` re-ranks those users with the published champion, whichever ranker it is,
   through `score_query` on the same history (training rows plus all events: fold-in), so new events change
   the list at once, and replaces their rows of `recommendations`. A user who exists only in events is
   ranked from the events; one with no usable history gets the champion's cold-start list.

Because vectors are recomputed from train + all events (not incrementally), a refresh is idempotent and
replaying a batch gives the same tables. The nightly retrain rebuilds both tables from `split`; events
reach training when they are landed as ratings (LLMREC_HOME/landing/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.vectors import align, user_interest_vectors
from llmrec_platform.live.events import EVENT_COLUMNS, EventBatch, event_rating
from llmrec_platform.rankers.base import Interaction, Query, Ranker, excluded_items, top_k_frame
from llmrec_platform.storage.warehouse import Warehouse

EVENTS_TABLE = "events"


@dataclass
class RefreshResult:
    users: list[str]
    embedded: list[str] = field(default_factory=list)
    recommended: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # users without a list until a champion is published
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
        conn.execute(f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN IF NOT EXISTS request_id VARCHAR")
        conn.execute(f"DELETE FROM {EVENTS_TABLE} WHERE event_id IN (SELECT event_id FROM incoming)")
        conn.execute(f"INSERT INTO {EVENTS_TABLE} BY NAME SELECT {', '.join(EVENT_COLUMNS)}, "
                     "CAST(request_id AS VARCHAR) AS request_id FROM incoming")
        conn.execute("COMMIT")
    return len(frame)


def _for_users(store: Warehouse, table: str, users: list[str], columns: str = "*", where: str = "") -> pd.DataFrame:
    if not store.has_table(table):
        return pd.DataFrame()
    extra = f" AND {where}" if where else ""
    return store.query(f"SELECT {columns} FROM {table} WHERE list_contains(?, user_id){extra}", [users])


def user_interactions(store: Warehouse, users: list[str], event_weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Training rows of `split` plus all events of the users: one row per user-item (the latest)."""
    train = _for_users(store, "split", users, "user_id, item_id, rating, timestamp", "fold = 'train'")
    events = _for_users(store, EVENTS_TABLE, users, "user_id, item_id, event_type, value, timestamp")
    frames = [train] if len(train) else []
    if len(events):
        rating = [event_rating(t, v, event_weights) for t, v in zip(events["event_type"], events["value"], strict=True)]
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
    event_weights: Mapping[str, float] | None = None, result: RefreshResult | None = None,
) -> pd.DataFrame:
    """Recompute and store the users' interest vectors; returns (user_id, model, embedding)."""
    result = result or RefreshResult(users)
    empty = pd.DataFrame(columns=["user_id", "model", "embedding"])
    if not store.has_table("item_embeddings"):
        result.notes.append("no item_embeddings yet: materialize the pipeline first")
        return empty
    items = store.query("SELECT item_id, model, embedding FROM item_embeddings")
    model = str(items["model"].iloc[0])
    interactions = user_interactions(store, users, event_weights)
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
    vectors = user_interest_vectors(data.train, data.train_timestamps, item_vectors, profiles, profile_weight=profile_weight,
                                    half_life_days=half_life_days)
    usable = np.linalg.norm(vectors, axis=1) > 0
    frame = pd.DataFrame({"user_id": data.user_ids[usable], "model": model, "embedding": list(vectors[usable])})
    if len(frame):
        _replace_users(store, "user_embeddings", frame["user_id"].tolist(), frame)
    result.embedded = frame["user_id"].tolist()
    return frame


def refresh_recommendations(
    store: Warehouse, users: list[str], champion: Ranker, k: int, event_weights: Mapping[str, float] | None = None,
    result: RefreshResult | None = None,
) -> pd.DataFrame:
    """Re-rank the users with the champion, whichever ranker it is, from their training rows plus all their
    events (`score_query`: fold-in), and store their lists; returns (ranker, user_id, rank, item_id, score).
    A list never shows an item of the user's history or of any fold of `split` (`excluded_items`)."""
    result = result or RefreshResult(users)
    history = user_interactions(store, users, event_weights)
    by_user = {user: frame for user, frame in history.groupby("user_id", sort=False)}
    queries = [Query(user_id=user, history=tuple(
        Interaction(item, rating, timestamp) for item, rating, timestamp in
        by_user[user][["item_id", "rating", "timestamp"]].itertuples(index=False, name=None)) if user in by_user else ())
        for user in users]
    scores = np.stack([champion.score_query(query) for query in queries]) if queries else np.zeros((0, 0))
    split_rows = _for_users(store, "split", users, "user_id, item_id")
    folds = sp.csr_matrix((len(users), len(champion.item_ids_)), dtype=bool)
    if len(split_rows):
        rows = pd.Index(users).get_indexer(split_rows["user_id"].astype(str))
        cols = pd.Index(champion.item_ids_).get_indexer(split_rows["item_id"].astype(str))
        ok = (rows >= 0) & (cols >= 0)
        folds = sp.csr_matrix((np.ones(ok.sum(), dtype=bool), (rows[ok], cols[ok])), shape=folds.shape)
    excluded = excluded_items(champion.histories(queries).ratings, folds)
    frame = top_k_frame(scores, excluded, k, champion.item_ids_) if queries else pd.DataFrame(columns=["row"])
    frame = frame.assign(ranker=champion.name, user_id=np.array(users, dtype=object)[frame.pop("row").to_numpy()])
    frame = frame[["ranker", "user_id", "rank", "item_id", "score"]]
    if users:
        _replace_users(store, "recommendations", users, frame)
    result.recommended = list(users)
    return frame
