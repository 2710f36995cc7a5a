"""Hypothesis property tests of the dataset readers, through the entry points a user has: a GroupLens folder and a
CSV/TSV named by a dataset config (docs/security/fuzzing.md).

Whatever the bytes (random fields, delimiters inside values, control characters, invalid bytes, a byte-order mark,
CRLF and LF mixed, Latin-1, cp1252, GBK or UTF-16, declared or detected, blank lines, one to about a thousand rows),
the load returns a dataset: ratings plus quarantined rows equal the data rows read, which are every non-empty line of
the file (less the header), and a well-formed row planted among the garbage loads. Any exception fails the test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec_platform.data.datasets import DatasetError, load_dataset

PLANTED = ("planted-user", "1", "4", "880000000")  # a valid rating; no generated row has its user id
VALID_RANGE = (0, 2_000_000_000)  # fixed, so an outcome does not depend on today's date
BOM = b"\xef\xbb\xbf"
# CI: the same 50 cases per test every run (derandomized), so a red run is a real change. The profile `fuzz-explore`
# (tests/conftest.py) draws 1,000 fresh random ones instead.
EXPLORE = settings.get_current_profile_name() == "fuzz-explore"
FUZZ = settings(max_examples=settings.default.max_examples if EXPLORE else 50, derandomize=not EXPLORE, deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])

# Field values: the right shapes, near misses and hostile text (delimiters, quotes, control characters).
good_values = st.sampled_from(["1", "2", "3", "5", "4.5", "0.5", "880000000", "2024-03-01T10:00:00Z", "1998-01-01"])
bad_values = st.sampled_from(["", " ", "nan", "inf", "-1", "1e309", "99999999999999999999", "0x10", "5.0001", "NULL",
                              "\"", "'", "\\", "::", "|", "\t", ";", ",", "\r", "\x00", "\x1b[31m", "é", "€", "数据",
                              "\ufeff", "\u2028"])
any_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=12)
row = st.lists(st.one_of(good_values, bad_values, any_text), max_size=6)  # 4 fields is right; 0-3 and 5-6 are not


@st.composite
def ratings_text(draw, sep: str, planted: str | None = None) -> str:
    """Rows of generated fields, repeated up to 100 times (up to ~4,000 lines), blank lines, the planted row
    (`planted`: another line to plant instead, e.g. an item)."""
    rows = draw(st.lists(row, max_size=40)) * draw(st.sampled_from([1, 1, 10, 100]))
    lines = [sep.join(fields) for fields in rows]
    lines.insert(draw(st.integers(0, len(lines))), planted or sep.join(PLANTED))
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), "")
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))


@st.composite
def damaged(draw, text: str, encoding: str, sep: str, header: bool = False, planted: str | None = None) -> bytes:
    """`text` in `encoding` (unencodable characters as '?'), perhaps with a byte-order mark or invalid bytes (never in
    the header line: a header without the configured column is a ConfigError, tested in test_dataset_config.py)."""
    data = text.encode(encoding, errors="replace")
    damage = draw(st.sampled_from(["none", "bom", "invalid bytes"] if encoding != "utf-16" else ["none"]))
    if damage == "bom":
        data = BOM + data
    elif damage == "invalid bytes":  # spliced onto lines other than the planted one
        planted = (planted or sep.join(PLANTED)).encode()
        pieces = data.split(b"\n")
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(1 if header else 0, len(pieces) - 1))
            if planted not in pieces[i]:
                pieces[i] += draw(st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b))
        data = b"\n".join(pieces)
    return data


def data_lines(data: bytes, header: bool, encoding: str = "utf-8") -> int:
    """Non-empty lines (a byte-order mark and CR line ends ignored), less the header: what "rows read" must be."""
    if encoding == "utf-16":
        data = data.decode("utf-16", errors="replace").encode("utf-8")
    lines = [line.removesuffix(b"\r") for line in data.removeprefix(BOM).split(b"\n")]
    count = sum(1 for line in lines if line)
    return count - 1 if header and count else count


def check_load(load, data: bytes, header: bool, encoding: str = "utf-8") -> None:
    """The property every reader input must keep (see the module docstring); any exception fails the test."""
    dataset = load()
    read = sum(dataset.rows["ratings"].values())
    quarantine = dataset.quarantined("ratings")
    assert len(dataset.ratings) + len(quarantine) == read, (len(dataset.ratings), len(quarantine), read)
    assert read == data_lines(data, header, encoding), (read, data_lines(data, header, encoding))
    assert quarantine["row_number"].is_unique and (quarantine["reason"].str.len() > 0).all()
    assert (PLANTED[0], PLANTED[1]) in set(zip(dataset.ratings["user_id"], dataset.ratings["item_id"], strict=True))


GROUPLENS = {  # layout: (ratings file, separator, items file, its content)
    "ml-100k": ("u.data", "\t", "u.item", "".join(f"{i}|Film {i} (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n"
                                                 for i in range(1, 6))),
    "ml-1m": ("ratings.dat", "::", "movies.dat", "".join(f"{i}::Film {i} (1995)::Comedy\n" for i in range(1, 6))),
}
ITEMS_CSV = "id,name\n" + "".join(f"{i},Film {i}\n" for i in range(1, 6))


def grouplens_folder(folder: Path, layout: str, ratings: bytes) -> Path:
    ratings_name, _, items_name, items = GROUPLENS[layout]
    (folder / items_name).write_text(items, encoding="latin-1")
    (folder / ratings_name).write_bytes(ratings)
    return folder


def config_folder(folder: Path, ratings: bytes, options: dict) -> Path:
    """A dataset config over ratings.csv (header user, item, stars, ts) and a five-item items.csv."""
    (folder / "items.csv").write_text(ITEMS_CSV)
    (folder / "ratings.csv").write_bytes(ratings)
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "interactions": {"path": "ratings.csv", "user": "user", "item": "item", "rating": "stars", "timestamp": "ts",
                         "options": options},
        "items": {"path": "items.csv", "id": "id", "text": "name"}, "error_budget": 1.0}))
    return folder / "c.yaml"


@pytest.mark.parametrize("layout", sorted(GROUPLENS))
def test_a_grouplens_folder_loads_or_quarantines_every_row(layout, fuzz_stats):
    files = []
    sep = GROUPLENS[layout][1]

    @FUZZ
    @given(st.data())
    def run(draw):
        # The loader declares UTF-8 for the ratings: Latin-1 bytes are invalid there and must be quarantined.
        data = draw.draw(damaged(draw.draw(ratings_text(sep)), draw.draw(st.sampled_from(["utf-8", "latin-1"])), sep))
        files.append(len(data))
        with tempfile.TemporaryDirectory() as tmp:
            folder = grouplens_folder(Path(tmp), layout, data)
            check_load(lambda: load_dataset(str(folder), VALID_RANGE), data, header=False)

    run()
    fuzz_stats[f"hypothesis: a GroupLens {layout} folder"] = f"{len(files)} files of up to {max(files):,} bytes"


PLANTED_ITEMS = {"ml-100k": "1|Planted film (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19),
                 "ml-1m": "1::Planted film (1995)::Comedy"}


@pytest.mark.parametrize("layout", sorted(GROUPLENS))
def test_a_grouplens_item_file_loads_or_quarantines_every_row(layout, fuzz_stats):
    """The item file of a GroupLens folder (Latin-1 or UTF-8, detected), the planted item among the garbage."""
    files = []
    ratings_name, sep, items_name, _ = GROUPLENS[layout]

    @FUZZ
    @given(st.data())
    def run(draw):
        planted = PLANTED_ITEMS[layout]
        text = draw.draw(ratings_text(sep, planted))
        data = draw.draw(damaged(text, draw.draw(st.sampled_from(["latin-1", "utf-8"])), sep, planted=planted))
        files.append(len(data))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / items_name).write_bytes(data)
            (folder / ratings_name).write_text(sep.join(PLANTED) + "\n")
            dataset = load_dataset(str(folder), VALID_RANGE)  # any exception fails the test
            read = sum(dataset.rows["items"].values())
            assert len(dataset.items) + len(dataset.quarantined("items")) == read == data_lines(data, header=False)
            assert "1" in set(dataset.items["item_id"]) and len(dataset.ratings) == 1

    run()
    fuzz_stats[f"hypothesis: a GroupLens {layout} item file"] = f"{len(files)} files of up to {max(files):,} bytes"


ENCODINGS = [None, "utf-8", "latin-1", "cp1252", "gbk", "utf-16"]  # None: detected from the bytes


def test_a_csv_of_a_dataset_config_loads_or_quarantines_every_row(fuzz_stats):
    files = []

    @FUZZ
    @given(st.data())
    def run(draw):
        sep = draw.draw(st.sampled_from([",", ";", "\t", "|"]))
        declared = draw.draw(st.sampled_from(ENCODINGS))
        # Mostly the declared encoding; sometimes another ASCII-compatible one (its bytes must then be quarantined).
        actual = declared or "utf-8"
        if actual != "utf-16" and draw.draw(st.booleans()):
            actual = draw.draw(st.sampled_from(["utf-8", "latin-1", "cp1252", "gbk"]))
        text = sep.join(["user", "item", "stars", "ts"]) + "\n" + draw.draw(ratings_text(sep))
        data = draw.draw(damaged(text, actual, sep, header=True))
        files.append(len(data))
        # Quoting off: with it on, a stray quote rightly joins lines into one value (docs/security/fuzzing.md).
        options = {"delim": sep, "quote": "", "escape": "", **({"encoding": declared} if declared else {})}
        with tempfile.TemporaryDirectory() as tmp:
            config = config_folder(Path(tmp), data, options)
            check_load(lambda: load_dataset(str(config), VALID_RANGE), data, header=True, encoding=declared or "utf-8")

    run()
    fuzz_stats["hypothesis: a CSV/TSV of a dataset config"] = f"{len(files)} files of up to {max(files):,} bytes"


sized_bytes = st.integers(0, 8192).flatmap(lambda n: st.binary(min_size=n, max_size=n))  # Hypothesis favours short


@pytest.mark.parametrize("entry", ["grouplens", "config"])
def test_random_bytes_around_a_good_row_load_or_quarantine(entry, fuzz_stats):
    files = []

    @FUZZ
    @given(before=sized_bytes, after=sized_bytes)
    def run(before: bytes, after: bytes):
        sep = "\t" if entry == "grouplens" else ","
        good = sep.join(PLANTED).encode()
        header = b"user,item,stars,ts\n" if entry == "config" else b""
        data = header + before + b"\n" + good + b"\n" + after
        files.append(len(data))
        with tempfile.TemporaryDirectory() as tmp:
            if entry == "grouplens":
                source = grouplens_folder(Path(tmp), "ml-100k", data)
            else:  # no encoding declared: detected from the bytes
                source = config_folder(Path(tmp), data, {"delim": ",", "quote": "", "escape": ""})
            check_load(lambda: load_dataset(str(source), VALID_RANGE), data, header=entry == "config")

    run()
    fuzz_stats[f"hypothesis: random bytes, {entry}"] = f"{len(files)} files of up to {max(files):,} bytes"


def test_a_quoted_csv_loads_or_quarantines_every_record(fuzz_stats):
    """Quoting on (the config default): a stray quote may rightly swallow the lines after it into one value, so
    lines are no measure and the planted row may go; still no exception but a DatasetError that says every row was
    quarantined, and ratings plus quarantined rows equal the records read."""
    files, swallowed = [], []

    @FUZZ
    @given(st.data())
    def run(draw):
        sep = draw.draw(st.sampled_from([",", ";", "\t"]))
        text = sep.join(["user", "item", "stars", "ts"]) + "\n" + draw.draw(ratings_text(sep)).replace("'", '"')
        data = draw.draw(damaged(text, draw.draw(st.sampled_from(["utf-8", "latin-1"])), sep, header=True))
        files.append(len(data))
        with tempfile.TemporaryDirectory() as tmp:
            config = config_folder(Path(tmp), data, {"delim": sep})
            try:
                dataset = load_dataset(str(config), VALID_RANGE)
            except DatasetError as exc:
                assert "ratings.csv" in str(exc) or "c.yaml" in str(exc), exc
                assert "quarantined" in str(exc), exc  # "no valid rows (all N quarantined)"
                swallowed.append(len(data))
                return
            # Not asserted: unique row numbers. Once a quoted value spans lines they are record positions, which
            # can repeat a DuckDB-rejected line's number (docs/security/fuzzing.md, "What is not covered").
            quarantine = dataset.quarantined("ratings")
            assert len(dataset.ratings) + len(quarantine) == sum(dataset.rows["ratings"].values())

    run()
    fuzz_stats["hypothesis: a quoted CSV of a dataset config"] = (
        f"{len(files)} files of up to {max(files):,} bytes ({len(swallowed)} with every row quarantined)")
