"""Privacy on the way in: keyed user pseudonyms and the PII scrub, checked in every store the graph writes.

The end-to-end test plants distinctive raw user ids and personal data (e-mail addresses, phone numbers,
URLs, long digit runs) in item texts, user profiles, reviews and bad rows, runs the whole graph with
pseudonymization on, and then searches every file under the home — the DuckDB warehouse (its bytes and
every value of every table), the Dagster artifacts, the serving bundle, the reports and the MLflow store
(SQLite values, decompressed where Dagster compresses them) — for any of them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from llmrec_platform.data.datasets import DatasetError, load_dataset, load_pseudonymized
from llmrec_platform.data.privacy import WITHHELD, PrivacyError, Pseudonymizer, pseudonymize_dataset, scrub_pii
from llmrec_platform.settings import Settings, SettingsError

KEY = "test-key-0123456789abcdef"
RAW_IDS = [f"Planted-Person-{c:02d}-qzx" for c in range(30)]
# Planted personal data, as it must never appear in any store.
PII = {
    "email": "jane.planted@example.org",
    "phone": "+44 20 7946 0958",
    "url": "https://shop.planted-example.com/p/1",
    "card": "4111111111111111",
    "profile_email": "bob.planted@example.net",
    "profile_phone": "+1 415 555 0100",
    "review_email": "rev.planted@example.com",
    "order": "98765432101",
    "bad_item_email": "dupe.planted@example.org",
}
NEEDLES = RAW_IDS + list(PII.values()) + ["planted-example.com", "7946 0958", "415 555 0100"]


def write_private_shop(folder: Path, pseudonymize: bool = True) -> Path:
    """30 users in two taste groups over 30 items (the recbole protocol's 10-core keeps them all), with
    planted raw ids and PII, and one bad row in every file."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    skus = [f"SKU-{i:03d}" for i in range(30)]
    catalog = [{"sku": s, "name": f"Thing {i}", "description": f"A {'red' if i < 15 else 'blue'} thing"}
               for i, s in enumerate(skus)]
    catalog[0]["description"] += f" Ask {PII['email']} or call {PII['phone']}"
    catalog[1]["description"] += f" See {PII['url']} and pay with {PII['card']}"
    catalog.append({"sku": "SKU-000", "name": "Dupe", "description": f"write to {PII['bad_item_email']}"})  # repeated
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(c) for c in catalog) + "\n")
    rows = []
    for c, user in enumerate(RAW_IDS):
        pool = np.arange(0, 20) if c % 2 == 0 else np.arange(10, 30)
        for item in rng.choice(pool, size=14, replace=False):
            rows.append({"customer": user, "sku": skus[item], "stars": int(rng.integers(3, 6)),
                         "ts": 1_711_929_600 + int(rng.integers(0, 90 * 86400))})
    rows.append({"customer": RAW_IDS[3], "sku": skus[2], "stars": 9, "ts": 1_711_929_600})  # outside [1, 5]
    pd.DataFrame(rows).to_parquet(folder / "events.parquet", index=False)
    users = [f"{u},Likes things. Reach me at {PII['profile_email']} or {PII['profile_phone']}" if c == 0
             else f"{u},Likes {'red' if c % 2 == 0 else 'blue'} things" for c, u in enumerate(RAW_IDS)]
    users.append(f"{RAW_IDS[5]},defined twice")  # repeated user id
    (folder / "users.csv").write_text("customer,bio\n" + "\n".join(users) + "\n")
    reviews = [{"customer": u, "body": f"Order {PII['order']} arrived; mail {PII['review_email']}" if c == 2
                else "Nice", "at": "2024-05-01"} for c, u in enumerate(RAW_IDS) if c % 2 == 0]
    reviews.append({"customer": RAW_IDS[4], "body": "", "at": "2024-05-01"})  # empty text
    (folder / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in reviews) + "\n")
    config = {
        "name": "private-shop",
        "interactions": {"path": "events.parquet", "user": "customer", "item": "sku", "rating": "stars",
                         "rating_range": [1, 5], "timestamp": "ts"},
        "items": {"path": "catalog.jsonl", "id": "sku", "text": ["name", "description"]},
        "users": {"path": "users.csv", "id": "customer", "text": "bio"},
        "user_texts": {"path": "reviews.jsonl", "user": "customer", "text": "body", "timestamp": "at"},
        "error_budget": 0.1,
        "privacy": {"pseudonymize": pseudonymize},
    }
    (folder / "shop.yaml").write_text(yaml.safe_dump(config))
    return folder / "shop.yaml"


# --- where a needle could hide ------------------------------------------------------------------------------

def _variants(needle: str) -> list[bytes]:
    # numpy stores fixed-width strings as UTF-32; some formats use UTF-16.
    return [needle.encode(e) for e in ("utf-8", "utf-16-le", "utf-32-le")]


def _sqlite_values(path: Path) -> list[bytes]:
    """Every value of every table, zlib-compressed blobs (Dagster's snapshots) decompressed."""
    out = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        with contextlib.suppress(zlib.error):
                            value = zlib.decompress(value)
                    out.append(value if isinstance(value, bytes) else str(value).encode())
    return out


def _duckdb_values(path: Path) -> list[bytes]:
    """Every value of every table as text (DuckDB compresses strings on disk, so bytes alone could miss them)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        return [conn.execute(f'SELECT * FROM "{t}"').df().to_csv().encode() for (t,) in tables]


def stored_contents(path: Path) -> list[bytes]:
    data = path.read_bytes()
    contents = [data]
    if data[:2] == b"\x1f\x8b":
        contents.append(gzip.decompress(data))
    if data.startswith(b"SQLite format 3"):
        contents += _sqlite_values(path)
    elif path.suffix == ".duckdb":
        contents += _duckdb_values(path)
    elif path.suffix == ".parquet":
        contents.append(pd.read_parquet(path).to_csv().encode())
    return contents


def find_leaks(home: Path, needles: list[str]) -> list[str]:
    leaks = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        contents = stored_contents(path)
        for needle in needles:
            if any(v in c for v in _variants(needle) for c in contents):
                leaks.append(f"{needle!r} in {path.relative_to(home)}")
    return leaks


# --- unit level ---------------------------------------------------------------------------------------------

def test_pseudonyms_are_stable_per_key_and_differ_across_keys():
    ids = pd.Series(["alice", "bob", "alice"])
    first, again = Pseudonymizer(KEY).series(ids), Pseudonymizer(KEY).series(ids)
    other = Pseudonymizer(KEY[::-1]).series(ids)
    assert first.tolist() == again.tolist() and first[0] == first[2] != first[1]
    assert not set(first) & set(other)
    assert all(p.startswith("u") and len(p) == 25 and "alice" not in p for p in first)
    assert first[0] == Pseudonymizer(KEY)("alice")  # vectorised == one by one
    assert KEY not in repr(Pseudonymizer(KEY))
    with pytest.raises(PrivacyError, match="at least 16"):
        Pseudonymizer("short")


def test_the_scrub_tags_each_kind_of_personal_data():
    text = scrub_pii(f"Ask {PII['email']}, call {PII['phone']}, see {PII['url']}, card {PII['card']}, in 1995")
    assert text == "Ask [email], call [phone], see [url], card [number], in 1995"


def test_a_loaded_dataset_keeps_no_raw_id(tmp_path):
    config = write_private_shop(tmp_path / "shop")
    raw = load_dataset(str(config))
    assert raw.pseudonymize and set(raw.ratings["user_id"]) == set(RAW_IDS)
    private = load_pseudonymized(str(config), KEY)
    assert not set(private.ratings["user_id"]) & set(RAW_IDS) and not set(private.users["user_id"]) & set(RAW_IDS)
    assert private.ratings["user_id"].nunique() == 30 and set(private.users["user_id"]) == set(private.ratings["user_id"])
    # The same rows, the same per-user histories.
    expected = pseudonymize_dataset(raw, Pseudonymizer(KEY)).ratings
    pd.testing.assert_frame_equal(private.ratings, expected)
    quarantine = private.quarantine.set_index("part")
    assert set(quarantine.index) == {"ratings", "items", "users", "user_texts"}
    assert (quarantine.loc[["ratings", "users", "user_texts"], "raw"] == WITHHELD).all()
    assert not any(needle in " ".join(private.quarantine["raw"]) for needle in RAW_IDS)


def test_pseudonymization_without_a_key_refuses(tmp_path):
    with pytest.raises(SettingsError, match="LLMREC_PSEUDONYM_KEY is not set"):
        Settings.from_env({"LLMREC_PSEUDONYMIZE": "1"})
    with pytest.raises(SettingsError, match="at least 16"):
        Settings.from_env({"LLMREC_PSEUDONYM_KEY": "short"})
    assert Settings.from_env({"LLMREC_PSEUDONYMIZE": "1", "LLMREC_PSEUDONYM_KEY": KEY}).pseudonymize
    assert KEY not in repr(Settings.from_env({"LLMREC_PSEUDONYM_KEY": KEY}))
    with pytest.raises(DatasetError, match="LLMREC_PSEUDONYM_KEY is not set"):
        load_pseudonymized(str(write_private_shop(tmp_path / "shop")), None)


def test_the_cli_refuses_a_private_config_without_a_key_before_any_work(tmp_path):
    config = write_private_shop(tmp_path / "shop")
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "llmrec_platform.cli", "demo", "--dataset", str(config)],
                            capture_output=True, text=True, timeout=300,
                            env={"LLMREC_HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pseudonymization is on (privacy.pseudonymize in" in result.stderr
    assert "LLMREC_PSEUDONYM_KEY is not set" in result.stderr
    written = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    assert written <= {"llmrec.lock", "dagster/dagster.yaml"}  # no warehouse, no MLflow run, no Dagster run


# --- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_no_raw_id_or_planted_pii_reaches_any_store(llmrec_home, tmp_path, monkeypatch):
    from llmrec_platform.cli import run_pipeline

    config = write_private_shop(tmp_path / "shop")
    monkeypatch.setenv("LLMREC_PSEUDONYM_KEY", KEY)
    paths, result = run_pipeline(str(config), "recbole", device="cpu", fast=True)
    assert result.success
    pseudonyms = set(Pseudonymizer(KEY).series(pd.Series(RAW_IDS)))
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        # The graph ran on the pseudonyms: every user has recommendations, and the bad rows were quarantined.
        assert {r for (r,) in conn.execute("SELECT DISTINCT user_id FROM recommendations").fetchall()} == pseudonyms
        assert {r for (r,) in conn.execute("SELECT DISTINCT user_id FROM user_texts").fetchall()} == pseudonyms
        parts = dict(conn.execute("SELECT part, count(*) FROM quarantine GROUP BY part").fetchall())
        assert parts == {"ratings": 1, "items": 1, "users": 1, "user_texts": 1}
        [text] = conn.execute("SELECT text FROM item_texts WHERE item_id = 'SKU-000'").fetchone()
        assert "[email]" in text and "[phone]" in text
    assert (paths.bundles / "current").exists() and any(paths.mlflow_artifacts.rglob("*"))
    assert find_leaks(paths.home, NEEDLES + [KEY]) == []  # nor the key (Dagster stores its variable's name)


def test_the_leak_search_finds_what_it_looks_for(tmp_path):
    """The search is honest: a needle in each kind of store is found."""
    (tmp_path / "a.txt").write_text(f"x {RAW_IDS[0]} y")
    np.save(tmp_path / "b.npy", np.array([RAW_IDS[1]]))  # UTF-32
    pd.DataFrame({"u": [RAW_IDS[2]] * 50}).to_parquet(tmp_path / "c.parquet")
    with duckdb.connect(str(tmp_path / "d.duckdb")) as conn:
        conn.execute(f"CREATE TABLE t AS SELECT '{RAW_IDS[3]}' || range AS u FROM range(5000)")
    with sqlite3.connect(tmp_path / "e.db") as conn:
        conn.execute("CREATE TABLE t (b BLOB)")
        conn.execute("INSERT INTO t VALUES (?)", [zlib.compress(RAW_IDS[4].encode() * 3)])
    leaks = find_leaks(tmp_path, RAW_IDS[:6])
    assert [leak.split(" in ")[1] for leak in leaks] == ["a.txt", "b.npy", "c.parquet", "d.duckdb", "e.db"]


def test_the_setting_pseudonymizes_any_dataset(tiny_dataset_dir, tmp_path, monkeypatch):
    from llmrec_platform.definitions import build_resources

    monkeypatch.setenv("LLMREC_PSEUDONYM_KEY", KEY)
    settings = Settings.from_env({"LLMREC_PSEUDONYMIZE": "1", "LLMREC_PSEUDONYM_KEY": KEY, "LLMREC_HOME": str(tmp_path)})
    resource = build_resources(settings.paths, dataset=str(tiny_dataset_dir), settings=settings)["dataset"]
    assert resource.pseudonymize and resource.pseudonym_key != KEY  # an EnvVar: Dagster stores only the name
    ratings = resource.load().ratings  # outside a run the variable is read on use, never its name taken as key
    raw = load_dataset(str(tiny_dataset_dir)).ratings
    assert ratings["user_id"].tolist() == Pseudonymizer(KEY).series(raw["user_id"]).tolist()
