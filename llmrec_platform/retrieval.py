"""Top-k items by inner product of unit-norm vectors: exact below a catalogue size, an HNSW index above (no Dagster).

    index = VectorIndex(item_vectors, ann_min_items=50_000)
    ids, scores = index.search(query_vectors, k=100, exclude=[seen_positions, ...])

Below `ann_min_items` (LLMREC_ANN_MIN_ITEMS) every item is scored (one matrix product per block of queries), so
small catalogues, MovieLens included, keep exactly the numbers they had. At or above it a faiss `IndexHNSWFlat`
(inner product) finds `k` plus a margin of candidates, which are then rescored exactly with numpy: the scores
returned are always the exact cosines, only the candidate set is approximate. `recall_at` measures that
approximation against exact search.

Why faiss (rather than hnswlib or usearch): what matters here is that the same vectors give the same index and the
same results on any machine. faiss ships binary wheels whose kernels are chosen at import by `FAISS_OPT_LEVEL`,
so they can be pinned to AVX2 like every other library in `kernels.py` (hnswlib is a source build with
`-march=native`: the float kernels depend on the machine that compiled it). The graph is built on one thread (a
multi-threaded HNSW insert depends on thread timing) with faiss's fixed level-assignment seed, so one input gives
one graph; ties are broken by (-score, item position) on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DEFAULT_ANN_MIN_ITEMS = 50_000  # exact top-k scores 50k x 384 floats per query: about 5 ms; above, the index pays
QUERY_BLOCK_FLOATS = 32_000_000  # exact search scores at most this many (query, item) pairs at once (128 MB)


@dataclass(frozen=True)
class HNSWParams:
    """faiss HNSW parameters: `m` links per node, the beam widths while building and searching."""

    m: int = 32
    ef_construction: int = 128
    ef_search: int = 256


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions of the `k` highest finite scores, ordered by (-score, position); -1 pads."""
    n_rows, n_cols = scores.shape
    k_eff = min(k, n_cols)
    ids = np.full((n_rows, k), -1, dtype=np.int64)
    out = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if k_eff == 0:
        return ids, out
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n_cols else \
        np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    for row in range(n_rows):
        candidates = part[row]
        values = scores[row, candidates]
        # argpartition picks arbitrary members of a tie at the boundary: take them by position instead.
        threshold = values.min()
        if k_eff < n_cols and np.count_nonzero(scores[row] == threshold) > np.count_nonzero(values == threshold):
            above = np.flatnonzero(scores[row] > threshold)
            tied = np.flatnonzero(scores[row] == threshold)[: k_eff - len(above)]
            candidates = np.concatenate([above, tied])
            values = scores[row, candidates]
        order = np.lexsort((candidates, -values))
        keep = candidates[order][np.isfinite(values[order])]
        ids[row, :len(keep)] = keep
        out[row, :len(keep)] = scores[row, keep]
    return ids, out


def _add_on_one_thread(index, vectors: np.ndarray) -> None:
    """Insert into an HNSW graph on one thread: a multi-threaded insert links nodes in the order threads finish."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(vectors)
    finally:
        faiss.omp_set_num_threads(threads)


class VectorIndex:
    """Nearest items of query vectors by inner product (cosine for unit-norm vectors)."""

    def __init__(self, vectors: np.ndarray, ann_min_items: int = DEFAULT_ANN_MIN_ITEMS,
                 params: HNSWParams = HNSWParams()):
        if ann_min_items < 1:
            raise ValueError(f"ann_min_items must be >= 1, got {ann_min_items}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise ValueError(f"item vectors must be a 2-d array, got shape {self.vectors.shape}")
        self.ann_min_items = ann_min_items
        self.params = params
        self.approximate = len(self.vectors) >= ann_min_items
        self._index = self._build() if self.approximate else None

    @property
    def n_items(self) -> int:
        return len(self.vectors)

    def _build(self):
        import faiss

        index = faiss.IndexHNSWFlat(self.vectors.shape[1], self.params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.params.ef_construction
        _add_on_one_thread(index, self.vectors)
        return index

    def describe(self) -> str:
        """One line: which search this is, and why."""
        if not self.approximate:
            return (f"exact top-k over {self.n_items:,} items (below LLMREC_ANN_MIN_ITEMS {self.ann_min_items:,})")
        p = self.params
        return (f"approximate top-k: faiss HNSW (M {p.m}, efConstruction {p.ef_construction}, efSearch >= {p.ef_search}) "
                f"over {self.n_items:,} items (at or above LLMREC_ANN_MIN_ITEMS {self.ann_min_items:,}), "
                "candidates rescored exactly")

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | sp.spmatrix | None = None,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(item positions, scores), each (len(queries), k), best first, ties by position; -1 / -inf pad rows with
        fewer than `k` items left. `exclude[row]` holds positions row may not return (or a queries x items sparse
        matrix of them, e.g. the seen items); `exact=True` scores every item whatever the size."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if sp.issparse(exclude):
            seen = sp.csr_matrix(exclude)
            exclude = [seen.indices[seen.indptr[row]:seen.indptr[row + 1]] for row in range(seen.shape[0])]
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, the items {self.vectors.shape[1]}")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(queries)} queries")
        if k < 1 or not len(queries):
            return np.full((len(queries), max(k, 0)), -1, np.int64), np.full((len(queries), max(k, 0)), -np.inf, np.float32)
        if exact or not self.approximate:
            return self._exact(queries, k, exclude)
        return self._approximate(queries, k, exclude)

    def _exact(self, queries: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        block = max(1, QUERY_BLOCK_FLOATS // max(self.n_items, 1))
        ids, scores = [], []
        for start in range(0, len(queries), block):
            chunk = queries[start:start + block] @ self.vectors.T
            if exclude is not None:
                for row, seen in enumerate(exclude[start:start + block]):
                    chunk[row, np.asarray(seen, dtype=np.int64)] = -np.inf
            chunk_ids, chunk_scores = _top_k(chunk, k)
            ids.append(chunk_ids)
            scores.append(chunk_scores)
        return np.concatenate(ids), np.concatenate(scores)

    def _approximate(self, queries: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        most_excluded = max((len(seen) for seen in exclude), default=0) if exclude is not None else 0
        fetch = min(self.n_items, k + most_excluded + max(k // 4, 8))  # a margin, so boundary ties are rescored
        params = faiss.SearchParametersHNSW(efSearch=max(self.params.ef_search, fetch))
        _, candidates = self._index.search(queries, fetch, params=params)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row in range(len(queries)):
            found = candidates[row][candidates[row] >= 0]
            if exclude is not None and len(exclude[row]):
                found = found[~np.isin(found, exclude[row])]
            exact = self.vectors[found] @ queries[row]  # the returned scores are exact cosines
            order = np.lexsort((found, -exact))[:k]
            ids[row, :len(order)] = found[order]
            scores[row, :len(order)] = exact[order]
        return ids, scores

    def add(self, vectors: np.ndarray) -> None:
        """Append items (new catalogue items arriving live) at positions n_items, n_items + 1, ...; the index
        switches to HNSW once the catalogue reaches `ann_min_items`."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        self.vectors = np.ascontiguousarray(np.concatenate([self.vectors, vectors]))
        if self._index is not None:
            _add_on_one_thread(self._index, vectors)
        elif len(self.vectors) >= self.ann_min_items:
            self.approximate = True
            self._index = self._build()

    def recall_at(self, k: int = 100, sample: int = 1000, seed: int = 0) -> float:
        """Mean share of the exact top-`k` that `search` returns, for `sample` item vectors (seeded) as queries."""
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(self.n_items, size=min(sample, self.n_items), replace=False))
        queries = self.vectors[rows]
        found, _ = self.search(queries, k)
        truth, _ = self.search(queries, k, exact=True)
        hits = [len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(np.count_nonzero(t >= 0), 1)
                for f, t in zip(found, truth, strict=True)]
        return float(np.mean(hits))

    def neighbours(self, k: int, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each item's `k` nearest other items (positions, scores), or nearest items counting itself: the item-item
        graph of a catalogue too large for a dense items x items matrix."""
        ids, scores = [], []
        block = 4096
        for start in range(0, self.n_items, block):
            rows = np.arange(start, min(start + block, self.n_items))
            chunk_ids, chunk_scores = self.search(self.vectors[rows], k,
                                                  exclude=None if include_self else [np.array([r]) for r in rows])
            ids.append(chunk_ids)
            scores.append(chunk_scores)
        return np.concatenate(ids), np.concatenate(scores)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._index is not None:
            import faiss

            state["_index"] = faiss.serialize_index(self._index)  # a uint8 array: the same graph when loaded
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("_index") is not None:
            import faiss

            state["_index"] = faiss.deserialize_index(state["_index"])
        self.__dict__.update(state)
