"""The serving bundle: everything the server needs, as plain files, published atomically (no Dagster).

    <LLMREC_HOME>/bundles/<version>/
        manifest.json        version, created_at, data fingerprint, champion, metrics, encoder, event offset
        champion.pkl         the champion Ranker (it folds in any history: `score_query`)
        challenger.pkl       optional second ranker for an online A/B split
        collab.pkl           optional item-item ranker (EASE) whose weights explanations cite
        items.parquet        item_id, title, genres, text, popularity: the whole catalogue, the champion's items first
                             in its order (positions 0..n-1, n = len(champion.item_ids_)), then every other catalogue
                             item (k-core filtered, cold, never rated) sorted by id
        item_vectors.npy     the language model's unit-norm item embeddings, same order (zeros if missing)
        histories.parquet    user_id, item_id, rating, timestamp, event: every known interaction, and the
                             events of the log up to `event_offset`
        long_term.npy/.json  every user's champion fold-in of those histories, (users, n) float32, and the
                             ranker and users it holds (`live.long_term`; optional: the server computes a missing one)
    <LLMREC_HOME>/bundles/current -> <version>   (a symlink, swapped with one atomic rename)

A bundle is written under a temporary name and renamed into place before `current` moves, so a reader
sees either the old or the new bundle, never half of one. The server never opens the warehouse. A bundle
published before the catalogue was whole holds the champion's items only; it still loads (`champion_items`
is then `len(items)`).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.live.events import fsync_dir
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import Ranker

CURRENT = "current"
KEEP_BUNDLES = 3  # published bundles kept besides the one being written (older ones are pruned)


class BundleError(RuntimeError):
    """No bundle to serve, or a bundle is incomplete; the message says what to run."""


@dataclass
class Bundle:
    path: Path
    manifest: dict
    champion: Ranker
    items: pd.DataFrame  # the catalogue: champion.item_ids_ first (positions 0..n-1), then the others by id
    item_vectors: np.ndarray
    histories: pd.DataFrame
    collab: Ranker | None = None
    challenger: Ranker | None = None
    titles: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def event_offset(self) -> int:
        return int(self.manifest["event_offset"])

    @property
    def champion_items(self) -> int:
        """n: catalogue positions [0, n) are the champion's item space, in its order."""
        return len(self.champion.item_ids_)


def published_popularity(counts: np.ndarray, release: CountRelease | None) -> np.ndarray:
    """The items' popularity column: the training counts, or their differentially private release (the same noise
    as the popularity ranker's under one seed), rounded and never below 0."""
    if release is None or release.exact:
        return np.asarray(counts, dtype=np.float64)
    return np.maximum(np.rint(release.release(counts, stream="popularity")), 0.0)


def publish_bundle(
    root: str | Path, champion: Ranker, items: pd.DataFrame, item_vectors: pd.DataFrame, histories: pd.DataFrame,
    manifest: dict, collab: Ranker | None = None, challenger: Ranker | None = None,
    popularity_release: CountRelease | None = None, popularity: np.ndarray | None = None, long_term: bool = True,
) -> Path:
    """Write a bundle under `root` and point `root/current` at it; returns the bundle folder.

    `items` has item_id, title, genres (list or "|"-joined), text; `item_vectors` has item_id, embedding;
    `histories` has user_id, item_id, rating, timestamp and optionally event. `manifest` must name the
    `event_offset` the histories include and may carry anything else (metrics, fingerprint, encoder).
    `popularity` is a column already released, in the champion's item order (then 0 for the other items) or in
    the catalogue's: a republish keeps it (releasing the counts again would spend the privacy budget again).
    Every item of `items` is published (the whole catalogue, `catalogue_order`); an item only `item_vectors` or
    the champion knows is not a catalogue item unless the champion scores it. `long_term`: store every user's
    champion fold-in (`live.long_term`), which the server's long-term channel then reads instead of computing."""
    if "event_offset" not in manifest:
        raise ValueError("the manifest must say which event-log offset the histories include (event_offset)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%S%f}-{str(manifest.get('data_fingerprint', 'na'))[:8]}"
    staging = root / f".tmp-{version}"
    staging.mkdir()

    order = catalogue_order(champion.item_ids_, items["item_id"])
    catalogue = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    catalogue = catalogue.reindex(order)
    served = len(champion.item_ids_)
    released = (published_popularity(champion.popularity_, popularity_release) if popularity is None
                else np.asarray(popularity, dtype=np.float64))
    frame = pd.DataFrame({
        "item_id": order.astype(str),
        "title": catalogue["title"].fillna("").astype(str).to_numpy() if "title" in catalogue else order.astype(str),
        "genres": [_genre_list(g) for g in (catalogue["genres"] if "genres" in catalogue else [None] * len(order))],
        "text": catalogue["text"].fillna("").astype(str).to_numpy() if "text" in catalogue else "",
        "popularity": np.r_[released, np.zeros(len(order) - len(released))] if len(released) == served else released,
    })
    frame.to_parquet(staging / "items.parquet", index=False)
    vectors = _aligned_vectors(order, item_vectors)
    np.save(staging / "item_vectors.npy", vectors)
    history = histories.assign(user_id=histories["user_id"].astype(str), item_id=histories["item_id"].astype(str))
    history = history.assign(event=history["event"].fillna("rating") if "event" in history else "rating")
    history = history[["user_id", "item_id", "rating", "timestamp", "event"]].astype(
        {"rating": "float32", "timestamp": "float64"}).sort_values(["user_id", "timestamp"], kind="stable")
    history.to_parquet(staging / "histories.parquet", index=False)
    for name, ranker in (("champion", champion), ("collab", collab), ("challenger", challenger)):
        if ranker is not None:
            with open(staging / f"{name}.pkl", "wb") as handle:
                pickle.dump(ranker, handle, protocol=pickle.HIGHEST_PROTOCOL)
    full_manifest = {
        **manifest, "version": version, "created_at": created.isoformat(), "champion": champion.name,
        "challenger": challenger.name if challenger is not None else None,
        "collab": collab.name if collab is not None else None,
        "items": len(frame), "champion_items": served,
        "users": int(history["user_id"].nunique()), "interactions": len(history),
        "embedded_items": int((np.abs(vectors).sum(axis=1) > 0).sum()),
    }
    (staging / "manifest.json").write_text(json.dumps(full_manifest, indent=2, sort_keys=True, default=str))
    if long_term and not _reuse_long_term(root, staging):
        write_bundle_long_term(staging)
    _fsync_tree(staging)

    final = root / version
    os.rename(staging, final)
    pointer = root / f".{CURRENT}-{version}"
    os.symlink(version, pointer)
    os.replace(pointer, root / CURRENT)  # atomic: readers see the old or the new target
    fsync_dir(root)
    _prune(root, keep=final.name)
    return final


def _reuse_long_term(root: Path, staging: Path) -> bool:
    """Copy the current bundle's long-term fold-ins when its champion and histories are byte for byte the new
    bundle's (a rerun on unchanged data republishes them): the fold-ins are a function of those two alone."""
    from llmrec_platform.live.long_term import INDEX_FILE, SCORES_FILE

    previous = root / CURRENT
    same = previous.exists() and all(
        (previous / name).is_file() and (previous / name).read_bytes() == (staging / name).read_bytes()
        for name in ("champion.pkl", "histories.parquet"))
    if not same or not all((previous / name).is_file() for name in (SCORES_FILE, INDEX_FILE)):
        return False
    for name in (SCORES_FILE, INDEX_FILE):
        shutil.copyfile(previous / name, staging / name)
    return True


def write_bundle_long_term(folder: str | Path) -> int:
    """Store every bundle user's champion fold-in in the bundle folder (`live.long_term.write_long_term`), e.g. in a
    copy whose champion was replaced. Returns how many users."""
    from llmrec_platform.live.long_term import remove_long_term, write_long_term
    from llmrec_platform.serving.service import LiveService  # it reads bundles: imported here, not at module level

    remove_long_term(folder)
    return write_long_term(folder, LiveService(load_bundle(folder), None, {}))


def current_bundle(root: str | Path) -> Path:
    """The folder `root/current` points at."""
    pointer = Path(root) / CURRENT
    if not pointer.exists():
        raise BundleError(f"no serving bundle under {root}: run `llmrec demo` (or materialize serving_bundle) "
                          "with the same LLMREC_HOME first")
    return pointer.resolve()  # a copied home may hold `current` as a plain folder: serve it as it is


def current_version(root: str | Path) -> str | None:
    """The version `current` points at, or None; cheap enough to call twice a second."""
    pointer = Path(root) / CURRENT
    try:
        return os.readlink(pointer)
    except OSError:
        return json.loads((pointer / "manifest.json").read_text())["version"] if pointer.is_dir() else None


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        champion = Ranker.load(path / "champion.pkl")
        items = pd.read_parquet(path / "items.parquet")
        vectors = np.load(path / "item_vectors.npy")
        histories = pd.read_parquet(path / "histories.parquet")
    except FileNotFoundError as exc:
        raise BundleError(f"bundle {path} is incomplete ({exc.filename} is missing): publish it again") from exc
    served = [str(i) for i in champion.item_ids_]
    if list(items["item_id"].iloc[:len(served)]) != served or len(vectors) != len(items):
        raise BundleError(f"bundle {path}: items, vectors and the champion's item space disagree")
    optional = {name: Ranker.load(path / f"{name}.pkl") if (path / f"{name}.pkl").exists() else None
                for name in ("collab", "challenger")}
    challenger = optional["challenger"]
    if challenger is not None and not np.array_equal(challenger.item_ids_, champion.item_ids_):
        raise BundleError(f"bundle {path}: the challenger was fitted on another item space than the champion")
    return Bundle(path, manifest, champion, items, vectors, histories, optional["collab"], optional["challenger"],
                  dict(zip(items["item_id"], items["title"], strict=True)))


def catalogue_order(champion_item_ids, catalogue_item_ids) -> pd.Index:
    """The bundle's item order: the champion's items in its order, then every other catalogue item sorted by id."""
    served = pd.Index(np.asarray(champion_item_ids).astype(str))
    others = pd.Index(pd.unique(pd.Series(catalogue_item_ids).astype(str))).difference(served).sort_values()
    return served.append(others)


def _genre_list(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [g.strip() for g in value.replace(",", "|").split("|") if g.strip()]
    return [str(g) for g in value]


def _aligned_vectors(order: pd.Index, item_vectors: pd.DataFrame) -> np.ndarray:
    if item_vectors is None or not len(item_vectors):
        return np.zeros((len(order), 1), dtype=np.float32)
    dim = len(item_vectors["embedding"].iloc[0])
    vectors = np.zeros((len(order), dim), dtype=np.float32)
    positions = order.get_indexer(item_vectors["item_id"].astype(str))
    known = positions >= 0
    vectors[positions[known]] = np.stack(item_vectors["embedding"].to_numpy()[known]).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _prune(root: Path, keep: str) -> None:
    bundles = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    for old in [p for p in bundles if p.name != keep][:-KEEP_BUNDLES or None]:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(folder)

