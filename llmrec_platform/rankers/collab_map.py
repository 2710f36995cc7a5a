"""Cold start through the collaborative space: a ridge map from item text embeddings onto EASE's weights.

EASE scores a history x as x·B, where column i of B says how much each history item votes for item i. A cold
item has no training interactions, so its column is zero. Fitted on the warm items, a ridge map M from an
item's text embedding e_i to its column (B̂[:, i] = b̄ + M' (e_i - ē)) predicts the missing columns, and a
cold item is scored as x·B̂[:, i]: with the user's own collaborative history, not a text-space centroid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.encoders.vectors import align
from llmrec_platform.rankers.base import Histories, Ranker
from llmrec_platform.rankers.ease import EASERanker, ease_weights, float32_in_place

MAP_ROW_BLOCK = 1024  # rows of a float32 B upcast at a time for the map: never a float64 copy of the whole of it


def ridge_operator(features: np.ndarray, queries: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge regression with an intercept as a linear operator, in float64: A (queries x rows) such that, for any
    targets T (rows x t) fitted on `features`, the predictions at `queries` are t̄ + A (T - t̄), t̄ the targets' mean
    row. A = (Q - f̄)(F'F + alpha I)^-1 F' on centred F; with more features than rows (raw TF-IDF) the equal dual
    form (Q - f̄) F'(FF' + alpha I)^-1. The targets are never copied or centred: they can be a view of a large matrix."""
    features = np.asarray(features, dtype=np.float64)
    feature_mean = features.mean(axis=0)
    centred = features - feature_mean
    queries = np.asarray(queries, dtype=np.float64) - feature_mean
    if centred.shape[1] <= centred.shape[0]:
        gram = centred.T @ centred
        gram[np.diag_indices_from(gram)] += alpha
        return np.linalg.solve(gram, queries.T).T @ centred.T  # gram is symmetric: Q G^-1 = (G^-1 Q')'
    kernel = centred @ centred.T
    kernel[np.diag_indices_from(kernel)] += alpha
    return np.linalg.solve(kernel, centred @ queries.T).T


class CollabMapRanker(Ranker):
    """EASE for warm items, x·B̂ for cold ones, with B̂'s columns mapped from item text embeddings.

    `item_embeddings` (item_id, embedding) must cover every item of the split (cold ones included).
    `reg_weight` is EASE's; `alpha` the ridge penalty of the map, fitted on the items with training data.
    `warm="ease"` keeps EASE's own columns for warm items (the map only fills the cold ones); `warm="map"`
    scores every item through the map (an ablation: how much of EASE the text recovers). Mapped columns are
    on EASE's scale (ridge shrinks them towards the mean column), so warm and cold items share one list.

    Defaults chosen on ML-1M's valid fold, with a seeded 10 % of the warm items held out as pseudo-cold items
    (`pseudo_cold_split`; never the test fold; `benchmarks/cold_start_ml1m.py`). With frozen MiniLM item
    embeddings, pseudo-cold NDCG@10 by alpha: 0.1 0.2485 (kept) | 0.3 0.2481 | 1 0.2482 | 3 0.2469 | 10 0.2411
    (flat up to 1); reg_weight is EASERanker's (tuned on valid for the warm ranking).

    `ease`: a fitted `EASERanker` whose B this ranker reuses instead of solving EASE again (the `ease_ranker`
    asset's), when it was fitted on the same training matrix with the same `reg_weight`; otherwise B is fitted
    here (`ease_source_` says which). Warm columns are then EASE's float32 weights, the very values a fit alone
    stores; the mapped cold columns are computed from the float32 B instead of the float64 one, so they agree
    with a fit alone to float32 rounding (about 1e-7 relative), not bit for bit.
    """

    name = "llm_ease_map"
    scores_cold_items = True

    def __init__(self, item_embeddings: pd.DataFrame, reg_weight: float = 750.0, alpha: float = 0.1,
                 warm: str = "ease", name: str | None = None, ease: EASERanker | None = None):
        if reg_weight <= 0:
            raise ValueError(f"reg_weight must be > 0, got {reg_weight}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if warm not in ("ease", "map"):
            raise ValueError(f"warm must be 'ease' or 'map', got {warm!r}")
        self._item_frame = item_embeddings[["item_id", "embedding"]]
        self.reg_weight, self.alpha, self.warm = reg_weight, alpha, warm
        self._ease = ease
        if name:
            self.name = name

    def _fit(self, data: InteractionData) -> None:
        self.item_vectors_ = align(data.item_ids, self._item_frame, "item_id", "items")
        del self._item_frame  # keep the pickled ranker small
        ease, self._ease = getattr(self, "_ease", None), None  # used once, never kept (nor pickled with the fit)
        warm = self.popularity_ > 0
        if warm.sum() < 2:
            raise ValueError(f"{self.name}: needs at least two items with training interactions to fit the map")
        replace = ~warm if self.warm == "ease" else np.ones(len(warm), dtype=bool)
        reason = reusable(ease, data, self.reg_weight)
        if reason is None:
            self.ease_source_ = "ease_ranker"
            weights = ease.weights_.copy() if replace.any() else ease.weights_  # shared only when never written
        else:
            self.ease_source_ = f"own fit ({reason})"
            weights = ease_weights(binarize(data.train), self.reg_weight)  # the one items x items float64 matrix
        if replace.any():
            weights[:, replace] = mapped_columns(weights, self.item_vectors_, warm, replace, self.alpha)
            # No item votes for itself (EASE's zero diagonal), and a cold item is in no training history anyway.
            replaced = np.flatnonzero(replace)
            weights[replaced, replaced] = 0.0
        # float64: ours to turn into the stored float32 weights (C order, as EASERanker's); `weights` is spent
        self.weights_ = float32_in_place(weights) if weights.dtype == np.float64 else weights
        del weights
        self.cold_ = ~warm

    def _score_histories(self, histories: Histories) -> np.ndarray:
        return np.asarray(histories.binary() @ self.weights_, dtype=np.float32)

    def _similar_item_scores(self, position: int) -> np.ndarray:
        # A cold item's row is empty (it is in no training history): fall back on text similarity.
        if self.cold_[position]:
            return self.item_vectors_ @ self.item_vectors_[position]
        return self.weights_[position]


def reusable(ease: EASERanker | None, data: InteractionData, reg_weight: float) -> str | None:
    """None when `ease`'s B is the one `ease_weights(data.train, reg_weight)` gives; else why it is not."""
    if ease is None:
        return "no ease ranker passed"
    if not isinstance(ease, EASERanker) or getattr(ease, "weights_", None) is None:
        return f"{type(ease).__name__} is not a fitted EASERanker"
    if ease.reg_weight != reg_weight:
        return f"ease_ranker's reg_weight {ease.reg_weight} is not {reg_weight}"
    train = getattr(ease, "train_", None)
    if (not np.array_equal(ease.item_ids_, data.item_ids) or train is None or train.shape != data.train.shape
            or (binarize(train) != binarize(data.train)).nnz):
        return "ease_ranker was fitted on another training matrix"
    return None


def mapped_columns(weights: np.ndarray, vectors: np.ndarray, warm: np.ndarray, replace: np.ndarray,
                   alpha: float) -> np.ndarray:
    """B̂'s `replace` columns (items x replaced, float64), ridge-mapped from the warm items' text vectors onto
    their columns of B, in place of a (warm x items) copy of them: mapped = t̄ + A (B[:, warm]' - t̄) =
    t̄ (1 - A 1) + B A_full', A_full zero on the other columns. A float64 B is used whole; a float32 one is
    upcast `MAP_ROW_BLOCK` rows at a time."""
    operator = ridge_operator(vectors[warm], vectors[replace], alpha)
    full = np.zeros((operator.shape[0], len(warm)))
    full[:, warm] = operator
    share = warm / warm.sum()
    step = len(weights) if weights.dtype == np.float64 else MAP_ROW_BLOCK
    mapped = np.empty((len(weights), operator.shape[0]))
    for start in range(0, len(weights), step):
        block = np.asarray(weights[start:start + step], dtype=np.float64)
        mapped[start:start + step] = block @ full.T + (block @ share)[:, None] * (1.0 - operator.sum(axis=1))[None, :]
    return mapped


def pseudo_cold_split(split: pd.DataFrame, share: float = 0.1, seed: int = 2020) -> pd.DataFrame:
    """A cold-start split made from the train and valid folds only, for tuning without the test fold: the real
    cold items (no training rows) and the test fold are dropped, a seeded `share` of the remaining items
    becomes cold (all their rows move to the "test" fold), and the other rows keep their fold. Evaluating its
    cold slice on "test" is the cold-start protocol, one step removed from the real test."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    known = split[split["fold"] != "test"]
    warm_items = np.array(sorted(known.loc[known["fold"] == "train", "item_id"].astype(str).unique()), dtype=object)
    known = known[known["item_id"].astype(str).isin(set(warm_items))]
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(warm_items, size=max(1, int(round(share * len(warm_items)))), replace=False))
    fold = np.where(known["item_id"].astype(str).isin(cold), "test", known["fold"].to_numpy())
    return known.assign(fold=fold).reset_index(drop=True)
