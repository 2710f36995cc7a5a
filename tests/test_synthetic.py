"""The synthetic shop (seeded, power-law), the DuckDB bulk path (the same rows, quarantine and folds as the
pandas path) and the guard that keeps dense item-item rankers off catalogues they cannot fit."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmrec_platform.data.bulk import bulk_load, bulk_split
from llmrec_platform.data.config import load_config
from llmrec_platform.data.datasets import DatasetError, load_dataset, partition_range
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic
from llmrec_platform.rankers.collab_map import CollabMapRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.scale import fit_within
from llmrec_platform.storage.warehouse import Warehouse

SPEC = SyntheticSpec(interactions=30_000, items=600, users=500, chunk=12_000, bad_fraction=0.002)


@pytest.fixture
def shop(tmp_path):
    config = write_synthetic(tmp_path / "shop", SPEC)
    # Planted problems the bulk path must treat as the pandas path does.
    first = pq.read_table(tmp_path / "shop" / "events" / "part-00000.parquet").slice(0, 2).to_pylist()
    planted = [first[0], {**first[1], "sku": "SKU-NOPE"}, {**first[1], "ts": 86_400}, {**first[1], "customer_id": " "}]
    pq.write_table(pa.Table.from_pylist(planted, schema=pq.read_schema(tmp_path / "shop" / "events" / "part-00000.parquet")),
                   tmp_path / "shop" / "events" / "part-99999.parquet")
    return config


def test_the_generator_is_seeded_and_power_law(tmp_path, shop):
    again = write_synthetic(tmp_path / "again", SPEC)
    for name in ("catalog.parquet", "events/part-00000.parquet", "events/part-00002.parquet"):
        assert pq.read_table(shop.parent / name).equals(pq.read_table(again.parent / name))
    events = pd.concat(pq.read_table(p).to_pandas() for p in sorted((again.parent / "events").glob("*.parquet")))
    assert len(events) == SPEC.interactions and (events["stars"] == 9).sum() > 0
    items = events["sku"].value_counts()
    users = events["customer_id"].value_counts()
    # Power laws: the top 1% of items and of users draw far more than 1% of the interactions.
    assert items.head(6).sum() / len(events) > 0.08 and users.head(5).sum() / len(events) > 0.04
    catalog = pq.read_table(again.parent / "catalog.parquet").to_pandas()
    assert len(catalog) == SPEC.items and catalog["description"].str.contains(" range.").all()
    other = write_synthetic(tmp_path / "other", SyntheticSpec(**{**SPEC.__dict__, "seed": 8}))
    assert not pq.read_table(other.parent / "events/part-00000.parquet").equals(
        pq.read_table(again.parent / "events/part-00000.parquet"))


def test_the_generator_draws_power_laws_and_taste_clusters_the_item_texts_name():
    import numpy as np

    from llmrec_platform.data.synthetic import CATEGORIES, interaction_chunks, item_table

    events = pa.concat_tables(list(interaction_chunks(SPEC))).to_pandas()
    catalog = item_table(SPEC).to_pandas()
    events = events.merge(catalog[["sku", "category", "description"]], on="sku")
    # Power laws: log(count) against log(rank) over the top 100 falls with a slope near -exponent.
    for column, exponent in (("sku", SPEC.item_exponent), ("customer_id", SPEC.user_exponent)):
        counts = events[column].value_counts().to_numpy()[:100]
        slope = np.polyfit(np.log(np.arange(1, 101)), np.log(counts), 1)[0]
        assert -exponent - 0.3 < slope < -exponent + 0.3, (column, slope)
    # Taste clusters: a user's favourite category (from the first half of their rows) predicts the category of
    # the second half far better than the catalogue's most popular category does; the item text names it.
    assert events.apply(lambda row: row["category"] in row["description"], axis=1).all()
    assert set(catalog["category"]) == set(CATEGORIES)
    events["half"] = events.groupby("customer_id").cumcount() >= events.groupby("customer_id")["sku"].transform("size") / 2
    active = events.groupby("customer_id")["sku"].transform("size") >= 20
    first, second = events[active & ~events["half"]], events[active & events["half"]]
    favourite = first.groupby("customer_id")["category"].agg(lambda c: c.value_counts().index[0])
    by_taste = (second["category"] == second["customer_id"].map(favourite)).mean()
    by_popularity = (second["category"] == events["category"].value_counts().index[0]).mean()
    assert by_taste > SPEC.taste - 0.1 and by_taste > 3 * by_popularity


def test_the_bulk_path_keeps_and_rejects_the_rows_the_pandas_path_does(tmp_path, shop):
    store = Warehouse(tmp_path / "w.duckdb")
    report = bulk_load(load_config(shop), store, partition_range())
    dataset = load_dataset(str(shop))
    assert report.loaded == len(dataset.ratings) and report.quarantined == len(dataset.quarantined("ratings"))
    key = ["user_id", "item_id", "rating", "timestamp"]
    bulk = store.read("ratings")[key].sort_values(key).reset_index(drop=True)
    pandas = dataset.ratings[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(bulk, pandas, check_dtype=False)
    columns = ["source_file", "row_number", "field", "reason"]
    by_bulk = store.read("quarantine")[columns].sort_values(columns).reset_index(drop=True)
    by_pandas = dataset.quarantined("ratings")[columns].sort_values(columns).reset_index(drop=True)
    pd.testing.assert_frame_equal(by_bulk, by_pandas, check_dtype=False)
    reasons = set(by_bulk["reason"].str.replace(r"first at row \d+", "first at row N", regex=True))
    assert {"item not in items.path", "empty user_id", "rating outside [1, 5]",
            "repeated (user_id, item_id, timestamp): first at row N"} <= reasons
    assert any(r.startswith("timestamp outside the partitioned range") for r in reasons)

    # The split: the same interactions after the filter and k-core, the same fold sizes, popularity = train counts.
    split_config = SplitConfig(core=5)
    bulk_split(store, split_config)
    expected = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 5), split_config)
    split = store.read("split")
    assert set(zip(split["user_id"], split["item_id"], strict=True)) == set(
        zip(expected["user_id"], expected["item_id"], strict=True))
    assert split["fold"].value_counts().to_dict() == expected["fold"].value_counts().to_dict()
    assert split.groupby("user_id")["fold"].value_counts().equals(expected.groupby("user_id")["fold"].value_counts())
    popularity = store.read("popularity").set_index("item_id")["interactions"]
    assert popularity.to_dict() == split[split["fold"] == "train"]["item_id"].value_counts().to_dict()


def test_the_bulk_path_reads_parquet_only(tmp_path):
    (tmp_path / "r.csv").write_text("u,i,s\na,x,4\n")
    (tmp_path / "items.csv").write_text("id,name\nx,Ex\n")
    (tmp_path / "c.yaml").write_text("interactions: {path: r.csv, user: u, item: i, rating: s}\n"
                                     "items: {path: items.csv, id: id, text: name}\n")
    with pytest.raises(DatasetError, match="the bulk path reads Parquet only"):
        bulk_load(load_config(tmp_path / "c.yaml"), Warehouse(tmp_path / "w.duckdb"), partition_range())


def test_a_dense_ranker_is_skipped_above_the_limit_and_a_sparse_one_named():
    ease = EASERanker()
    assert fit_within(ease, 20_000, 20_000) == (ease, None)
    stand_in, reason = fit_within(ease, 100_000, 20_000)
    assert stand_in.name == "rp3beta_for_ease" and type(stand_in).__name__ == "RP3betaRanker"
    assert "ease skipped" in reason and "100,000 items needs 40.0 GB" in reason and "LLMREC_DENSE_MAX_ITEMS" in reason
    mapped, reason = fit_within(CollabMapRanker(pd.DataFrame({"item_id": [], "embedding": []})), 50_000, 20_000)
    assert mapped.name == "rp3beta_for_llm_ease_map" and reason
    knn = ItemKNNRanker()
    assert fit_within(knn, 10**6, 20_000) == (knn, None)  # sparse already


def test_the_bulk_path_pseudonymizes_like_the_loader(tmp_path, shop):
    from llmrec_platform.data.privacy import WITHHELD, Pseudonymizer, pseudonymize_dataset

    key = "bulk-key-0123456789abcdef"
    store = Warehouse(tmp_path / "w.duckdb")
    bulk_load(load_config(shop), store, partition_range(), pseudonymizer=Pseudonymizer(key))
    expected = pseudonymize_dataset(load_dataset(str(shop)), Pseudonymizer(key))
    assert sorted(store.read("ratings")["user_id"]) == sorted(expected.ratings["user_id"])
    assert set(store.read("quarantine")["raw"]) == {WITHHELD}
