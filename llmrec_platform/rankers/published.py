"""Load a ranker that a pipeline run published under LLMREC_HOME, with no Dagster running."""

from __future__ import annotations

import pickle
from pathlib import Path

from llmrec_platform.paths import Paths
from llmrec_platform.rankers.base import Ranker, TrainedRanker


def published_rankers(home: str | Path) -> dict[str, Path]:
    """Ranker name (as the `ranker` column of `evaluation_metrics` spells it) -> its artifact file."""
    folder = Paths(Path(home)).artifacts
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: run `llmrec demo` (or materialize the rankers) with "
                                f"LLMREC_HOME={home} first")
    found = {}
    for path in sorted(folder.glob("*_ranker")):
        found[_read(path).ranker.name] = path
    return found


def load_ranker(home: str | Path, name: str) -> Ranker:
    """The fitted ranker `name` (e.g. "ease", "hybrid", "llm_content") that the last run in `home` published."""
    folder = Paths(Path(home)).artifacts
    conventional = folder / f"{name}_ranker"  # every ranker asset but the renamed ones is called <name>_ranker
    if conventional.is_file() and (trained := _read(conventional)).ranker.name == name:
        return trained.ranker
    available = published_rankers(home)
    if name not in available:
        raise KeyError(f"no published ranker {name!r} in {folder}; available: {', '.join(sorted(available)) or 'none'}")
    return _read(available[name]).ranker


def _read(path: Path) -> TrainedRanker:
    with open(path, "rb") as handle:
        return TrainedRanker.checked(pickle.load(handle), str(path))
