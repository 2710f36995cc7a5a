"""Shared fixtures: a tiny GroupLens-format dataset on disk, an isolated LLMREC_HOME, and one run of the default
ML-100K demo per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings

from llmrec_platform.paths import Paths
from llmrec_platform.settings import Settings

# `pytest tests/security --hypothesis-profile=fuzz-explore`: the reader fuzz tests draw 1,000 fresh random cases each
# instead of CI's fixed 50 (docs/security/fuzzing.md). Registered here: Hypothesis loads profiles before sub-conftests.
hypothesis_settings.register_profile("fuzz-explore", max_examples=1000, deadline=None, database=None)

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)",
          "Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)", "Richard III (1995)", "Seven (Se7en) (1995)",
          "Usual Suspects, The (1995)", "Mighty Aphrodite (1995)", "Postino, Il (1994)", "French Twist (1995)",
          "From Dusk Till Dawn (1996)", "Braveheart (1995)", "Taxi Driver (1976)", "Apollo 13 (1995)",
          "Batman Forever (1995)", "Belle de jour (1967)", "Crimson Tide (1995)", "Crumb (1994)", "Desperado (1995)",
          "Doom Generation, The (1995)", "Mad Love (1995)", "Billy Madison (1995)", "Clerks (1994)",
          "Star Wars (1977)", "Fargo (1996)", "Heat (1995)"]


def write_ml100k_folder(folder: Path, n_users: int = 24, seed: int = 7, per_user: int = 16) -> Path:
    """A GroupLens ML-100K-layout folder: two taste groups, timestamps over 1997-09 .. 1998-02."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_items = len(TITLES)
    lines = []
    start = 873_000_000  # 1997-09-01
    for user in range(1, n_users + 1):
        # Group A prefers the first half of the catalogue, group B the second; some overlap keeps 10-core.
        preferred = np.arange(0, 18) if user % 2 else np.arange(12, n_items)
        items = rng.choice(preferred, size=per_user, replace=False)
        for item in items:
            rating = int(rng.integers(3, 6))
            ts = start + int(rng.integers(0, 150 * 86400))
            lines.append(f"{user}\t{item + 1}\t{rating}\t{ts}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    item_lines = []
    for i, title in enumerate(TITLES, start=1):
        flags = ["0"] * len(GENRES)
        flags[1 + (i % 8)] = "1"
        flags[1 + ((i * 3) % 17)] = "1"
        item_lines.append(f"{i}|{title}|01-Jan-1995||http://example.invalid|" + "|".join(flags))
    (folder / "u.item").write_text("\n".join(item_lines) + "\n", encoding="latin-1")
    occupations = ["technician", "writer", "student", "educator", "programmer"]
    user_lines = [f"{u}|{20 + u}|{'MF'[u % 2]}|{occupations[u % 5]}|{10000 + u}" for u in range(1, n_users + 1)]
    (folder / "u.user").write_text("\n".join(user_lines) + "\n")
    return folder


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> Path:
    return write_ml100k_folder(tmp_path / "tiny-ml")


@pytest.fixture
def llmrec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """An isolated LLMREC_HOME (and DAGSTER_HOME inside it) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("LLMREC_HOME", str(home))
    paths = Paths(home).ensure()
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    monkeypatch.setenv("LLMREC_DEVICE", os.environ.get("LLMREC_TEST_DEVICE", "cpu"))
    return paths


@dataclass(frozen=True)
class Demo:
    home: Path
    paths: Paths
    settings: Settings


@pytest.fixture(scope="session")
def ml100k_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`llmrec demo` as a new user runs it (ML-100K, random 8:1:1 split, the default graph, not --fast), once per
    session: it is the suite's most expensive set-up. Tests read its warehouse and bundle; a test that writes (events,
    items) starts its server on this home only if no other test reads what it writes."""
    from llmrec_platform.cli import run_pipeline

    home = tmp_path_factory.mktemp("ml100k-demo") / "home"
    settings = Settings.from_env({"LLMREC_HOME": str(home), "LLMREC_DEVICE": "cpu"})
    paths, _ = run_pipeline("ml-100k", "recbole", device="cpu", settings=settings)
    return Demo(home, paths, settings)
