"""Fitted rankers memoised by everything that determines them, so a re-run on unchanged inputs loads them.

The key hashes the unfitted ranker (its class, parameters and every input it holds: base rankers, embeddings),
the data fingerprint, the package's source code, the versions of the numeric libraries and their BLAS thread
setup. Fits are seeded and thread-pinned (`threads.py`), so a cached model is the model a refit would give.
Results computed from fits (the evaluation suite, the ablation, the recommendations) are memoised on their fit
keys (`derived_key`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

KEEP_PER_NAME = 2  # newest entries kept per ranker name: the current inputs and the previous ones
LIBRARIES = ("numpy", "scipy", "scikit-learn", "lightgbm", "implicit", "torch", "pandas")


@cache
def environment_digest() -> str:
    """The package's source files and the numeric libraries (versions, BLAS builds and threads). Only BLAS
    pools count: which OpenMP runtimes are loaded depends on what the process imported first (torch's comes
    with the encoder), so they would make the key differ between a cold and a warm run."""
    import numpy  # noqa: F401 - load both OpenBLAS builds, so the digest never depends on import order
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent".encode())
    for pool in sorted(threadpool_info(), key=lambda pool: pool.get("filepath", "")):
        if pool.get("user_api") == "blas":  # the architecture: which kernels (kernels.py pins them)
            digest.update(repr((pool.get("internal_api"), pool.get("version"), pool.get("num_threads"),
                                pool.get("architecture"))).encode())
    from numpy._core._multiarray_umath import __cpu_features__

    # numpy's SIMD targets above AVX2, which kernels.py turns off: a fit made with them differs in the last bits.
    digest.update(repr(sorted(f for f in ("X86_V4", "AVX512_ICL", "AVX512_SPR") if __cpu_features__.get(f))).encode())
    return digest.hexdigest()


class _HashWriter:
    """A file that feeds what is written to a digest: the pickle streams into the hash, and a large array's buffer
    is hashed where it lies, never copied into one bytes object (0.76 GB for EASE's weights at 13,755 items)."""

    def __init__(self, digest):
        self.digest = digest

    def write(self, data) -> int:
        self.digest.update(data)
        return memoryview(data).nbytes


def fit_key(unfitted: Any, data_fingerprint: str) -> str:
    """sha256 of the environment, the data fingerprint and `pickle.dumps(unfitted)` (streamed: the same bytes)."""
    digest = hashlib.sha256(environment_digest().encode())
    digest.update(data_fingerprint.encode())
    pickle.Pickler(_HashWriter(digest), protocol=pickle.HIGHEST_PROTOCOL).dump(unfitted)
    return digest.hexdigest()[:24]


def derived_key(*parts: Any) -> str:
    """The key of a result computed from fits (their `fit_key`s) and plain settings: the fit keys already hold
    the code, the libraries and the data, so their repr is all that can change the result. An empty fit key
    (a fit made without a key) makes the result unkeyed: "" (never cached)."""
    if any(part == "" for part in parts):
        return ""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


class FitCache:
    """`folder/<name>/<key>.pkl`; `folder=None` turns the cache off (every call fits)."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def get_or_fit(self, name: str, unfitted: Any, data_fingerprint: str, fit: Callable[[], Any]) -> tuple[Any, bool]:
        """(`fit()`'s result, or the one stored for the same key; whether it came from the cache). `unfitted`
        is hashed before `fit` runs, since fitting changes it."""
        if self.folder is None:
            return fit(), False
        return self.get_or_compute(name, fit_key(unfitted, data_fingerprint), fit)

    def get_or_compute(self, name: str, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(`compute()`'s result, or the one stored under `key`; whether it came from the cache). An empty key
        is never cached."""
        if self.folder is None or not key:
            return compute(), False
        path = self.folder / name / f"{key}.pkl"
        if path.exists():
            try:
                with open(path, "rb") as handle:
                    return pickle.load(handle), True
            except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
                path.unlink(missing_ok=True)  # unreadable (e.g. written by other code): fit again
        result = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)  # atomic: a crash never leaves half an entry under its key
        for stale in sorted(path.parent.glob("*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_PER_NAME:]:
            stale.unlink(missing_ok=True)
        return result, False
