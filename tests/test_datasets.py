"""Loading datasets: packaged carriers, GroupLens folders, and bad input that loses nothing."""

import codecs
from pathlib import Path

import pandas as pd
import pytest

from llmrec_platform.data.datasets import ML100K_GENRES, DatasetError, load_dataset
from llmrec_platform.data.specs import over_budget
from llmrec_platform.data.text import OMDB_FIELDS, build_item_texts, build_user_texts, normalize_text, normalize_title
from llmrec_platform.data.validation import parse_timestamps, validate_ratings


def test_grouplens_100k_folder(tiny_dataset_dir):
    ds = load_dataset(str(tiny_dataset_dir))
    assert list(ds.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ds.ratings["timestamp"].dtype == "int64"
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995
    assert len(toy["genres"]) >= 1
    assert ds.quarantine.empty


def test_grouplens_1m_folder(tmp_path):
    folder = tmp_path / "ml1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (folder / "movies.dat").write_text("10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Heat (1995)::Action|Crime\n",
                                       encoding="latin-1")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_dataset(str(folder))
    assert len(ds.ratings) == 3
    assert ds.items.set_index("item_id").loc["20", "genres"] == ["Action", "Crime"]
    users = ds.users.set_index("user_id")
    assert users.loc["1", "occupation"] == "K-12 student" and users.loc["1", "age_group"] == "under 18"
    assert "woman aged under 18" in build_user_texts(ds.users).set_index("user_id").loc["1", "text"]


def test_bad_rows_are_quarantined_and_good_rows_load(tiny_dataset_dir):
    path = tiny_dataset_dir / "u.data"
    lines = path.read_text().splitlines()
    lines[2] = "5\t3\tfive\t881250949"        # rating not a number (row 3)
    lines[4] = "5\t3\t9\t881250949"           # rating out of range (row 5)
    lines[6] = "\t3\t4\t881250949"            # empty user (row 7)
    lines[8] = "5\t3\t4\tyesterday"           # bad timestamp (row 9)
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(str(tiny_dataset_dir))
    q = ds.quarantine.set_index("row_number")
    assert len(ds.ratings) == len(lines) - 4
    assert q.loc[3, "field"] == "rating" and "not a number" in q.loc[3, "reason"]
    assert q.loc[5, "reason"] == "rating outside [0.5, 5]"
    assert q.loc[7, "field"] == "user_id"
    assert q.loc[9, "field"] == "timestamp"
    assert set(q["source_file"]) == {str(path)}
    assert q.loc[3, "raw"].split("\t")[2] == "five"


def test_validate_ratings_names_missing_columns():
    with pytest.raises(DatasetError, match="missing column"):
        validate_ratings(pd.DataFrame({"user_id": ["1"]}), source_file="x.csv")


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "nope", "neither a packaged dataset"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "has neither u.data"),
])
def test_unusable_paths_say_what_is_wrong(tmp_path: Path, setup, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(setup(tmp_path)))


def test_missing_item_file_is_named(tiny_dataset_dir):
    (tiny_dataset_dir / "u.item").unlink()
    with pytest.raises(DatasetError, match="missing file .*u.item"):
        load_dataset(str(tiny_dataset_dir))


def test_packaged_ml100k_and_omdb_enrichment():
    ds = load_dataset("ml-100k")
    assert len(ds.ratings) == 100_000 and ds.ratings["user_id"].nunique() == 943
    texts, match_rate = build_item_texts(ds.items)
    assert 0.6 < match_rate < 0.95
    toy = texts.set_index("item_id").loc["1", "text"]
    assert toy.startswith("Toy Story (1995). Genres: Animation, Children's, Comedy.")
    assert "Directed by John Lasseter" in toy


def test_normalize_title_moves_articles_and_drops_alternates():
    assert normalize_title("Usual Suspects, The") == normalize_title("The Usual Suspects")
    assert normalize_title("Postino, Il (The Postman)") == "il postino"
    assert normalize_title("Misérables, Les") == "les miserables"


# --- the bad-input battery (issue 11) ------------------------------------------------------------------

def _battery(folder: Path) -> dict:
    """Plant every row-isolable defect in a GroupLens folder; returns the planted line numbers."""
    path = folder / "u.data"
    lines = path.read_text().splitlines()
    n = len(lines)
    user, item, _, ts = lines[0].split("\t")
    lines += [
        f"{user}\t{item}\t4\t{ts}\t99",          # n+1: five fields
        f"{user}\t{item}\t4\t{ts}",               # n+2: repeats row 1's key
        "7\t999\t4\t881250949",                  # n+3: an item u.item does not have
        "7\t3\t4\t100",                           # n+4: 1970, before the first partition
        "7\t3\t4",                                # n+5: three fields
    ]
    data = "\n".join(lines).encode("utf-8") + b"\n" + b"8\t1\xff2\t4\t881250949\n"  # n+6: not UTF-8
    path.write_bytes(codecs.BOM_UTF8 + data)
    items = folder / "u.item"
    item_lines = items.read_bytes().splitlines()
    # The genuine ML-100K catalogue is Latin-1: "Misérables, Les (1995)" with é as the single byte 0xE9.
    item_lines[1] = item_lines[1].replace(b"GoldenEye", "Misérables, Les".encode("latin-1"))
    items.write_bytes(b"\n".join(item_lines) + b"\n")
    return {"good": n, "five": n + 1, "repeat": n + 2, "unknown": n + 3, "outside": n + 4, "three": n + 5,
            "bytes": n + 6}


def test_bad_input_battery_quarantines_each_row_and_loads_every_good_one(tiny_dataset_dir):
    planted = _battery(tiny_dataset_dir)
    ds = load_dataset(str(tiny_dataset_dir))
    assert len(ds.ratings) == planted["good"]  # every original row, and none of the planted ones
    q = ds.quarantined("ratings").set_index("row_number")
    assert sorted(q.index) == sorted(v for k, v in planted.items() if k != "good")
    assert set(q["source_file"]) == {str(tiny_dataset_dir / "u.data")}
    assert q.loc[planted["five"], "reason"] == "wrong number of fields: expected 4, found 5"
    assert q.loc[planted["three"], "reason"] == "wrong number of fields: expected 4, found 3"
    assert q.loc[planted["repeat"], "reason"] == "repeated (user_id, item_id, timestamp): first at row 1"
    assert (q.loc[planted["unknown"], "field"], q.loc[planted["unknown"], "reason"]) == (
        "item_id", f"item not in {tiny_dataset_dir / 'u.item'}")
    assert q.loc[planted["outside"], "field"] == "timestamp"
    assert q.loc[planted["outside"], "reason"].startswith("timestamp outside the partitioned range [1995-01-01")
    assert q.loc[planted["bytes"], "reason"] == "bytes not valid in utf-8"
    assert q.loc[planted["bytes"], "field"] == "item_id" and "\\xff" in q.loc[planted["bytes"], "raw"]
    # The BOM is stripped and noted: no user id carries it.
    assert not ds.ratings["user_id"].str.contains("\ufeff").any()
    assert set(ds.ratings["user_id"]) <= {str(u) for u in range(1, 25)}
    assert any("byte-order mark stripped" in note for note in ds.notes)
    # Latin-1 is detected from the bytes, not chosen by the suffix.
    assert ds.items.set_index("item_id").loc["2", "title"] == "Misérables, Les"
    assert any("u.item: encoding latin-1" in note for note in ds.notes)
    # 6 of ~390 rows: inside the default budget (5%), outside a 1% one.
    assert over_budget(ds, "ratings") == []
    ds.error_budget = 0.01
    [problem] = over_budget(ds, "ratings")
    assert problem.startswith(f"{tiny_dataset_dir / 'u.data'}: 6 of {planted['good'] + 6} rows rejected")


def test_genuine_ml100k_item_bytes_load_when_the_carrier_is_installed(tmp_path):
    """The packaged ML-100K ratings with a GroupLens-layout, Latin-1 u.item built from its catalogue."""
    ds = load_dataset("ml-100k")
    folder = tmp_path / "ml100k"
    folder.mkdir()
    ratings = ds.ratings.astype(str).agg("\t".join, axis=1)
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    lines = [f"{r.item_id}|{r.title}{'' if pd.isna(r.year) else f' ({r.year})'}|01-Jan-1995||http://x|" + "|".join(
        "1" if g in r.genres else "0" for g in ML100K_GENRES) for r in ds.items.itertuples()]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    assert b"\xe9" in (folder / "u.item").read_bytes()  # real Latin-1 accents, e.g. Misérables
    again = load_dataset(str(folder))
    assert len(again.ratings) == 100_000 and again.quarantine.empty
    dated = ds.items["year"].notna()
    assert again.items["title"][dated.to_numpy()].tolist() == ds.items["title"][dated].tolist()
    assert "Misérables, Les" in set(again.items["title"])


def test_duplicate_and_empty_item_ids_are_quarantined(tiny_dataset_dir):
    items = tiny_dataset_dir / "u.item"
    lines = items.read_text(encoding="latin-1").splitlines()
    lines.append(lines[0].replace("Toy Story", "Toy Story again"))
    lines.append("|Nameless (1995)|" + lines[0].split("|", 2)[2])
    items.write_text("\n".join(lines) + "\n", encoding="latin-1")
    ds = load_dataset(str(tiny_dataset_dir))
    q = ds.quarantined("items").set_index("row_number")
    assert q.loc[len(lines) - 1, "reason"].startswith("repeated item_id")
    assert q.loc[len(lines), "reason"] == "empty item_id"
    assert ds.items.set_index("item_id").loc["1", "title"] == "Toy Story"


def test_empty_files(tiny_dataset_dir):
    (tiny_dataset_dir / "u.user").write_text("")
    assert load_dataset(str(tiny_dataset_dir)).users.empty  # users are optional
    (tiny_dataset_dir / "u.data").write_text("")
    with pytest.raises(DatasetError, match=r"u\.data: the file is empty"):
        load_dataset(str(tiny_dataset_dir))


def test_timestamps_parse_epoch_seconds_and_iso_8601():
    parsed = parse_timestamps(pd.Series(["881250949", "2024-03-01T00:00:00+00:00", "1997-01-01", "yesterday", None]))
    assert parsed.tolist()[:3] == [881250949, 1709251200, 852076800]
    assert parsed.isna().tolist()[3:] == [True, True]


def test_text_normalisation_repairs_mojibake_and_entities():
    assert normalize_text("ExupÃ©ry") == "Exupéry"
    assert normalize_text("ExupÃƒÂ©ry") == "Exupéry"  # twice over
    assert normalize_text("Tom &amp; Jerry  ") == "Tom & Jerry"
    assert normalize_text(None) == ""
    items = pd.DataFrame({"item_id": ["1"], "title": ["LÃ©on &amp; Mathilda"], "year": pd.array([1994], dtype="Int64"),
                          "genres": [["Drama"]]})
    no_credits = pd.DataFrame(columns=["title_key", "year", *OMDB_FIELDS]).astype({"year": "Int64"})
    text = build_item_texts(items, omdb=no_credits)[0]
    assert text["text"].iloc[0].startswith("Léon & Mathilda (1994).")


def test_personal_data_is_scrubbed_from_every_text():
    assert normalize_text("Mail jane.doe+x@example.co.uk or call +49 170 1234567") == "Mail [email] or call [phone]"
    assert normalize_text("See https://shop.example/p?id=3 and www.x.org") == "See [url] and [url]"
    assert normalize_text("Card 4111111111111111, tel (555) 123-4567") == "Card [number], tel [phone]"
    # Years, dates, versions and short numbers are not personal data.
    for keep in ("Star Wars (1977-1983) 2001: A Space Odyssey (1968)", "1995 1996 1997 1998", "v3.5.1 on 12.05.2024",
                 "zip 48067"):
        assert normalize_text(keep) == keep
    users = pd.DataFrame({"user_id": ["1"], "age": pd.array([30], dtype="Int64"), "gender": ["F"],
                          "occupation": ["writer"], "zip_code": ["1"], "age_group": ["30"],
                          "text": ["Write to me: me@example.com"]})
    assert build_user_texts(users)["text"].iloc[0] == "Write to me: [email]"


def test_rows_are_named_by_their_line_around_empty_lines_crlf_and_rejected_rows(tmp_path):
    """The line of every row (loaded or quarantined) comes from DuckDB's rejects and the empty lines, not from an
    index of every line; the raw text of a rejected row is its own line."""
    from llmrec_platform.data.readers import _numbered_lines, read_delimited

    path = tmp_path / "ratings.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,rating\r\n\r\nu1,i1,4\r\nu2,i2\r\n\r\nu3,i3,5,extra\r\nu4,i4,2\r\n")
    result = read_delimited(path)
    assert result.frame["user_id"].tolist() == ["u1", "u4"] and result.frame["_row"].tolist() == [3, 7]
    assert result.quarantine[["row_number", "raw"]].values.tolist() == [[4, "u2,i2"], [6, "u3,i3,5,extra"]]
    assert result.rows == {str(path): 4}
    data = b"a\r\nbb\n\nccc\ndd"
    assert _numbered_lines(data, [5, 1, 3], chunk=2) == {1: b"a", 3: b"", 5: b"dd"}


def test_the_ratings_stay_arrow_until_pandas_is_asked_for(tiny_dataset_dir):
    import pyarrow as pa

    ds = load_dataset(str(tiny_dataset_dir))
    assert isinstance(ds.ratings_table, pa.Table) and "ratings" not in ds.__dict__  # no pandas copy yet
    assert ds.ratings.equals(ds.ratings_table.to_pandas())


def test_dataset_months_loads_the_dataset_under_the_runs_duckdb_memory_limit(tiny_dataset_dir, monkeypatch):
    from llmrec_platform import cli
    from llmrec_platform.data import datasets, duck

    monkeypatch.setattr(duck, "_memory_limit", duck._memory_limit)  # restored after the test
    limits_at_load = []
    real_load = datasets.load_dataset_cached
    monkeypatch.setattr(datasets, "load_dataset_cached",
                        lambda source: limits_at_load.append(duck._memory_limit) or real_load(source))
    first, last = cli.dataset_months(str(tiny_dataset_dir), "123MB")
    assert limits_at_load == ["123MB"]
    with duck.session() as conn:  # every later session of the process too
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "117.3 MiB"
    stamps = pd.to_datetime(load_dataset(str(tiny_dataset_dir)).ratings["timestamp"], unit="s")
    assert (first, last) == (stamps.min().strftime("%Y-%m-01"), stamps.max().strftime("%Y-%m-01"))
    with pytest.raises(ValueError, match="DuckDB memory limit 'lots'"):
        cli.dataset_months(str(tiny_dataset_dir), "lots")
