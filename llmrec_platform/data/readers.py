"""Read delimited, JSON Lines and Parquet files row by row, losing nothing (no Dagster).

Every reader returns a `ReadResult`: the rows it could parse (the requested columns, plus `_file` and
`_row`: the source file and the row's line in it, 1-based, header included), the rows it could not
(quarantine records naming file, row, field and reason), per-file row counts (for the error budget) and
notes (a byte-order mark stripped, the encoding detected).

CSV-like files go through DuckDB's CSV reader with `store_rejects`: a row with too many or too few
fields, or bytes that are invalid in the file's encoding, is recorded in DuckDB's rejects table and
becomes a quarantine record; the other rows load. The encoding is declared (`encoding` option) or
detected from the bytes, never chosen by file suffix: a file that decodes as UTF-8 is UTF-8; one whose
non-ASCII bytes are mostly not UTF-8 is Latin-1 (the GroupLens originals); otherwise it is UTF-8 and the
lines with invalid bytes are quarantined. A UTF-8 byte-order mark is stripped and noted, never part of a
value or a column name. What DuckDB's reader would refuse as a whole file is handled here, line by line (found by
tests/security/test_reader_fuzz.py): a carriage return inside a line quarantines that line, CRLF mixed with LF is
read as LF, and UTF-16 files and Latin-1 files with bytes in 0x80-0x9f are decoded by Python.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

QUARANTINE_COLUMNS = ["source_file", "row_number", "field", "reason", "raw"]
ROW_FILE, ROW_NUMBER = "_file", "_row"
BOM = codecs.BOM_UTF8
FORMATS = ("csv", "parquet", "jsonl")
# Encodings DuckDB's CSV reader decodes itself; others are transcoded to UTF-8 first.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "latin-1": "latin-1", "latin1": "latin-1",
                     "iso-8859-1": "latin-1", "iso8859-1": "latin-1"}
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_BARE_CR = re.compile(rb"\r(?!\n)")
_C1_BYTES = re.compile(rb"[\x80-\x9f]")
_UTF16 = ("utf-16", "utf16", "utf-16-le", "utf-16le", "utf-16-be", "utf-16be")
_FIELD_COUNT = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_counter = itertools.count()


class ReadError(ValueError):
    """A file cannot be read at all (missing, empty, unreadable, no such column)."""


@dataclass
class ReadResult:
    frame: pd.DataFrame
    quarantine: pd.DataFrame
    rows: dict[str, int] = field(default_factory=dict)  # data rows seen per file (loaded + quarantined)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return list(self.rows)


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row_number" else "object") for c in QUARANTINE_COLUMNS})


def quarantine_records(files, rows, field_name, reason, raw) -> pd.DataFrame:
    """Quarantine records; each argument is a scalar or one value per record."""
    n = max(len(v) if isinstance(v, list | tuple | np.ndarray | pd.Series | pd.Index) else 1
            for v in (files, rows, field_name, reason, raw))

    def column(v):
        if isinstance(v, list | tuple | np.ndarray | pd.Series | pd.Index):
            return list(v)
        return [v] * n

    frame = pd.DataFrame({"source_file": column(files), "row_number": column(rows), "field": column(field_name),
                          "reason": column(reason), "raw": column(raw)})
    frame["row_number"] = frame["row_number"].astype("int64")
    return frame


def concat_quarantine(frames) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS] if frames else empty_quarantine()


def expand(pattern: str | Path, what: str = "file") -> list[Path]:
    """The files a path or glob names, sorted; a ReadError names the pattern when nothing matches."""
    text = str(pattern)
    if any(ch in text for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not paths:
            raise ReadError(f"{what}: no file matches {text}")
        return paths
    path = Path(text)
    if not path.exists():
        raise ReadError(f"{what}: missing file {path}")
    if path.is_dir():
        raise ReadError(f"{what}: {path} is a folder; give a file or a glob such as {path}/*.csv")
    return [path]


def file_format(path: Path, declared: str | None = None) -> str:
    if declared:
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".jsonl" in suffixes or ".ndjson" in suffixes or ".json" in suffixes:
        return "jsonl"
    return "csv"


def detect_encoding(data: bytes) -> tuple[str, str]:
    """(encoding, how it was decided) for bytes without a declared encoding."""
    if data.startswith(BOM):
        return "utf-8", "UTF-8 byte-order mark"
    try:
        data.decode("utf-8")
        return "utf-8", "valid UTF-8"
    except UnicodeDecodeError:
        pass
    valid = invalid = 0
    for line in data.splitlines():
        if not _NON_ASCII.search(line):
            continue
        try:
            line.decode("utf-8")
            valid += 1
        except UnicodeDecodeError:
            invalid += 1
    if invalid > valid:
        return "latin-1", f"{invalid} lines are not UTF-8 and {valid} non-ASCII lines are: detected Latin-1"
    return "utf-8", f"UTF-8 with {invalid} line(s) of invalid bytes"


def _lines(data: bytes) -> list[bytes]:
    return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]


class _LineIndex:
    """Where each line of `data` starts and ends (numpy, no copy of the lines): line i is 1-based."""

    def __init__(self, data: bytes):
        self.data = data
        arr = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        self.starts = np.concatenate([[0], newlines + 1])
        self.ends = np.concatenate([newlines, [len(data)]])
        if len(arr):
            cr = (self.ends > self.starts) & (arr[np.maximum(self.ends - 1, 0)] == 13)
            self.ends = self.ends - cr
        self.non_empty = np.flatnonzero(self.ends > self.starts) + 1  # line numbers with content

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, number: int) -> bytes:
        return self.data[self.starts[number - 1]:self.ends[number - 1]]


def _utf16_as_utf8(body: bytes, encoding: str) -> bytes:
    """A UTF-16 file as UTF-8 bytes; invalid sequences become U+FFFD (and their lines are quarantined)."""
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        text = body.decode(encoding, errors="replace")
    return text.removeprefix("\ufeff").encode("utf-8")  # utf-16-le/-be keep the byte-order mark as a character


def _decode(line: bytes, encoding: str) -> str:
    return line.decode(encoding, errors="backslashreplace")


def read_delimited(
    path: Path,
    *,
    names: list[str] | None = None,
    sep: str | None = None,
    header: bool = True,
    options: dict | None = None,
    default_encoding: str | None = None,
    quoting: bool = True,
) -> ReadResult:
    """One delimited text file. `names`: the file has exactly these fields (GroupLens; a header line, if
    `header`, is skipped); otherwise the header names the columns. `options` are handed to DuckDB's
    read_csv (delim, quote, escape, nullstr, encoding, ...). `default_encoding` is the declared encoding
    when the options hold none (None: detect). Every value is read as a string."""
    options = dict(options or {})
    source = str(path)
    data = path.read_bytes()
    notes = []
    if data.startswith(BOM):
        notes.append(f"{source}: UTF-8 byte-order mark stripped")
    declared = options.pop("encoding", None) or default_encoding
    if declared:
        encoding = declared.lower()
        how = "declared"
    else:
        encoding, how = detect_encoding(data)
        if encoding != "utf-8" or "invalid" in how:
            notes.append(f"{source}: encoding {encoding} ({how})")
    body = data[len(BOM):] if data.startswith(BOM) else data
    if not body.strip():
        raise ReadError(f"{source}: the file is empty")
    file_encoding = encoding
    blank: dict[int, str] = {}  # line -> why it is quarantined here, before DuckDB (it reads the line as empty)
    if encoding.replace("_", "-") in _UTF16:  # DuckDB's UTF-16 decoder fails on mixed line ends: decode here
        body, encoding = _utf16_as_utf8(body, encoding), "utf-8"
    lines = _LineIndex(body)
    if file_encoding != encoding and b"\xef\xbf\xbd" in body:  # U+FFFD: where the UTF-16 bytes were invalid
        blank.update((int(n), f"bytes not valid in {file_encoding}") for n in lines.non_empty
                     if b"\xef\xbf\xbd" in lines[int(n)])
    duck_encoding = _DUCKDB_ENCODINGS.get(encoding)
    if duck_encoding == "latin-1" and _C1_BYTES.search(body):
        duck_encoding = None  # DuckDB's Latin-1 refuses the whole file over one byte in 0x80-0x9f: Python's takes them
    read_path = path
    tmp = None
    # Line ends DuckDB cannot take: a carriage return inside a line (it takes it for a line end, or fails on the
    # whole file) and CRLF mixed with LF (its sniffer fails). Such a file is read with LF line ends, its lines with
    # an inner CR quarantined here. A CR-only file has no LF and is DuckDB's to read.
    normalize = b"\n" in body and b"\r" in body and (
        bool(_BARE_CR.search(body)) or body.count(b"\r\n") < body.count(b"\n"))
    if normalize:
        blank.update((int(n), "a carriage return (\\r) inside the line") for n in lines.non_empty
                     if b"\r" in lines[int(n)])
    pre_rejects = [(n, reason, _decode(lines[n], encoding)) for n, reason in sorted(blank.items())]
    if duck_encoding is None:  # transcode line by line; lines the codec rejects are quarantined here
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ReadError(f"{source}: unknown encoding {encoding!r}") from exc
        out = []
        for number, line in enumerate(_lines(body), 1):
            try:
                out.append("" if number in blank else line.decode(encoding))
            except UnicodeDecodeError as exc:
                pre_rejects.append((number, f"bytes not valid in {encoding}: {exc.reason} at byte {exc.start}",
                                    _decode(line, "latin-1")))
                out.append("")
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8") as tmp:
            tmp.write("\n".join(out))
        read_path, duck_encoding = Path(tmp.name), "utf-8"
    elif normalize or blank or file_encoding != encoding or (data.startswith(BOM) and duck_encoding != "utf-8"):
        # LF line ends, UTF-8, no byte-order mark (only DuckDB's UTF-8 drops it), the quarantined lines left empty
        with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as tmp:
            tmp.write(b"\n".join(b"" if n in blank else lines[n] for n in range(1, len(lines) + 1)))
        read_path = Path(tmp.name)
    if sep is not None:
        options.setdefault("delim", sep)
    if not quoting:
        options.setdefault("quote", "")
        options.setdefault("escape", "")
    n = next(_counter)
    rejects_table, rejects_scan = f"rejects_{n}", f"rejects_scan_{n}"
    params: dict = {"store_rejects": True, "rejects_table": rejects_table, "rejects_scan": rejects_scan,
                    "encoding": duck_encoding, **options}
    if names is not None:
        params.update(header=header, columns={c: "VARCHAR" for c in names}, auto_detect=False)
    else:
        params.update(header=bool(options.get("header", header)), all_varchar=True)
    args = ", ".join(f"{k} := ?" for k in params)
    try:
        with duckdb.connect() as conn:
            conn.execute("SET enable_progress_bar = false")
            # Through Arrow: several times faster than .df() for string columns.
            frame = conn.sql(f"SELECT * FROM read_csv(?, {args})",
                             params=[str(read_path), *params.values()]).to_arrow_table().to_pandas()
            rejects = conn.execute(f"SELECT line, column_name, error_type, error_message, csv_line FROM {rejects_table} "
                                   "ORDER BY line").df()
    except duckdb.Error as exc:
        raise ReadError(f"{source}: cannot read as CSV ({str(exc).splitlines()[0]})") from exc
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    records = []
    rejected_lines = set()
    for number, reason, raw in pre_rejects:
        rejected_lines.add(number)
        records.append((number, "(row)", reason, raw))
    for r in rejects.itertuples(index=False):
        line = int(r.line) if pd.notna(r.line) else 0
        if line in rejected_lines:
            continue
        rejected_lines.add(line)
        raw = _decode(lines[line], encoding) if 0 < line <= len(lines) else str(r.csv_line)
        kind = str(r.error_type)
        if kind == "INVALID ENCODING":
            reason = f"bytes not valid in {encoding}"
        elif kind in ("TOO MANY COLUMNS", "MISSING COLUMNS"):
            counts = _FIELD_COUNT.search(str(r.error_message))
            reason = (f"wrong number of fields: expected {counts[1]}, found {counts[2]}" if counts
                      else f"wrong number of fields: {r.error_message}")
        else:
            reason = f"{kind.lower()}: {r.error_message}"
        column = r.column_name if isinstance(r.column_name, str) and r.column_name else "(row)"
        records.append((line, column, reason, raw))
    records.sort()
    quarantine = (quarantine_records(source, [r[0] for r in records], [r[1] for r in records],
                                     [r[2] for r in records], [r[3] for r in records])
                  if records else empty_quarantine())
    # Line numbers of the loaded rows: the non-empty lines, less the header and the rejected ones (exact
    # unless a quoted value spans lines; then they are record positions).
    has_header = bool(params.get("header"))
    candidates = lines.non_empty[1:] if has_header else lines.non_empty
    if rejected_lines:
        candidates = candidates[~np.isin(candidates, np.fromiter(rejected_lines, dtype="int64"))]
    if len(candidates) == len(frame):
        row_numbers = candidates.astype("int64")
    else:
        row_numbers = np.arange(1, len(frame) + 1, dtype="int64") + (1 if has_header else 0)
        notes.append(f"{source}: a quoted value spans lines; row numbers are record positions")
    frame[ROW_FILE] = source
    frame[ROW_NUMBER] = row_numbers
    return ReadResult(frame, quarantine, {source: len(frame) + len(records)}, notes)


def read_jsonl(path: Path, options: dict | None = None) -> ReadResult:
    """JSON Lines: one object per line; a line that is not a JSON object (or not UTF-8) is quarantined."""
    source = str(path)
    data = path.read_bytes()
    notes = []
    if data.startswith(BOM):
        notes.append(f"{source}: UTF-8 byte-order mark stripped")
        data = data[len(BOM):]
    if not data.strip():
        raise ReadError(f"{source}: the file is empty")
    encoding = (options or {}).get("encoding", "utf-8")
    rows, numbers, records = [], [], []
    for number, line in enumerate(_lines(data), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode(encoding))
        except UnicodeDecodeError:
            records.append((number, "(row)", f"bytes not valid in {encoding}", _decode(line, "latin-1")))
            continue
        except json.JSONDecodeError as exc:
            records.append((number, "(row)", f"not valid JSON: {exc.msg} at column {exc.colno}", _decode(line, encoding)))
            continue
        if not isinstance(value, dict):
            records.append((number, "(row)", f"expected a JSON object, found {type(value).__name__}",
                            _decode(line, encoding)))
            continue
        rows.append(value)
        numbers.append(number)
    frame = pd.DataFrame(rows)
    frame[ROW_FILE] = source
    frame[ROW_NUMBER] = np.asarray(numbers, dtype="int64")
    quarantine = (quarantine_records(source, [r[0] for r in records], [r[1] for r in records],
                                     [r[2] for r in records], [r[3] for r in records])
                  if records else empty_quarantine())
    return ReadResult(frame, quarantine, {source: len(frame) + len(records)}, notes)


def read_parquet(path: Path) -> ReadResult:
    """Parquet (typed columns kept); `_row` is the 1-based row within the file."""
    source = str(path)
    if path.stat().st_size == 0:
        raise ReadError(f"{source}: the file is empty")
    try:
        with duckdb.connect() as conn:
            conn.execute("SET enable_progress_bar = false")
            frame = conn.sql("SELECT * FROM read_parquet(?, file_row_number = true)",
                             params=[source]).to_arrow_table().to_pandas()
    except duckdb.Error as exc:
        raise ReadError(f"{source}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc
    frame[ROW_NUMBER] = frame.pop("file_row_number").astype("int64") + 1
    frame[ROW_FILE] = source
    return ReadResult(frame, empty_quarantine(), {source: len(frame)}, [])


def read_files(pattern: str | Path, *, what: str, fmt: str | None = None, options: dict | None = None,
               allow_empty: bool = False) -> ReadResult:
    """Every file a path or glob names, concatenated (columns by name). `what` names the config key in
    errors. An empty file among several is noted and skipped; `allow_empty` also accepts a single one."""
    paths = expand(pattern, what)
    results, notes = [], []
    for path in paths:
        kind = file_format(path, fmt)
        if kind not in FORMATS:
            raise ReadError(f"{what}: format {kind!r} of {path} is not one of {', '.join(FORMATS)}")
        try:
            if kind == "parquet":
                result = read_parquet(path)
            elif kind == "jsonl":
                result = read_jsonl(path, options)
            else:
                result = read_delimited(path, options=options)
        except ReadError as exc:
            if "is empty" in str(exc) and (allow_empty or len(paths) > 1):
                notes.append(str(exc))
                continue
            raise ReadError(f"{what}: {exc}") from exc
        results.append(result)
    if not results:
        return ReadResult(pd.DataFrame(columns=[ROW_FILE, ROW_NUMBER]), empty_quarantine(), {}, notes)
    frame = pd.concat([r.frame for r in results], ignore_index=True)
    rows = {k: v for r in results for k, v in r.rows.items()}
    return ReadResult(frame, concat_quarantine(r.quarantine for r in results), rows,
                      notes + [n for r in results for n in r.notes])
