"""Data-quality rules behind the asset checks (no Dagster): each returns a `CheckOutcome`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from llmrec_platform.data.duck import ORDER, register, session
from llmrec_platform.data.readers import frame_table
from llmrec_platform.data.specs import RATING_KEY, RATING_RANGE, RATINGS_COLUMNS
from llmrec_platform.encoders.models import encoder_dim, model_path

NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _outcome(problems: list[str], metadata: dict, passed: str) -> CheckOutcome:
    """Failed with the problems joined, or passed with `passed` as the description."""
    if problems:
        return CheckOutcome(False, "; ".join(problems), metadata)
    return CheckOutcome(True, passed, metadata)


def _arrow(frame: pa.Table | pd.DataFrame) -> pa.Table:
    return frame if isinstance(frame, pa.Table) else frame_table(frame)


def _is_string(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def ratings_schema(ratings: pa.Table | pd.DataFrame) -> CheckOutcome:
    """The canonical columns first (string ids, float rating, integer epoch-seconds timestamp), no nulls.
    Tag columns may follow (the warehouse adds `dataset`). Reads the Arrow schema and null counts only."""
    table = _arrow(ratings)
    problems = []
    if table.column_names[:len(RATINGS_COLUMNS)] != RATINGS_COLUMNS:
        problems.append(f"columns {table.column_names} do not start with {RATINGS_COLUMNS}")
    else:
        for column in ("user_id", "item_id"):
            if not _is_string(table.schema.field(column).type):
                problems.append(f"{column} is {table.schema.field(column).type}, expected strings")
        if not pa.types.is_floating(table.schema.field("rating").type):
            problems.append(f"rating is {table.schema.field('rating').type}, expected float")
        if not pa.types.is_integer(table.schema.field("timestamp").type):
            problems.append(f"timestamp is {table.schema.field('timestamp').type}, expected integer epoch seconds")
        nulls = {c: table.column(c).null_count for c in table.column_names if table.column(c).null_count}
        if nulls:
            problems.append(f"null values {nulls}")
    metadata = {"rows": table.num_rows, "dtypes": json.dumps({f.name: str(f.type) for f in table.schema})}
    return _outcome(problems, metadata, f"{table.num_rows} rows with the canonical schema")


def ratings_ranges(ratings: pa.Table | pd.DataFrame, window: tuple[int, int] | None = None) -> CheckOutcome:
    """Ratings within [0.5, 5]; timestamps non-negative and, given a window, inside [start, end)."""
    low, high = RATING_RANGE
    start, end = window or (None, None)
    with session() as conn:
        rows = register(conn, "ratings_in", _arrow(ratings), ["rating", "timestamp"])
        bad_rating, bad_time, outside, min_rating, max_rating = conn.execute("""
            SELECT count(*) FILTER (WHERE rating IS NULL OR NOT rating BETWEEN $1 AND $2),
                   count(*) FILTER (WHERE timestamp < 0),
                   count(*) FILTER (WHERE $3 IS NOT NULL AND (timestamp IS NULL OR timestamp < $3 OR timestamp >= $4)),
                   coalesce(min(rating), 0.0), coalesce(max(rating), 0.0)
            FROM ratings_in""", [float(low), float(high), start, end]).fetchone()
    metadata = {
        "rows": rows, "ratings_out_of_range": int(bad_rating), "negative_timestamps": int(bad_time),
        "timestamps_outside_window": int(outside), "min_rating": float(min_rating), "max_rating": float(max_rating),
    }
    if bad_rating or bad_time or outside:
        return CheckOutcome(False, f"{bad_rating} ratings outside [{low}, {high}], {bad_time} negative timestamps, "
                                   f"{outside} timestamps outside the partition window", metadata)
    return CheckOutcome(True, f"all {rows} ratings in [{low}, {high}] with valid timestamps", metadata)


def ratings_unique_keys(ratings: pa.Table | pd.DataFrame) -> CheckOutcome:
    """(user_id, item_id, timestamp) identifies a rating: no key may appear twice (counted in DuckDB; the example
    is the repeated key met first in row order)."""
    key = ", ".join(RATING_KEY)
    with session() as conn:
        rows = register(conn, "ratings_in", _arrow(ratings), RATING_KEY)
        n, example = conn.execute(f"""
            WITH repeated AS (SELECT {key}, min({ORDER}) AS first FROM ratings_in GROUP BY ALL HAVING count(*) > 1)
            SELECT count(*), arg_min(struct_pack({key}), first) FROM repeated""").fetchone()
    metadata = {"rows": rows, "duplicated_keys": int(n)}
    if n:
        return CheckOutcome(False, f"{n} (user_id, item_id, timestamp) keys appear more than once, e.g. "
                                   f"{example['user_id']}/{example['item_id']}/{example['timestamp']}", metadata)
    return CheckOutcome(True, f"{rows} unique (user_id, item_id, timestamp) keys", metadata)


def expected_dim(model: str) -> int:
    """Output dimension of a registry encoder or a sentence-transformers folder, read from its config (the
    model is not loaded)."""
    if (registered := encoder_dim(model)) is not None:
        return registered
    folder = model_path(model)
    dim = None
    modules_file = folder / "modules.json"
    if modules_file.exists():
        for module in json.loads(modules_file.read_text()):
            config = folder / module.get("path", "") / "config.json"
            kind = module.get("type", "")
            if kind.endswith("Pooling") and config.exists():
                dim = json.loads(config.read_text())["word_embedding_dimension"]
            elif kind.endswith("Dense") and config.exists():
                dim = json.loads(config.read_text())["out_features"]
    if dim is None:
        dim = json.loads((folder / "config.json").read_text())["hidden_size"]
    return int(dim)


def embeddings_valid(frame: pd.DataFrame, dim: int, id_column: str = "item_id") -> CheckOutcome:
    """Every vector has the model's dimension, finite values and unit norm; ids are unique."""
    lengths = frame["embedding"].map(len).to_numpy() if len(frame) else np.zeros(0, int)
    wrong_dim = int((lengths != dim).sum())
    metadata = {"rows": len(frame), "expected_dim": dim, "wrong_dim": wrong_dim}
    if len(frame) == 0:
        return CheckOutcome(False, "no embeddings", metadata)
    if wrong_dim:
        found = sorted(set(lengths.tolist()) - {dim})
        return CheckOutcome(False, f"{wrong_dim} vectors do not have the model's dimension {dim} (found {found})", metadata)
    matrix = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    finite = np.isfinite(matrix).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(matrix), matrix, 0.0), axis=1)
    off_norm = int((np.abs(norms - 1.0) > NORM_TOLERANCE)[finite].sum())
    duplicate_ids = int(frame[id_column].duplicated().sum())
    metadata.update({"non_finite": int((~finite).sum()), "not_unit_norm": off_norm,
                     "max_norm_error": float(np.abs(norms[finite] - 1.0).max()) if finite.any() else 0.0,
                     "duplicate_ids": duplicate_ids})
    problems = [f"{metadata['non_finite']} vectors with NaN/inf"] if metadata["non_finite"] else []
    if off_norm:
        problems.append(f"{off_norm} vectors whose norm differs from 1 by more than {NORM_TOLERANCE}")
    if duplicate_ids:
        problems.append(f"{duplicate_ids} repeated {id_column}s")
    return _outcome(problems, metadata, f"{len(frame)} finite unit-norm vectors of dimension {dim}")


def split_without_leakage(split: pa.Table | pd.DataFrame) -> CheckOutcome:
    """No user-item pair in two folds, and every user evaluated in valid/test has training history (in DuckDB)."""
    with session() as conn:
        rows = register(conn, "split_in", _arrow(split), ["user_id", "item_id", "fold"])
        pairs_in_many = conn.execute("SELECT count(*) FROM (SELECT 1 FROM split_in GROUP BY user_id, item_id "
                                     "HAVING count(DISTINCT fold) > 1)").fetchone()[0]
        no_history = [u for (u,) in conn.execute("""
            SELECT DISTINCT user_id FROM split_in WHERE fold IN ('valid', 'test')
            EXCEPT SELECT user_id FROM split_in WHERE fold = 'train' ORDER BY 1""").fetchall()]
        counts = dict(conn.execute("SELECT fold, count(*) FROM split_in GROUP BY fold").fetchall())
    metadata = {"rows": rows, "pairs_in_several_folds": int(pairs_in_many), "eval_users_without_train": len(no_history),
                **{f"{fold}_rows": int(counts.get(fold, 0)) for fold in ("train", "valid", "test")}}
    problems = []
    if pairs_in_many:
        problems.append(f"{pairs_in_many} user-item pairs appear in more than one fold")
    if no_history:
        problems.append(f"{len(no_history)} valid/test users have no training interactions (e.g. {no_history[:3]})")
    return _outcome(problems, metadata, "folds are disjoint and every evaluated user has training history")
