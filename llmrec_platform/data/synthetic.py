"""A seeded synthetic shop at any size, as Parquet plus the dataset config that maps it (no Dagster).

    write_synthetic(folder, SyntheticSpec(interactions=20_000_000, items=100_000))

- Items: a power-law popularity (item rank r drawn with weight 1 / r^item_exponent), a category, and a
  title and description assembled from word lists (so the text encoders have something to read).
- Users: a power-law activity (user rank drawn with weight 1 / r^user_exponent) and a favourite category;
  `taste` of each user's interactions are drawn from it (by popularity within the category), the rest
  from the whole catalogue, so collaborative and content models have a signal to find.
- Interactions: string ids (`U0000042`, `SKU-000042`), 1-5 stars, epoch-second timestamps spread over
  `days` days from `start`; `bad_fraction` of rows carry a rating outside the range (quarantined on load).

Interactions are generated and written in chunks (`events/part-*.parquet`), so memory stays flat at any N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

CATEGORIES = ["running", "kitchen", "garden", "books", "music", "toys", "outdoor", "office", "beauty", "tools",
              "games", "travel"]
ADJECTIVES = ["light", "sturdy", "classic", "compact", "premium", "vintage", "modern", "soft", "bold", "quiet",
              "smart", "rugged", "elegant", "handmade", "foldable", "wireless", "organic", "bright", "slim", "cozy"]
NOUNS = {
    "running": ["trainer", "racer", "trail shoe", "running sock", "hydration vest"],
    "kitchen": ["chef knife", "cast iron pan", "kettle", "stock pot", "cutting board"],
    "garden": ["trowel", "hose", "planter", "pruner", "seed tray"],
    "books": ["novel", "cookbook", "travel guide", "poetry collection", "biography"],
    "music": ["guitar", "headphones", "vinyl record", "ukulele", "metronome"],
    "toys": ["puzzle", "building set", "plush bear", "kite", "toy train"],
    "outdoor": ["tent", "sleeping bag", "lantern", "backpack", "camp stove"],
    "office": ["notebook", "desk lamp", "fountain pen", "stapler", "monitor stand"],
    "beauty": ["face cream", "hair brush", "lip balm", "perfume", "nail kit"],
    "tools": ["hammer", "drill", "wrench set", "tape measure", "screwdriver"],
    "games": ["board game", "card deck", "chess set", "dice set", "game controller"],
    "travel": ["suitcase", "neck pillow", "packing cube", "travel adapter", "passport wallet"],
}
USES = ["everyday use", "weekends", "beginners", "experts", "gifts", "small spaces", "long trips", "families"]
STAR_P = [0.05, 0.1, 0.2, 0.35, 0.3]


@dataclass(frozen=True)
class SyntheticSpec:
    interactions: int
    items: int
    users: int | None = None  # default: interactions // 50
    item_exponent: float = 0.9
    user_exponent: float = 0.8
    taste: float = 0.6  # share of a user's interactions drawn from their favourite category
    start: str = "2020-01-01"
    days: int = 3 * 365
    bad_fraction: float = 0.0
    seed: int = 7
    chunk: int = 1_000_000

    @property
    def n_users(self) -> int:
        return self.users or max(1, self.interactions // 50)


def _power_law_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Ranks 0..len(cdf)-1 drawn with the power-law weights (inverse CDF: O(log n) per draw)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0"), "")


def item_table(spec: SyntheticSpec) -> pa.Table:
    """sku, title, description, category; item i has popularity rank i and category i mod |CATEGORIES|."""
    rng = np.random.default_rng(spec.seed)
    n = spec.items
    category = np.arange(n) % len(CATEGORIES)
    adjective = rng.integers(0, len(ADJECTIVES), size=(n, 2))
    noun = rng.integers(0, 5, size=n)
    use = rng.integers(0, len(USES), size=n)
    titles, descriptions = [], []
    for i in range(n):
        cat = CATEGORIES[category[i]]
        thing = NOUNS[cat][noun[i]]
        titles.append(f"{ADJECTIVES[adjective[i, 0]].title()} {thing} {i}")
        adj = ADJECTIVES[adjective[i, 1]]
        descriptions.append(f"{'An' if adj[0] in 'aeiou' else 'A'} {adj} {thing} for {USES[use[i]]}, from our {cat} range.")
    return pa.table({"sku": _ids("SKU-", np.arange(n), 6), "title": titles, "description": descriptions,
                     "category": [CATEGORIES[c] for c in category]})


def interaction_chunks(spec: SyntheticSpec):
    """Yield pyarrow tables (customer_id, sku, stars, ts) of at most `spec.chunk` rows, seeded."""
    rng = np.random.default_rng(spec.seed + 1)
    n_users, n_items, n_cat = spec.n_users, spec.items, len(CATEGORIES)
    user_cdf = _power_law_cdf(n_users, spec.user_exponent)
    item_cdf = _power_law_cdf(n_items, spec.item_exponent)
    per_category = -(-n_items // n_cat)
    category_cdf = _power_law_cdf(per_category, spec.item_exponent)
    user_of_rank = rng.permutation(n_users)  # ids not ordered by activity
    favourite = rng.integers(0, n_cat, size=n_users)
    start = int(np.datetime64(spec.start, "s").astype("int64"))
    left = spec.interactions
    while left > 0:
        size = min(spec.chunk, left)
        left -= size
        users = user_of_rank[_draw(rng, user_cdf, size)]
        items = _draw(rng, item_cdf, size)
        in_taste = rng.random(size) < spec.taste
        by_taste = _draw(rng, category_cdf, int(in_taste.sum())) * n_cat + favourite[users[in_taste]]
        # The last row of categories may be short: wrap a too-large item into the catalogue.
        items[in_taste] = np.where(by_taste < n_items, by_taste, by_taste % n_items)
        stars = rng.choice(np.arange(1, 6, dtype=np.int8), size=size, p=STAR_P).astype(np.float32)
        if spec.bad_fraction > 0:
            stars[rng.random(size) < spec.bad_fraction] = 9.0
        ts = start + rng.integers(0, spec.days * 86_400, size=size, dtype=np.int64)
        yield pa.table({"customer_id": _ids("U", users, 7), "sku": _ids("SKU-", items, 6), "stars": stars, "ts": ts})


def write_synthetic(folder: str | Path, spec: SyntheticSpec) -> Path:
    """Write the shop under `folder` (events/part-*.parquet, catalog.parquet, synthetic.yaml); returns the
    config path."""
    folder = Path(folder)
    events = folder / "events"
    events.mkdir(parents=True, exist_ok=True)
    for old in events.glob("part-*.parquet"):
        old.unlink()
    pq.write_table(item_table(spec), folder / "catalog.parquet")
    for number, table in enumerate(interaction_chunks(spec)):
        pq.write_table(table, events / f"part-{number:05d}.parquet", row_group_size=256 * 1024)
    config = {
        "name": f"synthetic-{spec.interactions}x{spec.items}",
        "interactions": {"path": "events/*.parquet", "user": "customer_id", "item": "sku", "rating": "stars",
                         "rating_range": [1, 5], "timestamp": "ts"},
        "items": {"path": "catalog.parquet", "id": "sku", "text": ["title", "description"], "categories": "category"},
    }
    path = folder / "synthetic.yaml"
    path.write_text(f"# written by llmrec_platform.data.synthetic: {asdict(spec)}\n" + yaml.safe_dump(config, sort_keys=False))
    return path
