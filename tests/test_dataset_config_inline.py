"""A dataset config given inline as Dagster run config (`resources.dataset.config.inline`): the same parser
as a YAML file, relative paths against `base_dir` or the working directory, memo keys on the canonical JSON
plus the data files' stamps, and errors that name the key path."""

from __future__ import annotations

import os

import dagster as dg
import duckdb
import pandas as pd
import pytest

from llmrec_platform.assets.ingest import raw_items, raw_ratings, raw_users
from llmrec_platform.data.config import ConfigError, load_config
from llmrec_platform.data.datasets import DatasetError, InlineConfig, load_dataset_cached
from llmrec_platform.data.privacy import Pseudonymizer
from llmrec_platform.definitions import build_resources
from llmrec_platform.resources import DatasetResource

APRIL_2024 = 1_711_929_600  # 2024-04-01 UTC
WHERE = "resources.dataset.config.inline"


def write_tiny_shop(folder) -> None:
    """Parquet interactions with string ids (one with leading zeros, one with a space) and a CSV catalogue."""
    data = folder / "data"
    data.mkdir(parents=True)
    pd.DataFrame({
        "customer_id": ["007", "007", "C-42", "C-42", "ann b"],
        "sku": ["A-1", "B-2", "A-1", "C-3", "B-2"],
        "stars": [5, 3, 4, 2, 1],
        "ts": [APRIL_2024 + i * 3600 for i in range(5)],
    }).to_parquet(data / "interactions.parquet", index=False)
    (data / "items.csv").write_text("sku,name\nA-1,Trail shoe\nB-2,Road shoe\nC-3,Frying pan\n")


def inline(**interactions) -> dict:
    return {"name": "my-shop",
            "interactions": {"path": "data/*.parquet", "user": "customer_id", "item": "sku", "rating": "stars",
                             "timestamp": "ts", **interactions},
            "items": {"path": "data/items.csv", "id": "sku", "text": "name"}}


def run_config(mapping: dict, base_dir=None) -> dict:
    config = {"source": "inline", "inline": mapping, **({"base_dir": str(base_dir)} if base_dir else {})}
    return {"resources": {"dataset": {"config": config}}}


def ingest(home, config: dict):
    """The ingest assets of the code location's resources, the dataset given only through run config."""
    resources = build_resources(home, device="cpu")
    catalogue = dg.materialize([raw_items, raw_users], resources=resources, run_config=config, raise_on_error=False)
    ratings = dg.materialize([raw_ratings], partition_key="2024-04-01", resources=resources, run_config=config,
                             raise_on_error=False)
    return catalogue, ratings


def failure(result, step: str) -> str:
    """The ConfigError a failed step raised: its message, without the class name Dagster puts first."""
    cause = result.failure_data_for_node(step).error.cause
    assert cause.cls_name == "ConfigError"
    return cause.message.strip().removeprefix("llmrec_platform.data.config.ConfigError: ")


def test_an_inline_config_materializes_the_ingest_assets(llmrec_home, tmp_path):
    write_tiny_shop(tmp_path / "shop")
    catalogue, ratings = ingest(llmrec_home, run_config(inline(), base_dir=tmp_path / "shop"))
    assert catalogue.success and ratings.success
    with duckdb.connect(str(llmrec_home.warehouse), read_only=True) as conn:
        rows = conn.execute("SELECT user_id, item_id, rating, timestamp, dataset FROM ratings ORDER BY timestamp").fetchall()
        items = conn.execute("SELECT item_id, title FROM items ORDER BY item_id").fetchall()
    label = "inline:my-shop"  # the config's name labels the dataset
    assert rows == [("007", "A-1", 5.0, APRIL_2024, label), ("007", "B-2", 3.0, APRIL_2024 + 3600, label),
                    ("C-42", "A-1", 4.0, APRIL_2024 + 7200, label), ("C-42", "C-3", 2.0, APRIL_2024 + 10800, label),
                    ("ann b", "B-2", 1.0, APRIL_2024 + 14400, label)]
    assert items == [("A-1", "Trail shoe"), ("B-2", "Road shoe"), ("C-3", "Frying pan")]


def test_relative_paths_resolve_against_the_working_directory_without_base_dir(tmp_path, monkeypatch):
    write_tiny_shop(tmp_path / "shop")
    monkeypatch.chdir(tmp_path / "shop")
    config = load_config(DatasetResource(source="inline", inline=inline()).dataset_source())
    assert config.interactions.path == str(tmp_path / "shop" / "data" / "*.parquet")
    assert config.file == WHERE and config.name == "my-shop"
    elsewhere = DatasetResource(source="inline", inline=inline(), base_dir=str(tmp_path / "other")).dataset_source()
    assert load_config(elsewhere).items.path == str(tmp_path / "other" / "data" / "items.csv")


def test_the_memo_keys_on_the_canonical_mapping_and_the_file_stamps(tmp_path):
    write_tiny_shop(tmp_path / "shop")
    mapping = inline()
    reordered = {key: mapping[key] for key in reversed(list(mapping))}
    first, same = InlineConfig.of(mapping, tmp_path / "shop"), InlineConfig.of(reordered, tmp_path / "shop")
    assert first == same and hash(first) == hash(same)
    assert first != InlineConfig.of(mapping, tmp_path)  # another base folder is another dataset
    loaded = load_dataset_cached(first)
    assert load_dataset_cached(same) is loaded  # served from the memo
    assert loaded.name == "my-shop" and len(loaded.ratings) == 5
    # A data file changes: the stamp changes, the dataset is read again.
    items = tmp_path / "shop" / "data" / "items.csv"
    items.write_text(items.read_text() + "D-4,Kettle\n")
    os.utime(items, ns=(items.stat().st_atime_ns, items.stat().st_mtime_ns + 1_000_000_000))
    reloaded = load_dataset_cached(first)
    assert reloaded is not loaded and len(reloaded.items) == 4


def test_a_bad_inline_config_names_the_key_path(llmrec_home, tmp_path):
    write_tiny_shop(tmp_path / "shop")
    bad = inline()
    del bad["interactions"]["user"]
    catalogue, ratings = ingest(llmrec_home, run_config(bad, base_dir=tmp_path / "shop"))
    assert not catalogue.success and not ratings.success
    assert failure(ratings, "raw_ratings") == f"{WHERE}: interactions.user is required"

    catalogue, ratings = ingest(llmrec_home, run_config(inline(user="customer"), base_dir=tmp_path / "shop"))
    message = failure(ratings, "raw_ratings")
    assert message.startswith(f"{WHERE}: interactions.user = 'customer' is not a column of ")
    assert "interactions.parquet" in message and "customer_id" in message

    with pytest.raises(ConfigError, match=rf"^{WHERE}: error_budget = 2: expected a share between 0 and 1"):
        load_config(InlineConfig.of({**inline(), "error_budget": 2}, tmp_path, WHERE))
    with pytest.raises(ConfigError, match=rf"^{WHERE}.encoder: .* set resources.encoder.config.model in the same run"):
        DatasetResource(source="inline", inline={**inline(), "encoder": "e5-small"}, base_dir=str(tmp_path / "shop")).load()
    with pytest.raises(DatasetError, match=rf"source is 'inline' but {WHERE} is empty"):
        DatasetResource(source="inline").load()
    with pytest.raises(DatasetError, match="inline / base_dir are set but source is 'ml-100k': set source: inline"):
        DatasetResource(inline=inline()).load()


def test_an_inline_config_can_ask_for_pseudonyms(tmp_path):
    write_tiny_shop(tmp_path / "shop")
    key = "inline-test-key-0123456789"
    private = {**inline(), "privacy": {"pseudonymize": True}}
    resource = DatasetResource(source="inline", inline=private, base_dir=str(tmp_path / "shop"), pseudonym_key=key)
    pseudonym = Pseudonymizer(key)
    assert resource.load().ratings["user_id"].tolist() == [pseudonym(u) for u in ["007", "007", "C-42", "C-42", "ann b"]]
    assert resource.pseudonymizer()("007") == pseudonym("007")  # what landed files of this dataset get
    with pytest.raises(DatasetError, match=rf"pseudonymization is on \(dataset {WHERE}\) but LLMREC_PSEUDONYM_KEY"):
        DatasetResource(source="inline", inline=private, base_dir=str(tmp_path / "shop")).load()
