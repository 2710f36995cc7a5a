"""The durable items log: catalogue items added while serving (`POST /items`, a landed item file), no Dagster.

An item added live joins the catalogue without a retrain: it is encoded once on arrival (the server's query
encoder, the bundle's encoder) and appended, vector included, to `items.jsonl` next to the event log
(`<LLMREC_HOME>/events/items.jsonl`), one item per line, keys sorted:

    {"added_at":1700000000,"categories":["Animation"],"encoder":"all-MiniLM-L6-v2","item_id":"toy-2",
     "source":"POST /items","text":"…","title":"…","vector":[0.0123,…]}

`ItemLog` is an `EventLog` of items: the same append (exclusive `flock`, a torn last line terminated, fsync of
the file and, for a new file, of its folder), so an acknowledged item survives a crash. Storing the vector
means a replay needs no encoder and every process serves the very same vector. `CatalogueFollower` replays the
log into a live service (`LiveService.add_items`) on start and before every answer, as events are, so every
server process sees every process's items; the first line of an id wins (the bundle's catalogue wins over all).
A landed item file, CSV (with a header) or Parquet with the columns item_id, title, text and optionally
categories ("|"-separated), dropped into `<LLMREC_HOME>/landing/items/` (`llmrec add-items` ingests it:
`ingest_item_file`), is checked row by row like the offline files: an empty or repeated id, an id the catalogue
already holds, an empty title or text, a row the reader cannot parse go to the warehouse's `quarantine` table
(dataset `landing`, part `items`) with file, row, field and reason; the good rows are encoded and appended to
the items log, and the file moves to `landing/items/processed/` (or, unreadable or without a required column,
to `landing/items/rejected/` next to a reason file).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.data import quarantine as quarantine_table
from llmrec_platform.data.landing import PROCESSED, QUARANTINE_DATASET, REJECTED, SUFFIXES, LandingRejected, move
from llmrec_platform.data.readers import (
    QUARANTINE_COLUMNS,
    ROW_FILE,
    ROW_NUMBER,
    ReadError,
    concat_quarantine,
    quarantine_records,
    read_delimited,
    read_parquet,
)
from llmrec_platform.data.text import normalize_text
from llmrec_platform.data.validation import checked_ids
from llmrec_platform.live.events import EventLog

ITEMS_LOG_NAME = "items.jsonl"
LANDING_ITEMS = "items"  # <LLMREC_HOME>/landing/items/: item files to add to the live catalogue
ITEM_FILE_COLUMNS = ["item_id", "title", "text"]  # and optionally `categories`, "|"-separated
QUARANTINE_PART = "items"


class CatalogueError(ValueError):
    """An item is malformed (the message names the field)."""


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    title: str
    text: str
    categories: tuple[str, ...] = ()
    vector: tuple[float, ...] = ()  # the encoder's unit-norm embedding of `encoded_text()`
    encoder: str | None = None
    source: str = "POST /items"
    added_at: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        for name in ("item_id", "title", "text"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CatalogueError(f"{name}: must be a non-empty string")
        if any(not isinstance(c, str) or not c.strip() for c in self.categories):
            raise CatalogueError("categories: every category must be a non-empty string")
        if self.vector and not all(math.isfinite(v) for v in self.vector):
            raise CatalogueError("vector: every component must be a finite number")

    def encoded_text(self) -> str:
        """What the encoder reads: the title, the text and the categories, like a catalogue item's own text."""
        text = normalize_text(f"{self.title.strip().rstrip('.')}. {self.text}")
        if self.categories:
            text = f"{text.rstrip('.')}. Categories: {', '.join(self.categories)}."
        return text

    def with_vector(self, vector: np.ndarray, encoder: str | None) -> CatalogueItem:
        values = np.asarray(vector, dtype=np.float32).ravel()
        return CatalogueItem(self.item_id, self.title, self.text, self.categories,
                             tuple(float(v) for v in values), encoder, self.source, self.added_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> CatalogueItem:
        try:
            return cls(item_id=str(data["item_id"]), title=str(data["title"]), text=str(data["text"]),
                       categories=tuple(str(c) for c in data.get("categories") or ()),
                       vector=tuple(float(v) for v in data.get("vector") or ()), encoder=data.get("encoder"),
                       source=str(data.get("source", "")), added_at=int(data.get("added_at", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogueError(f"malformed item {str(data)[:200]}: {exc}") from exc


@dataclass
class ItemBatch:
    items: list[CatalogueItem]
    end: int  # byte offset after the last complete line read: the next offset
    malformed: list[str] = field(default_factory=list)


class ItemLog(EventLog):
    """The items log: `EventLog`'s durable append and size over `items.jsonl`; `read` parses items."""

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        self.path = self.folder / ITEMS_LOG_NAME

    def read(self, offset: int = 0) -> ItemBatch:  # type: ignore[override]  # items, not events
        """The complete items after byte `offset` (a line being written is left for the next read)."""
        if offset >= self.size():
            return ItemBatch([], offset)
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        items, malformed = [], []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                items.append(CatalogueItem.from_dict(json.loads(line)))
            except (json.JSONDecodeError, CatalogueError):
                malformed.append(line[:200])
        return ItemBatch(items, offset + len(complete), malformed)


class CatalogueFollower:
    """Replays the items log into a live service: `catch_up(service)` adds the items appended since the last
    call (by any process) that the service's catalogue does not hold yet."""

    def __init__(self, log: ItemLog):
        self.log = log
        self.offset = 0
        self.added = 0

    def catch_up(self, service) -> int:
        if self.log.size() == self.offset:
            return 0
        batch = self.log.read(self.offset)
        self.offset = batch.end
        if not batch.items:
            return 0
        dim = service.vectors.shape[1]
        items = batch.items  # `add_items` skips ids the catalogue holds: the first line of an id wins
        added = service.add_items([i.item_id for i in items], [i.title for i in items],
                                  [list(i.categories) for i in items], np.stack([item_vector(i, dim) for i in items]))
        self.added += added
        return added


def item_vector(item: CatalogueItem, dim: int) -> np.ndarray:
    """The item's unit-norm vector in a `dim`-wide space; zeros (no text evidence) when it was encoded by an
    encoder of another width (a bundle published with another encoder)."""
    vector = np.asarray(item.vector, dtype=np.float32)
    if vector.shape != (dim,):
        return np.zeros(dim, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def clean_categories(values: Iterable[str] | None) -> tuple[str, ...]:
    """Stripped, de-duplicated categories in their order (empty ones dropped)."""
    seen: dict[str, None] = {}
    for value in values or ():
        text = normalize_text(str(value))
        if text:
            seen.setdefault(text, None)
    return tuple(seen)


def encode_items(items: Sequence[CatalogueItem], encoder) -> list[CatalogueItem]:
    """The items with their vectors from `encoder` (a `TextEncoder`: `encode(texts) -> (matrix, stats)`)."""
    if not items:
        return []
    vectors, _ = encoder.encode([item.encoded_text() for item in items])
    name = getattr(encoder, "model_name", None)
    return [item.with_vector(vector, None if name is None else str(name)) for item, vector in zip(items, vectors,
                                                                                                strict=True)]


@dataclass
class ItemFileResult:
    file: str
    status: str  # "processed" or "rejected"
    destination: Path
    rows: int = 0
    added: int = 0
    quarantined: int = 0
    reason: str | None = None


def pending_item_files(landing_items: Path) -> list[Path]:
    """Complete item files waiting in `landing/items/` (temporary names and sub-folders ignored)."""
    if not landing_items.is_dir():
        return []
    return [p for p in sorted(landing_items.iterdir()) if p.is_file() and not p.name.startswith(".")
            and not p.name.endswith((".tmp", ".part")) and p.suffix.lower() in SUFFIXES]


def read_item_file(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows (ITEM_FILE_COLUMNS, categories, `_file`, `_row`) and the rows the reader itself rejected."""
    try:
        result = read_parquet(path) if path.suffix.lower() == ".parquet" else read_delimited(path)
    except ReadError as exc:
        raise LandingRejected(str(exc).replace(f"{path}: ", "")) from exc
    frame = result.frame
    missing = [c for c in ITEM_FILE_COLUMNS if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if not c.startswith("_")]
        raise LandingRejected(f"missing column(s) {missing}; expected {ITEM_FILE_COLUMNS} (and optionally "
                              f"categories), found {found}")
    if "categories" not in frame.columns:
        frame = frame.assign(categories="")
    frame = frame[ITEM_FILE_COLUMNS + ["categories", ROW_NUMBER]].assign(**{ROW_FILE: path.name})
    return frame.reset_index(drop=True), result.quarantine.assign(source_file=path.name)


def validate_item_rows(frame: pd.DataFrame, known_ids: set[str], source: str) -> tuple[list[CatalogueItem], pd.DataFrame]:
    """The good rows as items, and the quarantined rows (file, row, field, reason, raw) of one item file."""
    keep, rejects = checked_ids(frame, "item_id", "item")
    problems = [rejects]
    raw = frame[ITEM_FILE_COLUMNS + ["categories"]].astype("string").fillna("").agg("\t".join, axis=1)
    for column in ("title", "text"):
        empty = frame[column].astype("string").fillna("").str.strip() == ""
        bad = empty & keep
        if bad.any():
            problems.append(quarantine_records(frame.loc[bad, ROW_FILE], frame.loc[bad, ROW_NUMBER], column,
                                               f"empty {column}: an item needs a {column} to be encoded",
                                               raw[bad].to_numpy()))
        keep &= ~empty
    ids = frame["item_id"].astype("string").str.strip()
    held = ids.isin(list(known_ids)) & keep
    if held.any():
        problems.append(quarantine_records(frame.loc[held, ROW_FILE], frame.loc[held, ROW_NUMBER], "item_id",
                                           "the catalogue already holds this item id (items are added once)",
                                           raw[held].to_numpy()))
    keep &= ~held
    items = [CatalogueItem(str(r.item_id).strip(), normalize_text(r.title), normalize_text(r.text),
                           clean_categories(str(r.categories or "").split("|")), source=source)
             for r in frame[keep].itertuples(index=False)]
    return items, concat_quarantine(problems)


def ingest_item_file(path: Path, log: ItemLog, encoder, known_ids: set[str], store=None) -> ItemFileResult:
    """Read, check, encode and append one landed item file to the items log; its bad rows replace this file's
    rows in the warehouse's quarantine (`store`, a `Warehouse`; None: no warehouse, the rows are only counted)."""
    path = Path(path)
    folder = path.parent
    try:
        frame, read_rejects = read_item_file(path)
    except LandingRejected as exc:
        destination = move(path, folder / REJECTED)
        destination.with_name(destination.name + ".reason.txt").write_text(
            f"{path.name} was rejected: {exc}\nFix the file and drop it into {folder} again.\n")
        return ItemFileResult(path.name, "rejected", destination, reason=str(exc))
    items, problems = validate_item_rows(frame, known_ids, f"landing/{LANDING_ITEMS}/{path.name}")
    quarantine = concat_quarantine([read_rejects, problems]).sort_values("row_number", kind="stable")
    encoded = encode_items(items, encoder)
    log.append(encoded)
    if store is not None:
        rows = quarantine_table.typed(quarantine[QUARANTINE_COLUMNS], QUARANTINE_DATASET, QUARANTINE_PART)
        with store.connect() as conn:
            conn.execute("BEGIN")
            quarantine_table.replace_in(conn, rows, "source_file = ? AND dataset = ? AND part = ?",
                                        [path.name, QUARANTINE_DATASET, QUARANTINE_PART])
            conn.execute("COMMIT")
    destination = move(path, folder / PROCESSED)
    return ItemFileResult(path.name, "processed", destination, rows=len(frame) + len(read_rejects),
                          added=len(encoded), quarantined=len(quarantine))


def add_landed_items(paths) -> list[ItemFileResult]:
    """Ingest every item file waiting in `<home>/landing/items/` (`paths`: a `Paths`), encoded with the served
    bundle's encoder, so the running servers pick the items up from the log."""
    from llmrec_platform.encoders.models import TextEncoder
    from llmrec_platform.serving.bundle import BundleError, current_bundle
    from llmrec_platform.storage.warehouse import Warehouse

    files = pending_item_files(paths.landing / LANDING_ITEMS)
    if not files:
        return []
    bundle = current_bundle(paths.bundles)
    encoder_name = json.loads((bundle / "manifest.json").read_text()).get("encoder")
    if not encoder_name:
        raise BundleError(f"bundle {bundle} has no item embeddings (no encoder), so new items cannot be encoded")
    log = ItemLog(paths.events)
    known = set(pd.read_parquet(bundle / "items.parquet", columns=["item_id"])["item_id"].astype(str))
    known |= {item.item_id for item in log.read(0).items}
    encoder = TextEncoder(encoder_name, device="cpu")
    store = Warehouse(paths.warehouse)  # the quarantine table lives there
    results = []
    for path in files:
        result = ingest_item_file(path, log, encoder, known, store)
        known |= {item.item_id for item in log.read(0).items}
        results.append(result)
    return results
