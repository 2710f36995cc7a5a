"""Split protocols: folds disjoint, ratios, every test user has training history, seeded."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.split import (
    SplitConfig,
    cold_items,
    k_core,
    lower_quantile_position,
    prepare_interactions,
    split_interactions,
    split_table,
)


def synthetic(n_users=60, n_items=80, per_user=25, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), int(rng.integers(8e8, 9e8))))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]})
    return ratings, items


def test_k_core_is_iterative():
    # u3 has 2 interactions; removing u3 drops item c to 1 user -> c must go, which then drops u2 below 2.
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3", "u3"],
                          "item_id": ["a", "b", "a", "c", "b", "d"]})
    kept = k_core(frame, 2)
    assert set(kept["user_id"]) == {"u1"} or kept.empty
    counts_ok = (kept["user_id"].value_counts() >= 2).all() and (kept["item_id"].value_counts() >= 2).all()
    assert kept.empty or counts_ok


def test_prepare_filters_ratings_and_core():
    ratings, items = synthetic(per_user=45)
    frame = prepare_interactions(ratings, items, min_rating=3, core=10)
    assert len(frame) > 0.5 * (ratings["rating"] >= 3).sum()
    assert frame["rating"].min() >= 3
    assert frame["user_id"].value_counts().min() >= 10
    assert frame["item_id"].value_counts().min() >= 10
    assert not frame.duplicated(["user_id", "item_id"]).any()


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_split_invariants(protocol):
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    split = split_interactions(frame, SplitConfig(protocol=protocol, core=5))
    assert set(split["fold"]) == {"train", "valid", "test"}
    # Folds are disjoint on user-item pairs.
    assert not split.duplicated(["user_id", "item_id"]).any()
    train_users = set(split.loc[split["fold"] == "train", "user_id"])
    assert set(split.loc[split["fold"] != "train", "user_id"]) <= train_users
    if protocol == "temporal":
        train_end = split.loc[split["fold"] == "train", "timestamp"].max()
        assert split.loc[split["fold"] != "train", "timestamp"].min() >= train_end  # no leak from the future
        train_items = set(split.loc[split["fold"] == "train", "item_id"])
        assert set(split.loc[split["fold"] != "train", "item_id"]) <= train_items


def test_recbole_ratios_per_user_match_recbole():
    ratings, items = synthetic(per_user=23)
    frame = prepare_interactions(ratings, items, 0.5, 1)
    split = split_interactions(frame, SplitConfig(core=1))
    counts = split.groupby(["user_id", "fold"]).size().unstack(fill_value=0)
    n = counts.sum(axis=1)
    # RecBole: valid = test = floor(0.1 n), train gets the rest.
    assert (counts["valid"] == np.floor(0.1 * n)).all()
    assert (counts["test"] == np.floor(0.1 * n)).all()
    assert (counts["train"] == n - 2 * np.floor(0.1 * n)).all()


def test_seeded_and_seed_sensitive():
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    a = split_interactions(frame, SplitConfig(core=5, seed=1))
    b = split_interactions(frame.sample(frac=1, random_state=3), SplitConfig(core=5, seed=1))
    c = split_interactions(frame, SplitConfig(core=5, seed=2))
    key = ["user_id", "item_id"]
    assert a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))
    assert not a.sort_values(key)["fold"].reset_index(drop=True).equals(c.sort_values(key)["fold"].reset_index(drop=True))


def test_cold_items_never_in_train():
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    split = split_interactions(frame, SplitConfig(core=5, cold_item_fraction=0.1))
    cold = cold_items(split)
    assert len(cold) == pytest.approx(0.1 * frame["item_id"].nunique(), abs=1)
    assert not split.loc[split["fold"] == "train", "item_id"].isin(cold).any()
    assert split.loc[split["fold"] == "test", "item_id"].isin(cold).any()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="protocol"):
        SplitConfig(protocol="leave-one-out")
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(ratios=(0.5, 0.1, 0.1))


# --- hand-built cases: the SQL protocol against numbers worked out by hand ----------------------------------------

def test_recbole_takes_each_users_rows_in_numpys_permutation_order():
    # One user, ten items at times 1..10: sorted row i (time i + 1) lands at position inverse_permutation[i];
    # the last position is test, the one before valid (floor(0.1 * 10) = 1 each), the other eight train.
    frame = pd.DataFrame({"user_id": "u", "item_id": [f"i{t}" for t in range(10)], "rating": 4.0,
                          "timestamp": range(1, 11)})
    permutation = np.random.default_rng(7).permutation(10)
    split = split_interactions(frame.sample(frac=1, random_state=1), SplitConfig(core=1, seed=7))
    fold = dict(zip(split["item_id"], split["fold"], strict=True))
    assert fold[f"i{permutation[9]}"] == "test" and fold[f"i{permutation[8]}"] == "valid"
    assert sorted(t for t, f in fold.items() if f == "train") == sorted(f"i{p}" for p in permutation[:8])
    assert split["item_id"].tolist() == [f"i{p}" for p in permutation]  # rows come out in shuffled order


def test_recbole_gives_a_small_user_one_row_per_fold():
    frame = pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 20, "item_id": [f"i{k}" for k in range(23)], "rating": 4.0,
                          "timestamp": range(23)})
    counts = split_interactions(frame, SplitConfig(core=1)).groupby(["user_id", "fold"]).size().to_dict()
    assert counts == {("a", "test"): 1, ("a", "train"): 1, ("a", "valid"): 1,
                      ("b", "test"): 2, ("b", "train"): 16, ("b", "valid"): 2}


def test_temporal_cuts_at_numpys_lower_quantiles_and_drops_the_unseen():
    # Times 1..10: train <= the value at position floor(9 * 0.8) = 7 (time 8), valid <= position 8 (time 9).
    frame = pd.DataFrame({"user_id": ["u"] * 8 + ["u", "new"], "item_id": [f"i{t % 4}" for t in range(9)] + ["i0"],
                          "rating": 4.0, "timestamp": range(1, 11)})
    split = split_interactions(frame, SplitConfig(protocol="temporal", core=1))
    assert split["fold"].tolist() == ["train"] * 8 + ["valid"]  # user "new" has no training rows: dropped
    assert split["timestamp"].tolist() == list(range(1, 10))
    for n in (1, 2, 9, 10, 11, 1000, 834449):
        for q in (0.8, 0.8 + 0.1, 0.5):
            assert np.sort(np.arange(n))[lower_quantile_position(n, q)] == np.quantile(np.arange(n), q, method="lower")


def test_prepare_keeps_the_latest_rating_of_known_items_above_the_threshold():
    ratings = pd.DataFrame({"user_id": ["u", "u", "u", "u", "v"], "item_id": ["a", "a", "b", "zzz", "a"],
                            "rating": [5.0, 3.0, 2.0, 5.0, 4.0], "timestamp": [10, 20, 5, 1, 1]})
    items = pd.DataFrame({"item_id": ["a", "b"]})
    frame = prepare_interactions(ratings, items, 3.0, 1)
    # (u, a): the later rating (3.0 at 20) wins; (u, b) is below 3; zzz is not an item; rows in time order.
    assert frame[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [["v", "a", 4.0, 1], ["u", "a", 3.0, 20]]


# --- MovieLens-100K: the folds are exactly those of the numpy protocol (RecBole's RS split) -------------------------

def _reference(interactions: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """The protocol in plain numpy/pandas, as the platform computed it before the DuckDB path (issue 20)."""
    if config.protocol == "temporal":
        times = interactions["timestamp"].to_numpy()
        cuts = [np.quantile(times, q, method="lower") for q in (config.ratios[0], config.ratios[0] + config.ratios[1])]
        frame = interactions.assign(fold=np.where(times <= cuts[0], "train", np.where(times <= cuts[1], "valid", "test")))
        train = frame[frame["fold"] == "train"]
        return frame[(frame["fold"] == "train") | (frame["user_id"].isin(train["user_id"])
                                                   & frame["item_id"].isin(train["item_id"]))]
    frame = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    frame = frame.iloc[np.random.default_rng(config.seed).permutation(len(frame))].sort_values("user_id", kind="stable")
    position = frame.groupby("user_id").cumcount().to_numpy()
    count = frame["user_id"].map(frame["user_id"].value_counts()).to_numpy()
    n_valid = np.maximum(np.floor(count * config.ratios[1]), 1)
    n_test = np.maximum(np.floor(count * config.ratios[2]), 1)
    return frame.assign(fold=np.where(position < count - n_valid - n_test, "train",
                                      np.where(position < count - n_test, "valid", "test")))


@pytest.fixture(scope="module")
def ml100k_interactions():
    from llmrec_platform.data.datasets import load_dataset

    try:
        dataset = load_dataset("ml-100k")
    except ValueError as exc:
        pytest.skip(str(exc))
    return prepare_interactions(dataset.ratings, dataset.items, 3.0, 10)


@pytest.mark.parametrize("protocol, folds", [("recbole", {"train": 65165, "valid": 7614, "test": 7614}),
                                             ("temporal", {"train": 64315, "valid": 1155, "test": 1093})])
def test_ml100k_folds_are_the_numpy_protocols_row_for_row(ml100k_interactions, protocol, folds):
    import hashlib

    assert len(ml100k_interactions) == 80393  # ratings >= 3 of known items, 10-core
    config = SplitConfig(protocol=protocol)
    split = split_interactions(ml100k_interactions, config)
    expected = _reference(ml100k_interactions, config)
    key = ["user_id", "item_id", "fold"]
    assert split[key].sort_values(key).values.tolist() == expected[key].sort_values(key).values.tolist()
    assert split["fold"].value_counts().to_dict() == folds
    # The fingerprint recorded before the DuckDB path (sorted (user, item, fold) rows), as a last guard.
    rows = sorted(zip(split["user_id"], split["item_id"], split["fold"], strict=True))
    digest = hashlib.sha256("\n".join("\t".join(r) for r in rows).encode()).hexdigest()
    assert digest == {"recbole": "91b655607b29e9e2306d6a5d304a0f9cacfea7fc9db702622dbc1c1566cb0e67",
                      "temporal": "a686dc04ef358b80db5e1001e20f877e66922176394d9ab20b765de470ad1b31"}[protocol]


def test_interaction_matrices_come_from_arrow_batches_in_id_order():
    import pyarrow as pa

    from llmrec_platform.data.interactions import InteractionData

    split = pd.DataFrame({"user_id": ["u2", "u1", "u1", "u2", "u10"], "item_id": ["b", "a", "c", "a", "b"],
                          "rating": [5.0, 3.0, 4.0, 1.0, 2.0], "timestamp": [50, 10, 40, 20, 30],
                          "fold": ["train", "train", "valid", "test", "train"]})
    for source in (split, pa.Table.from_pandas(split)):
        data = InteractionData.from_split(source, batch_rows=2)  # three batches
        assert data.user_ids.tolist() == ["u1", "u10", "u2"] and data.item_ids.tolist() == ["a", "b", "c"]
        assert data.train.toarray().tolist() == [[3, 0, 0], [0, 2, 0], [0, 5, 0]]
        assert data.train_timestamps.toarray().tolist() == [[10, 0, 0], [0, 30, 0], [0, 50, 0]]
        assert data.valid.toarray().tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
        assert data.test.toarray().tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
        assert data.train.dtype == np.float32 and data.cold_item_mask().tolist() == [False, False, True]


def _dataframe_matrices(split: pd.DataFrame) -> tuple:
    """The matrices as `InteractionData.from_split` built them from a DataFrame before the Arrow path (d35fb0b)."""
    import scipy.sparse as sp

    user_ids = np.array(sorted(split["user_id"].astype(str).unique()), dtype=object)
    item_ids = np.array(sorted(split["item_id"].astype(str).unique()), dtype=object)
    user_pos = pd.Index(user_ids).get_indexer(split["user_id"].astype(str))
    item_pos = pd.Index(item_ids).get_indexer(split["item_id"].astype(str))
    shape = (len(user_ids), len(item_ids))

    def matrix(fold: str, values: np.ndarray) -> sp.csr_matrix:
        mask = (split["fold"] == fold).to_numpy()
        return sp.csr_matrix((values[mask], (user_pos[mask], item_pos[mask])), shape=shape)

    ones = np.ones(len(split), dtype=np.float32)
    return user_ids, item_ids, {"train": matrix("train", split["rating"].to_numpy(dtype=np.float32)),
                                "train_timestamps": matrix("train", split["timestamp"].to_numpy(dtype=np.float64)),
                                "valid": matrix("valid", ones), "test": matrix("test", ones)}


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_arrow_built_matrices_equal_the_dataframe_built_ones_on_ml100k(ml100k_interactions, protocol):
    from llmrec_platform.data.interactions import InteractionData

    table = split_table(ml100k_interactions, SplitConfig(protocol=protocol, cold_item_fraction=0.05))
    user_ids, item_ids, expected = _dataframe_matrices(table.to_pandas())
    # Arrow as the assets get it, in one batch and in many, and a shuffled pandas copy: the same arrays each time
    shuffled = table.to_pandas().sample(frac=1.0, random_state=0)
    for source, batch_rows in ((table, 1_000_000), (table, 4_999), (shuffled, 1_000_000)):
        data = InteractionData.from_split(source, batch_rows=batch_rows)
        assert data.user_ids.tolist() == user_ids.tolist() and data.item_ids.tolist() == item_ids.tolist()
        for name, want in expected.items():
            got = getattr(data, name)
            assert got.shape == want.shape and got.dtype == want.dtype and got.has_sorted_indices
            for part in ("indptr", "indices", "data"):
                assert np.array_equal(getattr(got, part), getattr(want, part)), (protocol, name, part)
    assert expected["test"].nnz > 0


def test_a_pair_twice_in_a_fold_adds_up_as_scipy_does():
    from llmrec_platform.data.interactions import InteractionData

    split = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["a", "a", "b", "b"],
                          "rating": [3.0, 4.0, 5.0, 5.0], "timestamp": [1, 2, 3, 4],
                          "fold": ["train", "train", "test", "test"]})
    data = InteractionData.from_split(split)
    _, _, expected = _dataframe_matrices(split)
    assert data.train.toarray().tolist() == expected["train"].toarray().tolist() == [[7, 0], [0, 0]]
    assert data.test.toarray().tolist() == expected["test"].toarray().tolist() == [[0, 0], [0, 2]]
    assert data.train.nnz == 1 and data.train_timestamps.toarray()[0, 0] == 3


def test_the_warehouse_io_manager_hands_arrow_to_arrow_inputs_and_pandas_to_the_others(tmp_path):
    import dagster as dg
    import pyarrow as pa
    from dagster._core.types.dagster_type import resolve_dagster_type

    from llmrec_platform.resources.io_managers import WarehouseIOManager

    manager = WarehouseIOManager(path=str(tmp_path / "warehouse.duckdb"))
    table = pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "rating": [4.0, 5.0], "timestamp": [1, 2]})
    output = dg.build_output_context(asset_key="split", definition_metadata={"table": "split"})
    manager.handle_output(output, table)
    loaded = {}
    for kind in (pa.Table, pd.DataFrame):
        context = dg.build_input_context(upstream_output=output, dagster_type=resolve_dagster_type(kind),
                                         asset_key="split")
        loaded[kind] = manager.load_input(context)
    assert isinstance(loaded[pa.Table], pa.Table) and loaded[pa.Table].equals(table)
    assert isinstance(loaded[pd.DataFrame], pd.DataFrame) and loaded[pd.DataFrame].equals(table.to_pandas())
    with pytest.raises(TypeError, match="stores DataFrames and Arrow tables, got dict"):
        manager.handle_output(output, {"not": "a table"})


def test_the_popularity_table_counts_what_the_rankers_count(ml100k_interactions):
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.data.split import popularity_table

    split = split_table(ml100k_interactions, SplitConfig(cold_item_fraction=0.05))
    table = popularity_table(split)
    data = InteractionData.from_split(split)
    rows = table.to_pandas().set_index("item_id").loc[data.item_ids]
    assert table.num_rows == data.n_items
    assert rows["interactions"].tolist() == data.train.getnnz(axis=0).tolist()  # the rankers' popularity_
    frame = split.to_pandas()
    train = frame[frame["fold"] == "train"]
    assert np.allclose(rows["mean_rating"].dropna(), train.groupby("item_id")["rating"].mean().loc[rows.dropna().index])
    assert rows["valid"].sum() == (frame["fold"] == "valid").sum() and rows["test"].sum() == (frame["fold"] == "test").sum()
    cold = rows[rows["interactions"] == 0]
    assert len(cold) == len(cold_items(split)) > 0 and cold["mean_rating"].isna().all()
    # rank 1 is the most popular; ties by item id, as the rankers break them
    expected = sorted(zip(-rows["interactions"], rows.index, strict=True))
    assert table["item_id"].to_pylist() == [item for _, item in expected]
    assert table["rank"].to_pylist() == list(range(1, table.num_rows + 1))


def test_item_popularity_asset_writes_the_table_and_its_top_items():
    import dagster as dg
    import pyarrow as pa

    from llmrec_platform.assets.split import item_popularity

    split = pa.table({"user_id": ["u1", "u2", "u3", "u1", "u2", "u3"], "item_id": ["b", "b", "a", "a", "c", "c"],
                      "rating": [4.0, 2.0, 5.0, 3.0, 4.0, 1.0], "timestamp": [1, 2, 3, 4, 5, 6],
                      "fold": ["train", "train", "train", "train", "test", "valid"]})
    context = dg.build_asset_context()
    table = item_popularity(context, split)
    assert table.select(["rank", "item_id", "interactions", "mean_rating", "valid", "test"]).to_pylist() == [
        {"rank": 1, "item_id": "a", "interactions": 2, "mean_rating": 4.0, "valid": 0, "test": 0},
        {"rank": 2, "item_id": "b", "interactions": 2, "mean_rating": 3.0, "valid": 0, "test": 0},
        {"rank": 3, "item_id": "c", "interactions": 0, "mean_rating": None, "valid": 1, "test": 1}]
    metadata = context.get_output_metadata("result")
    assert metadata["items"] == 3 and metadata["cold_items"] == 1 and "| 1 | a | 2 |" in metadata["top_10"].value
