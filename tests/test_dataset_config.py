"""Dataset config files (YAML): the README example on a non-MovieLens layout, errors that name the key,
row-level validation of config files, and the whole graph running on the example."""

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from llmrec_platform.data.config import IMPLICIT_RATING, NO_TIMESTAMP, ConfigError, load_config
from llmrec_platform.data.datasets import DatasetError, load_dataset, resolve_source
from llmrec_platform.data.text import build_item_texts, build_user_texts
from tests.shop_data import manual_config, write_shop


@pytest.fixture
def shop(tmp_path) -> Path:
    return write_shop(tmp_path / "shop")


def rewrite(config: Path, change) -> Path:
    raw = yaml.safe_load(config.read_text())
    change(raw)
    config.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return config


def test_the_readme_example_loads(shop):
    assert resolve_source(str(shop))[0] == "config"
    config = load_config(shop)
    assert config.name == "my-shop" and config.error_budget == 0.01 and config.encoder == "all-MiniLM-L6-v2"
    assert config.interactions.path == str(shop.parent / "data" / "events" / "*.parquet")  # relative to the config
    ds = load_dataset(str(shop))
    assert ds.quarantine.empty and ds.has_timestamps
    assert len(ds.ratings) == 30 * 14 and set(ds.ratings["user_id"]) == {f"C{c:04d}" for c in range(30)}
    assert ds.ratings["item_id"].str.match(r"^(RUN|KIT)-\d{3}$").all()  # string ids
    assert ds.ratings["timestamp"].min() >= pd.Timestamp("2024-03-01", tz="UTC").timestamp()
    assert set(ds.ratings["rating"]) <= {3.0, 4.0, 5.0}
    items = ds.items.set_index("item_id")
    assert items.loc["RUN-000", "genres"] == ["running", "shoes"] and items.loc["KIT-000", "genres"] == ["kitchen", "cookware"]
    texts = build_item_texts(ds.items)[0].set_index("item_id")["text"]
    assert texts["RUN-003"] == "Cushioned trainer. Café racer edition. Categories: running, shoes."  # mojibake repaired
    assert "&amp;" not in texts["RUN-000"] and "runners & enthusiasts" in texts["RUN-000"]
    users = build_user_texts(ds.users).set_index("user_id")["text"]
    assert users["C0000"] == "Läuferin aus München Great for my morning runs"  # Latin-1 CSV + a review
    assert users["C0001"] == "Cuisinière à Lyon"


def test_implicit_feedback_other_scales_and_no_timestamps(shop):
    def implicit(raw):
        del raw["interactions"]["rating"], raw["interactions"]["rating_range"], raw["interactions"]["timestamp"]
    ds = load_dataset(str(rewrite(shop, implicit)))
    assert set(ds.ratings["rating"]) == {IMPLICIT_RATING} and set(ds.ratings["timestamp"]) == {NO_TIMESTAMP}
    assert not ds.has_timestamps


def test_ratings_on_a_ten_point_scale_map_onto_one_to_five(tmp_path):
    folder = tmp_path / "ten"
    folder.mkdir()
    (folder / "r.csv").write_text("u,i,score\na,x,10\na,y,1\nb,x,12\nb,y,5.5\n")
    (folder / "items.csv").write_text("id,name\nx,Ex\ny,Why\n")
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "interactions": {"path": "r.csv", "user": "u", "item": "i", "rating": "score", "rating_range": [1, 10]},
        "items": {"path": "items.csv", "id": "id", "text": "name"}, "error_budget": 0.5}))
    ds = load_dataset(str(folder / "c.yaml"))
    assert ds.ratings["rating"].tolist() == [5.0, 1.0, 3.0]
    [row] = ds.quarantine.itertuples()
    assert (row.row_number, row.field, row.reason) == (4, "rating", "rating outside [1, 10]")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["interactions"].update(usr="x"), r"unknown key\(s\) \['interactions.usr'\]"),
    (lambda r: r["interactions"].pop("user"), r"interactions.user is required"),
    (lambda r: r["interactions"].update(user="customer"), r"interactions.user = 'customer' is not a column of .*part-0"),
    (lambda r: r["items"].update(path="data/nope.jsonl"), r"items.path: missing file .*nope.jsonl"),
    (lambda r: r["items"].update(path="data/*.nope"), r"items.path: no file matches"),
    (lambda r: r["interactions"].update(rating_range=[5, 1]), r"interactions.rating_range = \[5, 1\]"),
    (lambda r: r.update(error_budget=3), r"error_budget = 3"),
    (lambda r: r.update(encoder="nowhere"), r"encoder = 'nowhere' is neither minilm"),
    (lambda r: r.pop("items"), r"the key 'items' is required"),
])
def test_config_errors_name_the_file_and_the_key(shop, change, message):
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(str(rewrite(shop, change)))
    assert isinstance(info.value, ConfigError) and str(shop) in str(info.value)


def test_bad_rows_of_config_files_are_quarantined(shop):
    data = shop.parent / "data"
    with open(data / "catalog.jsonl", "a") as f:
        f.write('{"sku": "RUN-000", "name": "dup"}\nnot json\n')  # lines 31, 32
    (data / "events" / "part-2.csv").write_text("customer_id,sku,stars,ts\nC0001,RUN-001,4,2024-04-01T00:00:00Z\n"
                                                "C0001,NOPE-1,4,2024-04-01T00:00:00Z\nC0001,RUN-002,4,1970-01-02\n")
    rewrite(shop, lambda r: r["interactions"].update(path="data/events/*"))
    ds = load_dataset(str(shop))
    q = ds.quarantine.set_index(["part", "row_number"])
    assert q.loc[("items", 31), "reason"].startswith("repeated item_id")
    assert q.loc[("items", 32), "reason"].startswith("not valid JSON")
    assert q.loc[("ratings", 3), "reason"] == "item not in items.path"
    assert q.loc[("ratings", 4), "reason"].startswith("timestamp outside the partitioned range")
    assert ("C0001", "RUN-001") in set(zip(ds.ratings["user_id"], ds.ratings["item_id"], strict=True))


def test_user_texts_in_chinese_reach_the_profile(shop):
    reviews = shop.parent / "data" / "reviews.jsonl"
    reviews.write_text(json.dumps({"customer_id": "C0002", "body": "跑鞋很轻 &amp; 舒服", "created_at": "2024-05-02"},
                                  ensure_ascii=False) + "\n", encoding="utf-8")
    users = build_user_texts(load_dataset(str(shop)).users).set_index("user_id")["text"]
    assert users["C0002"].endswith("跑鞋很轻 & 舒服")


def test_readme_documents_every_key_the_issue_names():
    config = yaml.safe_load(manual_config())
    assert set(config) >= {"name", "interactions", "items", "users", "user_texts", "encoder", "error_budget"}
    assert set(config["interactions"]) >= {"path", "user", "item", "rating", "rating_range", "timestamp"}
    assert set(config["items"]) >= {"path", "id", "text", "categories"}


@pytest.mark.slow
def test_the_readme_example_runs_the_whole_graph(llmrec_home, shop):
    from llmrec_platform.cli import run_pipeline

    paths, result = run_pipeline(str(shop), "recbole")
    assert result.success
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        n_users = conn.execute("SELECT count(DISTINCT user_id) FROM split").fetchone()[0]
        recs = conn.execute("SELECT count(DISTINCT user_id), min(item_id), max(item_id) FROM recommendations").fetchone()
        assert n_users == 30 and recs[0] == n_users and recs[1].startswith(("KIT-", "RUN-"))
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
        assert conn.execute("SELECT DISTINCT dataset FROM ratings").fetchall() == [(str(shop),)]
        text = conn.execute("SELECT text FROM item_texts WHERE item_id = 'RUN-003'").fetchone()[0]
        assert "Café racer" in text


def test_an_encoding_duckdb_lacks_is_transcoded_and_its_bad_lines_quarantined(shop):
    data = shop.parent / "data"
    body = "customer_id;bio\nC0000;喜欢跑步的上海人\nC0001;".encode("gbk") + b"\xff\xff\n" + "C0002;厨师\n".encode("gbk")
    (data / "customers.csv").write_bytes(body)
    rewrite(shop, lambda r: r["users"].update(options={"delim": ";", "encoding": "gbk"}))
    ds = load_dataset(str(shop))
    texts = build_user_texts(ds.users).set_index("user_id")["text"]
    assert texts["C0000"].startswith("喜欢跑步的上海人") and texts["C0002"] == "厨师"
    [row] = ds.quarantined("users").itertuples()
    assert row.row_number == 3 and row.reason.startswith("bytes not valid in gbk")
