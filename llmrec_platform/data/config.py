"""Dataset config files: map your own files onto the platform's schema (no Dagster).

A YAML file (README, "Bring your own data") names the interactions, items, and optionally users and
user texts (reviews, search queries): their files (CSV, Parquet or JSON Lines; a path or a glob, relative
paths resolved against the config file's folder) and which column holds what. `load_config` checks the
keys and says which one is wrong; `load_config_dataset` reads the files through DuckDB (`readers`),
validates every row like the GroupLens loaders do (bad rows to the quarantine, with file, row, field and
reason) and returns the canonical `Dataset`.

The same mapping can be given inline (`specs.InlineConfig`, e.g. the `dataset` resource's `inline` run
config): `load_config` parses it with the same checks; its relative paths resolve against its `base_dir`
(default: the working directory when it is given), and its errors name the key path instead of a file.

Ratings on a scale other than 0.5..5 (`rating_range`) are mapped linearly onto 1..5, so the protocol's
"rating >= 3" keeps the upper half of any scale; implicit feedback (no `rating`) counts as IMPLICIT_RATING.
Without `timestamp`, every interaction gets NO_TIMESTAMP (one partition) and the temporal protocol is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from llmrec_platform.data.readers import (
    ROW_FILE,
    ROW_NUMBER,
    ReadError,
    ReadResult,
    concat_quarantine,
    expand,
    quarantine_records,
    read_files,
)
from llmrec_platform.data.specs import (
    DEFAULT_ERROR_BUDGET,
    ITEMS_COLUMNS,
    RATING_RANGE,
    USERS_COLUMNS,
    Dataset,
    DatasetError,
    InlineConfig,
    Source,
    is_config_path,
)
from llmrec_platform.data.text import normalize_text
from llmrec_platform.data.validation import check_ratings, finish_items, parse_timestamps, tag_parts, validate_ratings

IMPLICIT_RATING = 4.0  # what an interaction without a rating counts as (as the events refresh does)
NO_TIMESTAMP = 946_684_800  # 2000-01-01 UTC: the timestamp of interactions when the config has none
MAX_USER_TEXTS = 20  # most recent reviews / queries joined into a user's profile text
_CATEGORY_SPLIT = re.compile(r"\s*[|;,]\s*")

_FILE_KEYS = {"path", "format", "options"}
_SECTIONS = {
    "interactions": ({"user", "item"}, {"rating", "rating_range", "timestamp"}),
    "items": ({"id"}, {"text", "categories", "title", "year"}),
    "users": ({"id"}, {"text"}),
    "user_texts": ({"user", "text"}, {"timestamp", "weight"}),
}
_TOP_KEYS = {"name", "interactions", "items", "users", "user_texts", "encoder", "error_budget", "privacy"}


class ConfigError(DatasetError):
    """The config is wrong; the message names the file (or the inline config's key path) and the key."""


@dataclass(frozen=True)
class Section:
    key: str  # interactions / items / users / user_texts
    path: str  # absolute path or glob
    format: str | None
    options: dict
    columns: dict  # the section's other keys


@dataclass(frozen=True)
class DatasetConfig:
    file: str  # the config file's absolute path, or how an inline config is named (InlineConfig.where)
    name: str
    interactions: Section
    items: Section
    users: Section | None = None
    user_texts: Section | None = None
    encoder: str | None = None
    user_text_weight: float | None = None  # user_texts.weight: the user's own text in the interest vector
    error_budget: float = DEFAULT_ERROR_BUDGET
    sections: tuple = field(default=())
    pseudonymize: bool = False  # privacy.pseudonymize: user ids become keyed pseudonyms (data.privacy)


def load_config(source: str | Path | InlineConfig) -> DatasetConfig:
    """Parse and check a dataset config file or an inline one (every problem names the file and the key)."""
    if isinstance(source, InlineConfig):
        return _parse(source.mapping(), source.where, Path(source.base_dir), default_name="inline")
    path = Path(source).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return _parse(raw, str(path), path.parent, default_name=path.stem)


def _parse(raw, where: str, folder: Path, default_name: str) -> DatasetConfig:
    """The checks shared by a config file and an inline config; relative paths resolve against `folder`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys ({', '.join(sorted(_TOP_KEYS))})")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; the keys are {sorted(_TOP_KEYS)}")
    for required in ("interactions", "items"):
        if required not in raw:
            raise ConfigError(f"{where}: the key {required!r} is required")
    sections = {key: _section(where, folder, key, raw[key]) for key in _SECTIONS if raw.get(key) is not None}
    budget = raw.get("error_budget", DEFAULT_ERROR_BUDGET)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 <= budget <= 1:
        raise ConfigError(f"{where}: error_budget = {budget!r}: expected a share between 0 and 1, e.g. 0.01")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name = {name!r}: expected a non-empty string")
    encoder = _encoder(where, folder, raw.get("encoder"))
    user_text_weight = _user_text_weight(where, raw.get("user_texts"))
    privacy = raw.get("privacy") or {}
    if not isinstance(privacy, dict) or set(privacy) - {"pseudonymize"} or not isinstance(
            privacy.get("pseudonymize", False), bool):
        raise ConfigError(f"{where}: privacy = {privacy!r}: expected {{pseudonymize: true}} or {{pseudonymize: false}}")
    rng = sections["interactions"].columns.get("rating_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in rng) and rng[0] < rng[1]):
        raise ConfigError(f"{where}: interactions.rating_range = {rng!r}: expected [low, high], e.g. [1, 5]")
    return DatasetConfig(file=where, name=name.strip(), interactions=sections["interactions"], items=sections["items"],
                         users=sections.get("users"), user_texts=sections.get("user_texts"), encoder=encoder,
                         user_text_weight=user_text_weight,
                         error_budget=float(budget), sections=tuple(sections.values()),
                         pseudonymize=privacy.get("pseudonymize", False))


def _section(where: str, folder: Path, key: str, raw) -> Section:
    required, optional = _SECTIONS[key]
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {key} must be a mapping with path, {', '.join(sorted(required))}")
    unknown = sorted(set(raw) - required - optional - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {[f'{key}.{u}' for u in unknown]}; {key} accepts "
                          f"{sorted(required | optional | _FILE_KEYS)}")
    for name in sorted(required | {"path"}):
        if name not in raw or raw[name] in (None, "", []):
            raise ConfigError(f"{where}: {key}.{name} is required")
    for name, value in raw.items():
        if name in ("options", "rating_range", "weight"):
            continue
        if name == "text":
            ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
            if not ok:
                raise ConfigError(f"{where}: {key}.text = {value!r}: expected a column name or a list of them")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: {key}.{name} = {value!r}: expected a string")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: {key}.options must be a mapping, e.g. {{delim: ';', encoding: latin-1}}")
    fmt = raw.get("format")
    if fmt is not None and fmt not in ("csv", "parquet", "jsonl"):
        raise ConfigError(f"{where}: {key}.format = {fmt!r}: use csv, parquet or jsonl")
    pattern = Path(raw["path"]).expanduser()
    pattern = pattern if pattern.is_absolute() else folder / pattern
    columns = {k: v for k, v in raw.items() if k not in _FILE_KEYS and k != "weight"}
    return Section(key, str(pattern), fmt, dict(options), columns)


def _encoder(where: str, folder: Path, value) -> str | None:
    """The registry entry or model folder `encoder:` names (llmrec_platform.encoders.models.ENCODERS)."""
    from llmrec_platform.encoders.models import EncoderError, encoder_choices, resolve_encoder

    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: encoder = {value!r}: use {encoder_choices()}")
    try:
        return resolve_encoder(value, folder)
    except EncoderError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _user_text_weight(where: str, raw) -> float | None:
    value = raw.get("weight") if isinstance(raw, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: user_texts.weight = {value!r}: expected a weight between 0 and 1, e.g. 0.3")
    return float(value)


def _config_of(source: Source) -> DatasetConfig | None:
    """The config `source` is (None: not a config, or a broken one: the load reports that)."""
    if not is_config_path(source):
        return None
    try:
        return load_config(source)
    except DatasetError:
        return None


def config_files(source: str | Path | InlineConfig) -> list[Path]:
    """Every data file the config names (to notice when one changes); none for a broken config."""
    config = _config_of(source if isinstance(source, InlineConfig) else str(source))
    if config is None:
        return []
    files = []
    for section in config.sections:
        try:
            files += expand(section.path, f"{section.key}.path")
        except ReadError:
            continue
    return files


def config_user_text_weight(source: Source) -> float | None:
    """The `user_texts.weight` of a dataset config (None: not a config, none given, or a broken config)."""
    config = _config_of(source)
    return None if config is None else config.user_text_weight


def config_encoder(source: Source) -> str | None:
    """The encoder a dataset config asks for (None: not a config, none given, or a broken config: the
    load reports that)."""
    config = _config_of(source)
    return None if config is None else config.encoder


def config_pseudonymize(source: Source) -> bool:
    """Whether a dataset config asks for pseudonymized user ids (False for any other source or a broken
    config: the load reports that)."""
    config = _config_of(source)
    return config is not None and config.pseudonymize


def config_error_budget(source: Source) -> float:
    """The error budget of a dataset config, or the default for any other source."""
    config = _config_of(source)
    return DEFAULT_ERROR_BUDGET if config is None else config.error_budget


# --- loading ---------------------------------------------------------------------------------------

def _read(config: DatasetConfig, section: Section, allow_empty: bool = False) -> ReadResult:
    try:
        result = read_files(section.path, what=f"{config.file}: {section.key}.path", fmt=section.format,
                            options=section.options, allow_empty=allow_empty)
    except ReadError as exc:
        raise ConfigError(str(exc)) from exc
    names = result.table.column_names
    if result.table.num_rows or result.rows:
        for key, value in section.columns.items():
            if key == "rating_range":
                continue
            for column in [value] if isinstance(value, str) else value:
                if column not in names:
                    found = [c for c in names if not c.startswith("_")]
                    raise ConfigError(f"{config.file}: {section.key}.{key} = {column!r} is not a column of "
                                      f"{', '.join(result.files)} (columns: {found})")
    return result


def _ids(values: pd.Series) -> pd.Series:
    """Ids as strings: integral numbers without '.0', text stripped, missing as NA."""
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & (values == np.floor(values.fillna(0)))
        out = values.astype("string")
        out[whole] = values[whole].astype("int64").astype("string")
        return out
    return values.astype("string").str.strip()


def _joined(frame: pd.DataFrame, columns, sep: str = ". ") -> pd.Series:
    columns = [columns] if isinstance(columns, str) else list(columns)
    parts = [frame[c].map(normalize_text) for c in columns]
    return pd.Series([sep.join(p for p in row if p) for row in zip(*parts, strict=True)], index=frame.index, dtype=object)


def _categories(value) -> list[str]:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return [normalize_text(v) for v in value if normalize_text(v)]
    return [v for v in (normalize_text(x) for x in _CATEGORY_SPLIT.split(str(value))) if v]


def load_config_dataset(config: DatasetConfig, name: str | None = None,
                        valid_range: tuple[int, int] | None = None) -> Dataset:
    """Read and validate every file of `config` into a canonical Dataset (bad rows quarantined)."""
    inter = config.interactions.columns
    items_spec = config.items.columns

    # Items: id, the text fields joined, categories; an optional title (default: the first text field).
    items_read = _read(config, config.items)
    if not items_read.table.num_rows:
        raise ConfigError(f"{config.file}: items.path: no item rows in {', '.join(items_read.files) or 'the files'}")
    raw_items = items_read.frame
    text_columns = items_spec.get("text") or []
    text_columns = [text_columns] if isinstance(text_columns, str) else text_columns
    title_column = items_spec.get("title") or (text_columns[0] if text_columns else items_spec["id"])
    items_frame = pd.DataFrame({
        "item_id": _ids(raw_items[items_spec["id"]]),
        "title": raw_items[title_column].map(normalize_text),
        "year": raw_items[items_spec["year"]] if "year" in items_spec else pd.NA,
        "genres": raw_items[items_spec["categories"]].map(_categories) if "categories" in items_spec
        else [[] for _ in range(len(raw_items))],
        "text": _joined(raw_items, text_columns) if text_columns else raw_items[title_column].map(normalize_text),
        ROW_FILE: raw_items[ROW_FILE], ROW_NUMBER: raw_items[ROW_NUMBER],
    })
    items, items_q = finish_items(items_frame)
    if items.empty:
        raise ConfigError(f"{config.file}: items: no valid item rows")

    # Interactions.
    inter_read = _read(config, config.interactions)
    raw = inter_read.table
    if not raw.num_rows and not len(inter_read.quarantine):
        raise ConfigError(f"{config.file}: interactions.path: no interaction rows in {', '.join(inter_read.files)}")
    rating_range = tuple(inter.get("rating_range") or RATING_RANGE)
    columns = {"user_id": inter["user"], "item_id": inter["item"], "rating": inter.get("rating", IMPLICIT_RATING),
               "timestamp": inter.get("timestamp", NO_TIMESTAMP)}
    if not raw.num_rows:  # every row was rejected by the reader: no columns to check
        raw = pa.table({name: pa.array([], pa.string()) for name in columns.values() if isinstance(name, str)})
        raw = raw.append_column(ROW_FILE, pa.array([], pa.string())).append_column(ROW_NUMBER, pa.array([], pa.int64()))
    ratings, ratings_q = validate_ratings(raw, source_file=config.interactions.path, columns=columns,
                                          rating_range=rating_range if "rating" in inter else RATING_RANGE)
    ratings, checked_q = check_ratings(ratings, items, valid_range, items_source="items.path")
    low, high = rating_range
    if "rating" in inter and (low < RATING_RANGE[0] or high > RATING_RANGE[1]):  # 1 + 4 (r - low) / (high - low)
        scaled = pc.add(1.0, pc.divide(pc.multiply(4.0, pc.subtract(ratings["rating"], float(low))), float(high - low)))
        ratings = ratings.set_column(ratings.column_names.index("rating"), "rating", scaled)

    # Users (optional): id and profile text; user texts (optional) join the profile, most recent first.
    users = pd.DataFrame(columns=USERS_COLUMNS + ["age_group", "text"])
    users_read, users_q = None, None
    if config.users is not None:
        users_read = _read(config, config.users, allow_empty=True)
        frame = users_read.frame
        if len(frame):
            spec = config.users.columns
            users_raw = pd.DataFrame({
                "user_id": _ids(frame[spec["id"]]),
                "text": _joined(frame, spec["text"]) if "text" in spec else "",
                ROW_FILE: frame[ROW_FILE], ROW_NUMBER: frame[ROW_NUMBER],
            })
            users, users_q = _finish_users(users_raw)
    texts_read, texts_q = None, None
    if config.user_texts is not None:
        texts_read = _read(config, config.user_texts, allow_empty=True)
        users, texts_q = _with_user_texts(users, texts_read.frame, config.user_texts.columns)

    quarantine = tag_parts(
        ratings=[inter_read.quarantine, ratings_q, checked_q], items=[items_read.quarantine, items_q],
        users=[users_read.quarantine if users_read else None, users_q],
        user_texts=[texts_read.quarantine if texts_read else None, texts_q],
    )
    if not ratings.num_rows:
        raise ConfigError(f"{config.file}: interactions: no valid rows (all {sum(inter_read.rows.values())} quarantined)")
    rows = {"ratings": inter_read.rows, "items": items_read.rows}
    if users_read is not None:
        rows["users"] = users_read.rows
    if texts_read is not None:
        rows["user_texts"] = texts_read.rows
    notes = inter_read.notes + items_read.notes + (users_read.notes if users_read else []) + \
        (texts_read.notes if texts_read else [])
    return Dataset(name=name or config.name, ratings_table=ratings, items=items[ITEMS_COLUMNS + ["text"]], users=users,
                   quarantine=quarantine, rows=rows, notes=notes, error_budget=config.error_budget,
                   has_timestamps="timestamp" in inter, encoder=config.encoder, rating_range=rating_range,
                   pseudonymize=config.pseudonymize)


def _finish_users(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = frame["user_id"]
    empty = ids.isna() | (ids == "")
    repeated = ids.duplicated(keep="first") & ~empty
    rejects = []
    for mask, reason in ((empty, "empty user_id"), (repeated, "repeated user_id: the user is already defined on an "
                                                              "earlier row")):
        if mask.any():
            rows = frame[mask]
            rejects.append(quarantine_records(rows[ROW_FILE].to_numpy(), rows[ROW_NUMBER].to_numpy(), "user_id",
                                              reason, rows["user_id"].astype(str).to_numpy()))
    kept = frame[~(empty | repeated)].reset_index(drop=True)
    return _users_frame(kept["user_id"].astype(str), kept["text"]), concat_quarantine(rejects)


def _users_frame(ids: pd.Series, texts: pd.Series) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({
        "user_id": ids.to_numpy(), "age": pd.array([pd.NA] * n, dtype="Int64"), "gender": [""] * n,
        "occupation": [""] * n, "zip_code": [""] * n, "age_group": ["unknown"] * n, "text": texts.to_numpy(),
    })


def _with_user_texts(users: pd.DataFrame, frame: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users whose profile text is followed by their most recent reviews / queries (users only known from
    these texts are added)."""
    if not len(frame):
        return users, None
    user = _ids(frame[spec["user"]])
    text = frame[spec["text"]].map(normalize_text)
    stamp = parse_timestamps(frame[spec["timestamp"]]) if "timestamp" in spec else pd.Series(0, index=frame.index)
    bad_user = user.isna() | (user == "")
    bad_text = (text == "") & ~bad_user
    rejects = []
    for mask, field_name, reason in ((bad_user, spec["user"], "empty user id"), (bad_text, spec["text"], "empty text")):
        if mask.any():
            rows = frame[mask]
            rejects.append(quarantine_records(rows[ROW_FILE].to_numpy(), rows[ROW_NUMBER].to_numpy(), field_name,
                                              reason, text[mask].to_numpy()))
    ok = ~(bad_user | bad_text)
    texts = pd.DataFrame({"user_id": user[ok].astype(str), "text": text[ok], "ts": stamp[ok].fillna(0)})
    texts = texts.sort_values(["user_id", "ts"], ascending=[True, False], kind="stable")
    joined = texts.groupby("user_id", sort=True)["text"].agg(lambda t: " ".join(list(t)[:MAX_USER_TEXTS]))
    users = users.copy()
    known = users["user_id"].isin(joined.index)
    users.loc[known, "text"] = [
        f"{p} {joined[u]}".strip() for p, u in zip(users.loc[known, "text"].fillna(""), users.loc[known, "user_id"],
                                                   strict=True)]
    new_ids = joined.index[~joined.index.isin(users["user_id"])]
    if len(new_ids):
        users = pd.concat([users, _users_frame(pd.Series(new_ids), pd.Series(joined[new_ids].to_numpy()))],
                          ignore_index=True)
    return users, concat_quarantine(rejects)
