"""`llmrec forget`: each store a user lives in, the ledger and its tombstones, idempotence, resuming.

Unit tests on small real stores (DuckDB and SQLite files, event logs, pickled rankers, a published bundle);
the end-to-end erasures of a served user (and one killed with SIGKILL half-way) are in tests/erasure/.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import zlib

import duckdb
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.cli import main
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.erasure import Tombstones, finish_pending, forget
from llmrec_platform.erasure.ledger import (
    PendingErasure,
    drop_erased,
    erasure_key,
    read_journal,
    read_ledger,
    tombstone,
    write_journal,
)
from llmrec_platform.erasure.scrub import needs_refit, scrub
from llmrec_platform.erasure.stores import Finder, blank_log_lines, erase_warehouse, holds, rewrite_duckdb, scrub_sqlite
from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.paths import Paths
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import Query, TrainedRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.serving.bundle import current_bundle, load_bundle, publish_bundle

GONE = "gone-user-7c1f9e"  # distinctive, so a byte search finds only it
KEPT = [f"kept-user-{i}" for i in range(6)]


def small_split() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [(user, f"i{item}", float(rng.integers(1, 6)), 1_000_000 + 60 * n, "train")
            for n, user in enumerate([GONE] + KEPT) for item in rng.choice(12, size=6, replace=False)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])


@pytest.fixture
def home(tmp_path) -> Paths:
    return Paths(tmp_path / "home").ensure()


# --- the ledger ----------------------------------------------------------------------------------------------

def test_the_ledger_matches_a_repeat_request_without_holding_the_id(home):
    first, _ = forget(home, [GONE])
    again, _ = forget(home, [GONE])
    ledger_bytes = (home.erasure / "ledger.jsonl").read_bytes()
    assert GONE.encode() not in ledger_bytes
    assert first[GONE].tombstone == again[GONE].tombstone == tombstone(erasure_key(home.erasure), GONE)
    assert first[GONE].erased_before is None and again[GONE].erased_before == read_ledger(home.erasure)[1]["at"]
    assert [e["status"] for e in read_ledger(home.erasure)] == ["requested", "completed", "completed"]
    assert (home.erasure / "key").stat().st_mode & 0o777 == 0o600
    assert not (home.erasure / "pending.json").exists()  # the journal (which holds ids) is gone when done
    assert GONE in Tombstones(home.erasure).current() and KEPT[0] not in Tombstones(home.erasure).current()


def test_an_unknown_id_exits_0_and_says_nothing_is_held(home, monkeypatch, capsys):
    monkeypatch.setenv("LLMREC_HOME", str(home.home))
    assert main(["forget", "never-seen-id"]) == 0
    assert "never-seen-id: nothing held for this id" in capsys.readouterr().out
    assert main(["forget", "never-seen-id"]) == 0  # idempotent
    assert len([e for e in read_ledger(home.erasure) if e["status"] == "completed"]) == 2


def test_a_blank_id_is_refused_in_one_line(home, monkeypatch, capsys):
    monkeypatch.setenv("LLMREC_HOME", str(home.home))
    with pytest.raises(SystemExit) as exit_info:
        main(["forget", "  "])
    assert exit_info.value.code == 2 and "invalid user id" in capsys.readouterr().err


# --- the event and impression logs ----------------------------------------------------------------------------

def test_log_lines_are_blanked_in_place_and_offsets_stay_valid(home):
    log = EventLog(home.events)
    log.append([Event(KEPT[0], "i1", "view"), Event(GONE, "i2", "click")])
    _, middle = log.append([Event(GONE, "i3", "rating", 4.0)])
    log.append([Event(KEPT[1], "i4", "view")])
    size = log.size()
    assert blank_log_lines(log.path, [GONE]) == 2
    assert log.size() == size and GONE.encode() not in log.path.read_bytes()
    assert [e.user_id for e in log.read(0).events] == [KEPT[0], KEPT[1]]
    assert [e.user_id for e in log.read(middle).events] == [KEPT[1]]  # an old cursor still lands on a line start
    assert log.read(0).malformed == []
    assert blank_log_lines(log.path, [GONE]) == 0  # idempotent


def test_an_old_copy_of_the_log_cannot_resurrect_an_erased_user(home, tmp_path):
    log = EventLog(home.events)
    log.append([Event(GONE, "i2", "click"), Event(KEPT[0], "i1", "view")])
    old_copy = log.path.read_bytes()
    forget(home, [GONE])
    log.path.write_bytes(old_copy)  # restored from a backup taken before the erasure
    replayed = EventLog(home.events, erased=Tombstones(home.erasure)).read(0)
    assert [e.user_id for e in replayed.events] == [KEPT[0]]
    assert [e.user_id for e in EventLog(home.events).read(0).events] == [GONE, KEPT[0]]  # the control: it is there


def test_a_person_who_comes_back_after_an_erasure_starts_afresh(home):
    log = EventLog(home.events, erased=Tombstones(home.erasure))
    log.append([Event(GONE, "i2", "click")])
    forget(home, [GONE])
    log.append([Event(GONE, "i5", "view")])  # after the erasure: new data, which counts
    assert [(e.user_id, e.item_id) for e in log.read(0).events] == [(GONE, "i5")]
    forget(home, [GONE])  # erased again: this time the new event goes too
    assert log.read(0).events == [] and GONE.encode() not in log.path.read_bytes()


# --- the warehouse --------------------------------------------------------------------------------------------

def test_warehouse_rows_go_from_every_table_and_from_the_file_bytes(home):
    split = small_split()
    with duckdb.connect(str(home.warehouse)) as conn:
        conn.register("frame", split)
        conn.execute("CREATE TABLE split AS SELECT * FROM frame")
        conn.execute("CREATE TABLE user_texts AS SELECT user_id, 'profile of ' || user_id AS text, "
                     "md5(user_id) AS text_hash FROM (SELECT DISTINCT user_id FROM split)")
        conn.execute("CREATE TABLE embedding_cache AS SELECT 'm' AS model, text_hash, [1.0, 2.0] AS embedding "
                     "FROM user_texts")
        conn.execute("CREATE TABLE quarantine AS SELECT * FROM (VALUES ('users', ?), ('items', ?)) t(part, raw)",
                     [f"{GONE}\t99\tM", f"{GONE}-lookalike item"])
        conn.execute("CREATE TABLE items AS SELECT 'i1' AS item_id")
    assert holds(home.warehouse.read_bytes(), [GONE])  # the control: DuckDB stores it in plain bytes
    deleted = erase_warehouse(home.warehouse, [GONE])
    with duckdb.connect(str(home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM split WHERE user_id = ?", [GONE]).fetchone()[0] == 0
        assert conn.execute("SELECT count(DISTINCT user_id) FROM split").fetchone()[0] == len(KEPT)
        assert conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] == len(KEPT)
        assert conn.execute("SELECT raw FROM quarantine").fetchall() == [(f"{GONE}-lookalike item",)]
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1
    assert deleted == 6 + 1 + 1 + 1
    assert not holds(home.warehouse.read_bytes().replace(f"{GONE}-lookalike".encode(), b""), [GONE])
    assert erase_warehouse(home.warehouse, [GONE]) == 0


def test_deleting_alone_would_leave_the_bytes_in_the_file(tmp_path):
    """Why the warehouse is rewritten: DELETE, CHECKPOINT and VACUUM keep the old values in the row groups."""
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t AS SELECT CASE WHEN range % 7 = 0 THEN ? ELSE 'kept-' || (range % 13) END "
                     "AS user_id, range AS n FROM range(5000)", [GONE])
        conn.execute("CHECKPOINT")
        conn.execute("DELETE FROM t WHERE user_id = ?", [GONE])
        conn.execute("VACUUM")
        conn.execute("CHECKPOINT")
    assert holds(path.read_bytes(), [GONE])
    rewrite_duckdb(path)
    assert not holds(path.read_bytes(), [GONE])
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 5000 - 715


# --- rankers and bundles --------------------------------------------------------------------------------------

def test_a_fitted_ranker_forgets_the_user_row_and_says_whether_it_needs_a_refit():
    data = InteractionData.from_split(small_split())
    ease = EASERanker(reg_weight=10.0).fit(data)
    popularity = PopularityRanker().fit(data)
    before = popularity.popularity_.copy()
    gone_items = data.train[list(data.user_ids).index(GONE)].indices
    kept_list = ease.recommend(KEPT[0], 5)["item_id"].tolist()
    trained = TrainedRanker(ease, "run", "fp", {}, 0.0)
    cleaned, result = scrub({"ease": trained, "popularity": popularity, "users": [GONE, KEPT[0]]}, [GONE])
    assert result.rankers == ["ease", "popularity"] and cleaned["users"] == [KEPT[0]]
    for ranker in (ease, popularity):
        assert GONE not in set(ranker.user_ids_) and GONE not in ranker._user_position
        assert not holds(pickle.dumps(ranker), [GONE])
        assert ranker.recommend(KEPT[0], 3)["item_id"].tolist()  # everyone else is still served
    assert np.array_equal(popularity.popularity_[gone_items], before[gone_items] - 1)  # recounted without them
    assert ease.recommend(KEPT[0], 5)["item_id"].tolist() == kept_list  # positions kept: the same list
    assert ease.score_query(Query(user_id=GONE)).shape == (data.n_items,)  # now an unknown user: cold start
    assert needs_refit("ease") and not needs_refit("popularity") and needs_refit("a_ranker_we_do_not_know")


def test_the_bundle_is_republished_without_the_user(home):
    split = small_split()
    data = InteractionData.from_split(split)
    champion = EASERanker(reg_weight=10.0).fit(data)
    items = pd.DataFrame({"item_id": data.item_ids, "title": [f"T{i}" for i in data.item_ids], "genres": "A|B",
                          "text": ""})
    vectors = pd.DataFrame({"item_id": data.item_ids, "embedding": list(np.eye(len(data.item_ids), 4))})
    first = publish_bundle(home.bundles, champion, items, vectors, split, {"event_offset": 0})
    reports, _ = forget(home, [GONE])
    bundle = load_bundle(current_bundle(home.bundles))
    assert bundle.path != first and not first.exists()
    assert GONE not in set(bundle.histories["user_id"]) and bundle.manifest["users"] == len(KEPT)
    assert bundle.manifest["republished_from"] == first.name and bundle.manifest["event_offset"] == 0
    assert reports[GONE].refit == ["ease"] and reports[GONE].leftovers == []
    assert json.loads((home.erasure / "refit.json").read_text())["models"] == ["ease"]
    # Exact popularity is recounted without the user.
    assert np.array_equal(bundle.items["popularity"].to_numpy(), load_bundle(bundle.path).champion.popularity_)
    assert bundle.items["popularity"].sum() == len(split.query("user_id != @GONE and fold == 'train'"))


def test_a_noisy_popularity_column_is_kept_when_the_bundle_is_republished(home):
    split = small_split()
    data = InteractionData.from_split(split)
    items = pd.DataFrame({"item_id": data.item_ids, "title": data.item_ids, "genres": "A", "text": ""})
    vectors = pd.DataFrame({"item_id": data.item_ids, "embedding": list(np.eye(len(data.item_ids), 4))})
    release = CountRelease(epsilon=0.5, seed=3)
    publish_bundle(home.bundles, EASERanker(reg_weight=10.0).fit(data), items, vectors, split,
                   {"event_offset": 0, "popularity_privacy": release.params()}, popularity_release=release)
    released = load_bundle(current_bundle(home.bundles)).items["popularity"].to_numpy()
    forget(home, [GONE])
    republished = load_bundle(current_bundle(home.bundles))
    assert np.array_equal(republished.items["popularity"].to_numpy(), released)
    assert republished.manifest["popularity_privacy"]["dp_epsilon"] == "0.5"


# --- other stores -----------------------------------------------------------------------------------------------

def test_sqlite_values_are_scrubbed_json_stays_valid_and_the_file_is_vacuumed(tmp_path):
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (body TEXT, snapshot BLOB, n INTEGER)")
        conn.execute("INSERT INTO runs VALUES (?, ?, 42)", [json.dumps({"user_ids": [GONE, KEPT[0]], "count": 42}),
                                                              zlib.compress(f"preview | {GONE} |".encode())])
        conn.execute("INSERT INTO runs VALUES ('nothing personal', NULL, 1)")
    assert scrub_sqlite(path, Finder.of([GONE], [GONE], [])) and not holds(path.read_bytes(), [GONE])
    with sqlite3.connect(path) as conn:
        body, snapshot, n = conn.execute("SELECT * FROM runs WHERE n = 42").fetchone()
    assert json.loads(body) == {"user_ids": ["[erased]", KEPT[0]], "count": 42}
    assert zlib.decompress(snapshot) == b"preview | [erased] |"
    assert not scrub_sqlite(path, Finder.of([GONE], [GONE], []))


def test_a_short_id_is_replaced_only_where_json_says_it_is_a_user(tmp_path):
    path = tmp_path / "runs.db"
    body = {"user_ids": ["42", "7"], "user_message": "progress 42/500 trees", "item_id": "42"}
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (body TEXT)")
        conn.execute("INSERT INTO runs VALUES (?)", [json.dumps(body)])
    assert scrub_sqlite(path, Finder.of(["42"], ["42"], []))
    with sqlite3.connect(path) as conn:
        assert json.loads(conn.execute("SELECT body FROM runs").fetchone()[0]) == {**body, "user_ids": ["[erased]", "7"]}


def test_a_pending_erasure_is_finished_by_the_next_run(home):
    EventLog(home.events).append([Event(GONE, "i2", "click"), Event(KEPT[0], "i1", "view")])
    mark = tombstone(erasure_key(home.erasure, create=True), GONE)
    size = EventLog(home.events).size()
    write_journal(home.erasure, [PendingErasure(mark, [GONE], log_offset=size)])  # what a run killed after its journal leaves
    [report] = finish_pending(home)
    assert report.resumed and report.stores["log_lines"] == 1 and read_journal(home.erasure) == []
    assert GONE.encode() not in EventLog(home.events).path.read_bytes()


def test_ingestion_leaves_out_erased_users(home):
    forget(home, [GONE])
    frame = small_split()
    kept = drop_erased(frame, Tombstones(home.erasure))
    assert set(kept["user_id"]) == set(KEPT) and len(kept) == len(frame) - 6


def test_a_refit_is_requested_once_per_erasure_that_needs_one(home):
    import dagster as dg

    from llmrec_platform.erasure.forget import schedule_refit
    from llmrec_platform.orchestration.sensors import erasure_refit_sensor
    from llmrec_platform.resources import HomeResource

    def tick(cursor=None):
        context = dg.build_sensor_context(cursor=cursor, resources={"home": HomeResource(path=str(home.home))})
        return erasure_refit_sensor(context)

    assert not tick().run_requests  # nothing erased yet
    schedule_refit(home.erasure, ["ease"])
    first = tick()
    [request] = first.run_requests
    assert request.tags["llmrec/refit"] == "ease" and erasure_refit_sensor.job_name == "nightly_retrain"
    assert not tick(first.cursor).run_requests  # the same erasure is not retrained twice


def test_the_audit_log_keeps_who_did_what_but_not_whom(home):
    from llmrec_platform.serving.audit import AuditLog, AuditRecord

    audit = AuditLog(home.audit)
    audit.append([AuditRecord("admin", "POST /events", GONE, {"event_id": "e1"}),
                  AuditRecord("admin", "POST /events", KEPT[0], {"event_id": "e2"})])
    size = audit.path.stat().st_size
    reports, _ = forget(home, [GONE])
    records = audit.read()
    assert audit.path.stat().st_size == size and not holds(audit.path.read_bytes(), [GONE])
    assert [(r["who"], r["action"], r["user_id"]) for r in records] == [
        ("admin", "POST /events", "*" * len(GONE)), ("admin", "POST /events", KEPT[0])]
    assert reports[GONE].stores["audit_lines"] == 1 and reports[GONE].held


def test_a_short_numeric_id_is_removed_by_structure_not_by_matching_digits(home, monkeypatch, capsys):
    """ML-100K's user 42 shares its digits with item 42 and with timestamps: nothing else may go with it."""
    rated = {"42": ("42", "50", "7"), "7": ("42", "50", "9"), "8": ("50", "7", "9")}
    split = pd.DataFrame([(user, item, 4.0, 881_250_042, "train") for user, items in rated.items() for item in items],
                         columns=["user_id", "item_id", "rating", "timestamp", "fold"])
    data = InteractionData.from_split(split)
    ease = EASERanker(reg_weight=10.0).fit(data)
    home.artifacts.mkdir(parents=True, exist_ok=True)
    (home.artifacts / "ease_ranker").write_bytes(pickle.dumps(TrainedRanker(ease, "run", "fp", {}, 0.0)))
    (home.reports / "latest.md").write_text("| ranker | NDCG@10 |\n| ease | 0.42 |\n")
    with duckdb.connect(str(home.warehouse)) as conn:
        conn.register("frame", split)
        conn.execute("CREATE TABLE ratings AS SELECT * FROM frame")
        conn.execute("CREATE TABLE quarantine AS SELECT * FROM (VALUES ('ratings', '42\t99\t9\t1'), "
                     "('ratings', '7\t42\t9\t1')) t(part, raw)")
    monkeypatch.setenv("LLMREC_HOME", str(home.home))
    assert main(["forget", "42"]) == 0
    assert "42: erased" in capsys.readouterr().out
    stored = pickle.loads((home.artifacts / "ease_ranker").read_bytes()).ranker  # scrubbed, not deleted
    assert "42" not in set(stored.user_ids_) and "42" in set(stored.item_ids_)
    assert stored.recommend("7", 2)["item_id"].tolist() == ["7"]  # the one item user 7 has not rated
    assert (home.reports / "latest.md").read_text().endswith("| ease | 0.42 |\n")
    with duckdb.connect(str(home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT DISTINCT user_id FROM ratings ORDER BY 1").fetchall() == [("7",), ("8",)]
        assert conn.execute("SELECT count(*) FROM ratings WHERE item_id = '42'").fetchone()[0] == 1
        assert conn.execute("SELECT raw FROM quarantine").fetchall() == [("7\t42\t9\t1",)]
    assert main(["forget", "42"]) == 0  # idempotent: the digits elsewhere are not the user
    assert "42: nothing held for this id (already erased" in capsys.readouterr().out
