"""TF-IDF content ranker: the non-LLM text baseline every LLM claim is stated against.

Same item text as the LLM rankers (`item_texts`: title, year, genres, OMDb credits), bag of words instead of an
encoder, optionally reduced with TruncatedSVD (LSA), and scored exactly like `llm_content` (it subclasses it).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.vectors import normalize_rows
from llmrec_platform.rankers.content import LLMContentRanker


def texts_by_id(frame: pd.DataFrame, ids: np.ndarray, id_column: str, what: str) -> list[str]:
    """frame's `text` in the order of `ids` (an `id` column is accepted too); fails loudly on missing ids."""
    column = id_column if id_column in frame.columns else "id"
    if column not in frame.columns or "text" not in frame.columns:
        raise ValueError(f"{what} texts need columns {id_column} (or id) and text; got {list(frame.columns)}")
    indexed = frame.assign(**{column: frame[column].astype(str)}).drop_duplicates(column).set_index(column)["text"]
    missing = pd.Index(ids).difference(indexed.index)
    if len(missing):
        raise KeyError(f"{len(missing)} {what} have no text (e.g. {list(missing[:3])}): re-materialize item_texts")
    return indexed.loc[ids].fillna("").astype(str).tolist()


class TextVectorizer:
    """TF-IDF (word n-grams; sublinear tf and English stop words unless `plain`, which is scikit-learn's defaults)
    then optionally TruncatedSVD to `svd_dims`; unit-norm dense float32 rows. Fitted on item texts only (label-free,
    so cold items' texts may be in it)."""

    def __init__(self, svd_dims: int = 384, ngram_max: int = 2, min_df: int = 2, max_df: float = 0.5,
                 seed: int = 2020, plain: bool = False):
        self.svd_dims, self.ngram_max, self.min_df, self.max_df, self.seed = svd_dims, ngram_max, min_df, max_df, seed
        self.plain = plain

    def fit_transform(self, texts: list[str]) -> np.ndarray:
        # min_df / max_df as counts and shares break on tiny catalogues; relax them rather than fail.
        min_df = self.min_df if len(texts) >= 10 * self.min_df else 1
        max_df = self.max_df if len(texts) >= 100 else 1.0
        if self.plain:
            min_df, max_df = 1, 1.0
        self.tfidf_ = TfidfVectorizer(sublinear_tf=not self.plain, stop_words=None if self.plain else "english",
                                      ngram_range=(1, self.ngram_max),
                                      min_df=min_df, max_df=max_df, dtype=np.float32)
        matrix = self.tfidf_.fit_transform(texts)
        self.svd_ = None
        dims = min(self.svd_dims, matrix.shape[1] - 1, matrix.shape[0] - 1)
        if self.svd_dims > 0 and dims >= 1:
            self.svd_ = TruncatedSVD(n_components=dims, algorithm="randomized", n_iter=7, random_state=self.seed)
            self.svd_.fit(matrix)
        return self.transform(texts, matrix)

    def transform(self, texts: list[str], matrix: sp.spmatrix | None = None) -> np.ndarray:
        matrix = self.tfidf_.transform(texts) if matrix is None else matrix
        dense = self.svd_.transform(matrix) if self.svd_ is not None else matrix.toarray()
        return normalize_rows(np.asarray(dense, dtype=np.float32))

    @property
    def dim(self) -> int:
        return self.svd_.n_components if self.svd_ is not None else len(self.tfidf_.vocabulary_)


class TfidfContentRanker(LLMContentRanker):
    """`llm_content`'s scoring over TF-IDF (+ SVD) item vectors instead of an LLM encoder:

        score(x, i) = (1 - w) * cos(interest_x, v_i) + w * max_{j in x} cos(v_j, v_i)

    `item_texts` (item_id or id, text) is the `item_texts` asset; `user_texts` (user_id or id, text) adds the
    profile text with `profile_weight` as `llm_content` does. Query text is vectorised with the same TF-IDF
    model. `plain` uses scikit-learn's TF-IDF defaults (see `TextVectorizer`). `svd_dims=0` keeps the raw TF-IDF
    space (dense, one column per term: memory grows with the vocabulary).

    Defaults chosen on ML-1M's valid fold with a pseudo-cold hold-out of warm items (`pseudo_cold_split`, never
    the test fold; `benchmarks/cold_start_ml1m.py`). Pseudo-cold NDCG@10 by (svd_dims, ngram_max, history_weight):
    384, 2, 0.0 -> 0.1872 | 384, 2, 0.5 -> 0.2220 (kept) | 384, 2, 0.8 -> 0.1930 | 384, 1, 0.8 -> 0.1831 |
    128, 2, 0.8 -> 0.1637 | raw unigrams 0.0 / 0.5 / 0.8 -> 0.1772 / 0.2046 / 0.1894; `plain` raw unigrams
    0.0 / 0.5 / 0.8 -> 0.2004 / 0.2034 / 0.1894. The test-fold numbers of every variant are in docs/evaluation.md.
    """

    name = "tfidf_content"

    def __init__(self, item_texts: pd.DataFrame, user_texts: pd.DataFrame | None = None, svd_dims: int = 384,
                 ngram_max: int = 2, min_df: int = 2, max_df: float = 0.5, history_weight: float = 0.5,
                 profile_weight: float = 0.05, half_life_days: float = 365.0, seed: int = 2020,
                 plain: bool = False, name: str | None = None):
        super().__init__(pd.DataFrame(columns=["item_id", "embedding"]), None, history_weight=history_weight,
                         profile_weight=profile_weight, half_life_days=half_life_days, encoder=None, name=name)
        if svd_dims < 0:
            raise ValueError(f"svd_dims must be >= 0 (0 = no SVD), got {svd_dims}")
        self._item_texts = item_texts
        self._user_texts = user_texts
        self.vectorizer = TextVectorizer(svd_dims, ngram_max, min_df, max_df, seed, plain)

    def _fit(self, data: InteractionData) -> None:
        vectors = self.vectorizer.fit_transform(texts_by_id(self._item_texts, data.item_ids, "item_id", "items"))
        self._item_frame = pd.DataFrame({"item_id": data.item_ids, "embedding": list(vectors)})
        self._profile_frame = None
        use_texts = self._user_texts is not None and self.profile_weight > 0
        frame = (self._user_texts if use_texts else pd.DataFrame(columns=["id", "text"])).rename(columns={"id": "user_id"})
        frame = frame[frame["user_id"].astype(str).isin(set(data.user_ids))]
        if len(frame):  # else no user of the split has a text (sklearn refuses an empty batch): no profiles
            self._profile_frame = pd.DataFrame({
                "user_id": frame["user_id"].astype(str).to_numpy(),
                "embedding": list(self.vectorizer.transform(frame["text"].fillna("").astype(str).tolist()))})
        del self._item_texts, self._user_texts  # keep the pickled ranker small
        super()._fit(data)

    def refit_copy(self, data: InteractionData) -> TfidfContentRanker:
        """A copy on other histories of the same item space: the text model and item vectors are kept (the
        texts are not); profiles are kept for the same users, dropped otherwise. This ranker is not modified."""
        if not np.array_equal(data.item_ids, self.item_ids_):
            raise ValueError(f"{self.name}: refit_copy needs the same item space; fit a new ranker instead")
        clone = copy.copy(self)
        clone.user_ids_ = data.user_ids
        clone._user_position = {u: i for i, u in enumerate(data.user_ids)}
        clone.train_ = data.train.tocsr()
        clone.train_timestamps_ = data.train_timestamps.tocsr()
        clone.popularity_ = np.asarray(data.train.getnnz(axis=0), dtype=np.float32)
        if not np.array_equal(data.user_ids, self.user_ids_):
            clone.profile_vectors_ = np.zeros((data.n_users, self.item_vectors_.shape[1]), dtype=np.float32)
        clone.user_vectors_ = clone.interest_vectors(clone.training_histories(np.arange(data.n_users)))
        return clone

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.vectorizer.transform(texts)
