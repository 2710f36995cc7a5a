"""The synthetic shop (seeded, power-law), the one data path on it (DuckDB reads every format, the row checks and the
quarantine name file and row, the split follows the protocol) and the guard that keeps dense item-item rankers off
catalogues they cannot fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic
from llmrec_platform.rankers.collab_map import CollabMapRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.scale import fit_within

SPEC = SyntheticSpec(interactions=30_000, items=600, users=500, chunk=12_000, bad_fraction=0.002)


@pytest.fixture
def shop(tmp_path):
    config = write_synthetic(tmp_path / "shop", SPEC)
    # Planted problems: a repeated key, an unknown item, a timestamp outside the partitions, an empty user id.
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


def test_the_one_path_quarantines_planted_rows_by_file_and_row_and_loads_the_rest(shop):
    dataset = load_dataset(str(shop))
    q = dataset.quarantined("ratings")
    read = sum(dataset.rows["ratings"].values())
    assert read == SPEC.interactions + 4 and len(dataset.ratings) + len(q) == read
    planted = q[q["source_file"].str.endswith("part-99999.parquet")].set_index("row_number")
    assert planted["field"].to_dict() == {1: "timestamp", 2: "item_id", 3: "timestamp", 4: "user_id"}
    assert planted.loc[1, "reason"] == "repeated (user_id, item_id, timestamp): first at row 1"
    assert planted.loc[2, "reason"] == "item not in items.path"
    assert planted.loc[3, "reason"].startswith("timestamp outside the partitioned range")
    assert planted.loc[4, "reason"] == "empty user_id"
    # The generator's own bad rows (9 stars) are each named by file and row, and nothing else is rejected.
    generated = q[~q["source_file"].str.endswith("part-99999.parquet")]
    assert set(generated["reason"]) == {"rating outside [1, 5]"} and generated["row_number"].min() >= 1
    events = pd.concat(pq.read_table(p).to_pandas().assign(f=str(p), r=range(1, pq.read_metadata(p).num_rows + 1))
                       for p in sorted((shop.parent / "events").glob("part-0*.parquet")))
    nine = events[events["stars"] == 9]
    assert sorted(zip(generated["source_file"], generated["row_number"], strict=True)) == sorted(
        zip(nine["f"], nine["r"], strict=True))


def test_csv_parquet_and_json_lines_of_the_same_rows_load_alike(tmp_path):
    rows = pd.DataFrame({"u": ["a", "a", "b", "b", " ", "c"], "i": ["x", "y", "x", "nope", "x", "y"],
                         "s": [4, 5, 3, 4, 2, 11], "t": [880000000, 880000100, 880000200, 880000300, 880000400,
                                                         "2024-03-01T00:00:00Z"]})
    (tmp_path / "items.csv").write_text("id,name\nx,Ex\ny,Why\n")
    rows.astype(str).to_csv(tmp_path / "r.csv", index=False)
    pq.write_table(pa.Table.from_pandas(rows.astype(str)), tmp_path / "r.parquet")
    (tmp_path / "r.jsonl").write_text("\n".join(rows.astype(object).apply(lambda r: r.to_json(), axis=1)) + "\n")
    loaded = {}
    for suffix in ("csv", "parquet", "jsonl"):
        (tmp_path / f"{suffix}.yaml").write_text(
            f"interactions: {{path: r.{suffix}, user: u, item: i, rating: s, rating_range: [1, 10], timestamp: t}}\n"
            "items: {path: items.csv, id: id, text: name}\n")
        ds = load_dataset(str(tmp_path / f"{suffix}.yaml"))
        loaded[suffix] = (ds.ratings.reset_index(drop=True),
                          ds.quarantined("ratings")[["row_number", "field", "reason"]].reset_index(drop=True))
    ratings, rejected = loaded["parquet"]
    assert ratings["user_id"].tolist() == ["a", "a", "b"] and ratings["timestamp"].tolist()[-1] == 880000200
    assert rejected["field"].tolist() == ["item_id", "user_id", "rating"]
    # Row numbers: the Parquet row, the CSV line (header = line 1), the JSON Lines line.
    assert rejected["row_number"].tolist() == [4, 5, 6]
    for suffix in ("csv", "jsonl"):
        pd.testing.assert_frame_equal(loaded[suffix][0], ratings, check_dtype=False)
        offset = 1 if suffix == "csv" else 0
        assert (loaded[suffix][1]["row_number"] - offset).tolist() == [4, 5, 6]
        assert loaded[suffix][1]["reason"].tolist() == rejected["reason"].tolist()


def test_the_split_of_the_synthetic_shop_is_what_the_protocol_says(shop):
    dataset = load_dataset(str(shop))
    interactions = prepare_interactions(dataset.ratings, dataset.items, 3.0, 5)
    assert not interactions.duplicated(["user_id", "item_id"]).any()
    assert interactions["user_id"].value_counts().min() >= 5 and interactions["item_id"].value_counts().min() >= 5
    split = split_interactions(interactions, SplitConfig(core=5))
    n = split.groupby("user_id").size()
    folds = split.groupby(["user_id", "fold"]).size().unstack(fill_value=0)
    assert (folds["test"] == np.maximum(np.floor(n * 0.1), 1)).all()
    assert (folds["valid"] == np.maximum(np.floor(n * 0.1), 1)).all()


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
