"""Which rankers fit a catalogue's size (no Dagster).

EASE and llm_ease_map hold a dense items x items matrix: 4 n^2 bytes in float32 (40 GB at 100k items), and
while fitting one float64 matrix (Gram, inverse and weights share one buffer: `ease_weights`). Above `max_items`
such a ranker is not fitted; the sparse RP3beta graph (top-k neighbours per item: O(items x k) memory) stands in,
under a name that says so, so the rankers downstream (evaluation, hybrid candidates) still run.
"""

from __future__ import annotations

from llmrec_platform.rankers.base import Ranker
from llmrec_platform.rankers.collab_map import CollabMapRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.rp3beta import RP3betaRanker

DENSE_ITEM_ITEM = (EASERanker, CollabMapRanker)


def dense_gb(n_items: int) -> float:
    """GB of one float32 items x items matrix."""
    return 4 * n_items**2 / 1e9


def fit_within(ranker: Ranker, n_items: int, max_items: int) -> tuple[Ranker, str | None]:
    """(`ranker`, None) when it scales to `n_items`; otherwise (the sparse stand-in, the reason to log)."""
    if not isinstance(ranker, DENSE_ITEM_ITEM) or n_items <= max_items:
        return ranker, None
    alternative = RP3betaRanker()
    alternative.name = f"rp3beta_for_{ranker.name}"
    return alternative, (
        f"{ranker.name} skipped: a dense item-item model on {n_items:,} items needs {dense_gb(n_items):,.1f} GB for one "
        f"float32 matrix (3x that while fitting), above the limit of {max_items:,} items (LLMREC_DENSE_MAX_ITEMS). "
        f"The sparse alternative RP3beta (top-{alternative.k} neighbours per item) is fitted in its place as "
        f"{alternative.name!r}; itemknn_ranker is sparse too.")
