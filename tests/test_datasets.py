"""Loading datasets: packaged carriers, GroupLens folders, and bad input that loses nothing."""

from pathlib import Path

import pandas as pd
import pytest

from llmrec_platform.data.datasets import DatasetError, load_dataset, validate_ratings
from llmrec_platform.data.text import build_item_texts, build_user_texts, normalize_title


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
