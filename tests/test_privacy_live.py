"""Pseudonymization of the other ways in: a file dropped into the landing folder and events posted to the
serving API (a real uvicorn on a loopback port) carry raw user ids and planted personal data; afterwards no
file under the home holds any of them, and the ids stored are the training data's own pseudonyms."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest

from llmrec_platform.assets.ingest import raw_items, raw_ratings, raw_users
from llmrec_platform.data.datasets import load_pseudonymized
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.landing import LANDED_TABLE, PROCESSED
from llmrec_platform.data.privacy import WITHHELD, PrivacyError, Pseudonymizer
from llmrec_platform.definitions import build_definitions, build_resources
from llmrec_platform.live.events import EventLog
from llmrec_platform.live.online import IMPRESSIONS_NAME
from llmrec_platform.live.refresh import EVENTS_TABLE, record_events
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.resources import DatasetResource
from llmrec_platform.serving.app import create_app
from llmrec_platform.serving.bundle import publish_bundle
from llmrec_platform.settings import Settings
from llmrec_platform.storage.warehouse import Warehouse
from llmrec_platform.testing import unit_embeddings
from tests.serving.conftest import InProcessServer
from tests.test_privacy import KEY, NEEDLES, PII, RAW_IDS, find_leaks, write_private_shop

NEWCOMER = "Planted-Newcomer-qzx"  # a raw id the training data does not know
MAY_2024 = 1_714_521_600  # 2024-05-01, inside the private shop's months
SHOP_MONTHS = ("2024-04-01", "2024-05-01", "2024-06-01")


def landed_csv() -> str:
    """12 good rows (a known user, a newcomer) and one bad rating that plants a phone number."""
    rows = [f"{RAW_IDS[0]},SKU-{20 + i:03d},5,{MAY_2024 + i}" for i in range(8)]
    rows += [f"{NEWCOMER},SKU-{i:03d},4,{MAY_2024 + i}" for i in range(4)]
    rows.append(f"{RAW_IDS[1]},SKU-003,call {PII['phone']},{MAY_2024}")  # row 14: rating is not a number
    return "user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n"


def split_of(ratings: pd.DataFrame) -> pd.DataFrame:
    """Each user's latest rating to test, the one before to valid, the rest to train."""
    ordered = ratings.sort_values(["user_id", "timestamp"], kind="stable")
    back = ordered.groupby("user_id").cumcount(ascending=False)
    return ordered.assign(fold=back.map({0: "test", 1: "valid"}).fillna("train")).reset_index(drop=True)


@pytest.fixture
def private_home(llmrec_home, tmp_path, monkeypatch):
    """The private shop (privacy.pseudonymize: true) ingested into the home, with the key set."""
    config = write_private_shop(tmp_path / "shop")
    monkeypatch.setenv("LLMREC_PSEUDONYM_KEY", KEY)
    settings = Settings.from_env({"LLMREC_HOME": str(llmrec_home.home), "LLMREC_DATASET": str(config),
                                  "LLMREC_PSEUDONYM_KEY": KEY})
    resources = build_resources(llmrec_home, dataset=str(config), device="cpu", settings=settings)
    assert dg.materialize([raw_items, raw_users], resources=resources).success
    for month in SHOP_MONTHS:
        assert dg.materialize([raw_ratings], partition_key=month, resources=resources).success
    return llmrec_home, config, settings, resources


def test_landed_files_and_posted_events_carry_only_the_training_pseudonyms(private_home):
    home, config, settings, resources = private_home
    pseudonym = Pseudonymizer(KEY)
    training = set(load_pseudonymized(str(config), KEY).ratings["user_id"])
    assert pseudonym(RAW_IDS[0]) in training and pseudonym(RAW_IDS[2]) in training

    # A landed file: loaded as pseudonyms, its bad row withheld, no raw copy kept.
    landed = home.landing / "new.csv"
    landed.write_text(landed_csv())
    run = build_definitions(resources, settings=settings).resolve_job_def("ingest_landed_file").execute_in_process(
        run_config={"ops": {"ingest_landed_ratings": {"config": {"path": str(landed)}}}})
    assert run.success
    assert not landed.exists() and not (home.landing / PROCESSED / "new.csv").exists()
    with duckdb.connect(str(home.warehouse), read_only=True) as conn:
        users = dict(conn.execute(f"SELECT user_id, count(*) FROM {LANDED_TABLE} GROUP BY ALL").fetchall())
        assert users == {pseudonym(RAW_IDS[0]): 8, pseudonym(NEWCOMER): 4}
        in_ratings = conn.execute("SELECT count(*) FROM ratings WHERE user_id = ? AND item_id >= 'SKU-020'",
                                  [pseudonym(RAW_IDS[0])]).fetchone()[0]
        assert in_ratings >= 8  # the landed rows joined the user's training rows
        rejected = conn.execute("SELECT row_number, field, raw FROM quarantine WHERE source_file = 'new.csv'").fetchall()
        assert rejected == [(14, "rating", WITHHELD)]

    # A bundle trained on the warehouse ratings (pseudonyms), served by a real server.
    store = Warehouse(home.warehouse)
    split = split_of(store.query("SELECT user_id, item_id, rating, timestamp FROM ratings"))
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    items = store.query("SELECT item_id, title, genres, text FROM items")
    publish_bundle(home.bundles, ease, items, unit_embeddings(items["item_id"].tolist(), "item_id", seed=0), split,
                   {"event_offset": 0, "data_fingerprint": "private", "encoder": None}, collab=ease)
    known_history = int((split["user_id"] == pseudonym(RAW_IDS[2])).sum())
    with InProcessServer(create_app(settings)) as server:
        for user, item in ((RAW_IDS[2], "SKU-021"), (NEWCOMER, "SKU-005")):
            posted = httpx.post(server.url + "/events", json={"user_id": user, "item_id": item, "type": "rate",
                                                              "value": 5}, timeout=30)
            assert posted.status_code == 202, posted.text
        history = httpx.get(f"{server.url}/users/{RAW_IDS[2]}/history", timeout=30).json()
        listed = httpx.get(f"{server.url}/users/{RAW_IDS[2]}/recommendations", timeout=30).json()
    # The raw id found the user's training history, and the event joined it.
    assert len(history["items"]) == known_history + 1 and known_history >= 10
    assert (history["items"][-1]["item_id"], history["items"][-1]["event"]) == ("SKU-021", "rate")
    assert listed["user_id"] == RAW_IDS[2] and not listed["cold_start"]

    batch = EventLog(home.events).read(0)
    assert batch.user_ids == sorted([pseudonym(RAW_IDS[2]), pseudonym(NEWCOMER)])
    impressions = [json.loads(line) for line in (home.events / IMPRESSIONS_NAME).read_text().splitlines()]
    assert [i["user_id"] for i in impressions] == [pseudonym(RAW_IDS[2])]
    record_events(store, batch)  # what the events_refresh job does first
    with duckdb.connect(str(home.warehouse), read_only=True) as conn:
        joined = conn.execute(f"SELECT count(DISTINCT r.item_id) FROM {EVENTS_TABLE} e JOIN ratings r USING (user_id) "
                              "WHERE e.item_id = 'SKU-021'").fetchone()[0]
    assert joined == known_history  # the stored event and the user's ratings share one id

    assert find_leaks(home.home, NEEDLES + [NEWCOMER, KEY]) == []


def test_pseudonymization_without_the_key_refuses_landing_and_serving(private_home, monkeypatch):
    home, config, settings, resources = private_home
    monkeypatch.delenv("LLMREC_PSEUDONYM_KEY")
    # The config asks for pseudonyms, and no key reaches the resource (as with a hand-written run config).
    resources = {**resources, "dataset": DatasetResource(source=str(config))}
    landed = home.landing / "new.csv"
    landed.write_text(landed_csv())
    run = build_definitions(resources, settings=settings).resolve_job_def("ingest_landed_file").execute_in_process(
        run_config={"ops": {"ingest_landed_ratings": {"config": {"path": str(landed)}}}}, raise_on_error=False)
    assert not run.success
    cause = run.failure_data_for_node("ingest_landed_ratings").error.cause
    assert cause.cls_name == "PrivacyError" and "LLMREC_PSEUDONYM_KEY is not set" in cause.message
    assert landed.exists()  # nothing was loaded or moved
    assert not Warehouse(home.warehouse).has_table(LANDED_TABLE)
    keyless = Settings.from_env({"LLMREC_HOME": str(home.home), "LLMREC_DATASET": str(config)})
    with pytest.raises(PrivacyError, match=r"pseudonymization is on \(privacy.pseudonymize in .*shop.yaml\) but "
                                           "LLMREC_PSEUDONYM_KEY is not set"):
        create_app(keyless)
