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
import functools
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
import pyarrow as pa

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
    table: pa.Table  # the parsed rows, as read (Arrow: the row checks take them into DuckDB without a copy)
    quarantine: pd.DataFrame
    rows: dict[str, int] = field(default_factory=dict)  # data rows seen per file (loaded + quarantined)
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return list(self.rows)

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The rows as pandas, for the small parts (items, users, texts, landed files)."""
        table = self.table
        if ROW_FILE in table.column_names:  # dictionary-encoded (one value per file): plain strings
            table = table.set_column(table.column_names.index(ROW_FILE), ROW_FILE, table[ROW_FILE].cast(pa.string()))
        return table.to_pandas()


def empty_table(names: list[str] | None = None) -> pa.Table:
    """No rows; the given columns (text) plus `_file` and `_row`."""
    return pa.table({**{n: pa.array([], pa.string()) for n in names or []},
                     ROW_FILE: pa.array([], pa.string()), ROW_NUMBER: pa.array([], pa.int64())})


def _numbered(table: pa.Table, source: str, row_numbers: np.ndarray) -> pa.Table:
    """`table` with `_file` (dictionary-encoded: one string per file, not per row) and `_row`."""
    files = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([source]))
    return table.append_column(ROW_FILE, files).append_column(ROW_NUMBER, pa.array(row_numbers, pa.int64()))


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


_EMPTY_LINE = re.compile(rb"\n(?=\r?(\n|\Z))")


def _empty_lines(body: bytes) -> set[int]:
    """Numbers (1-based) of the lines with no content (CR LF line ends too), found without indexing every line."""
    empty = {1} if body[:1] == b"\n" or body[:2] == b"\r\n" or body == b"\r" else set()
    line, previous = 1, 0
    for match in _EMPTY_LINE.finditer(body):
        line += body.count(b"\n", previous, match.end())
        previous = match.end()
        empty.add(line)
    return empty


def _other_lines(skipped: np.ndarray, n_lines: int) -> np.ndarray:
    """The line numbers 1..n_lines in order, less the sorted `skipped` ones (vectorized, one int64 per line kept)."""
    skipped = skipped[(skipped >= 1) & (skipped <= n_lines)]
    kept = np.arange(1, n_lines - len(skipped) + 1, dtype=np.int64)  # the k-th kept line, 1-based
    # The k-th kept line comes after every skipped line s_j with fewer than k kept lines before it (s_j - j - 1).
    return kept + np.searchsorted(skipped - np.arange(len(skipped)) - 1, kept, side="left")


def _numbered_lines(data: bytes, numbers, chunk: int = 1 << 24) -> dict[int, bytes]:
    """The lines of `data` with these 1-based numbers (a CR before the LF dropped), found by counting line ends chunk
    by chunk: memory bounded by the chunk, not by the file."""
    wanted = sorted({int(n) for n in numbers if n >= 1})
    starts = {1: 0} if wanted and wanted[0] == 1 else {}
    seen, i = 0, 0  # line ends counted so far; next wanted line to place
    while i < len(wanted) and wanted[i] == 1:
        i += 1
    for offset in range(0, len(data), chunk):
        if i == len(wanted):
            break
        ends = np.flatnonzero(np.frombuffer(data, np.uint8, min(chunk, len(data) - offset), offset) == 10) + offset
        while i < len(wanted) and wanted[i] - 1 <= seen + len(ends):  # line n starts after the (n-1)-th line end
            starts[wanted[i]] = int(ends[wanted[i] - 2 - seen]) + 1
            i += 1
        seen += len(ends)
    lines = {}
    for number, start in starts.items():
        end = data.find(b"\n", start)
        line = data[start:] if end < 0 else data[start:end]
        lines[number] = line[:-1] if line.endswith(b"\r") else line
    return lines


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
    lines = functools.cache(lambda: _LineIndex(body))  # only the rewritten files below need every line's place
    if file_encoding != encoding and b"\xef\xbf\xbd" in body:  # U+FFFD: where the UTF-16 bytes were invalid
        blank.update((int(n), f"bytes not valid in {file_encoding}") for n in lines().non_empty
                     if b"\xef\xbf\xbd" in lines()[int(n)])
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
        blank.update((int(n), "a carriage return (\\r) inside the line") for n in lines().non_empty
                     if b"\r" in lines()[int(n)])
    pre_rejects = [(n, reason, _decode(lines()[n], encoding)) for n, reason in sorted(blank.items())]
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
            tmp.write(b"\n".join(b"" if n in blank else lines()[n] for n in range(1, len(lines()) + 1)))
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
    from llmrec_platform.data.duck import session  # duck imports this module

    try:
        with session() as conn:
            table = conn.sql(f"SELECT * FROM read_csv(?, {args})",
                             params=[str(read_path), *params.values()]).to_arrow_table()
            rejects = conn.execute(f"SELECT line, column_name, error_type, error_message, csv_line FROM {rejects_table} "
                                   "ORDER BY line").df()
    except duckdb.Error as exc:
        raise ReadError(f"{source}: cannot read as CSV ({str(exc).splitlines()[0]})") from exc
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    table = table.rename_columns([str(c).strip() for c in table.column_names])
    records = []
    rejected_lines = set()
    for number, reason, raw in pre_rejects:
        rejected_lines.add(number)
        records.append((number, "(row)", reason, raw))
    rejected_text = _numbered_lines(body, rejects["line"].dropna()) if len(rejects) else {}
    for r in rejects.itertuples(index=False):
        line = int(r.line) if pd.notna(r.line) else 0
        if line in rejected_lines:
            continue
        rejected_lines.add(line)
        raw = _decode(rejected_text[line], encoding) if line in rejected_text else str(r.csv_line)
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
    # Line numbers of the loaded rows: every line but the header, the empty ones and the rejected ones (DuckDB's
    # line numbers), in order; exact unless a quoted value spans lines (then they are record positions).
    has_header = bool(params.get("header"))
    skipped = _empty_lines(body)
    if has_header:
        skipped.add(min(set(range(1, len(skipped) + 2)) - skipped))  # the first non-empty line
    skipped |= rejected_lines
    row_numbers = _other_lines(np.array(sorted(skipped), dtype="int64"), body.count(b"\n") + 1)
    if len(row_numbers) != table.num_rows:
        row_numbers = np.arange(1, table.num_rows + 1, dtype="int64") + (1 if has_header else 0)
        notes.append(f"{source}: a quoted value spans lines; row numbers are record positions")
    return ReadResult(_numbered(table, source, row_numbers), quarantine, {source: table.num_rows + len(records)}, notes)


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
    numbers = np.asarray(numbers, dtype="int64")
    quarantine = (quarantine_records(source, [r[0] for r in records], [r[1] for r in records],
                                     [r[2] for r in records], [r[3] for r in records])
                  if records else empty_quarantine())
    result = ReadResult(_numbered(frame_table(frame), source, numbers), quarantine, {source: len(rows) + len(records)},
                        notes)
    # The parsed values as they are (a column may mix lists and text, which Arrow holds only as text).
    result.__dict__["frame"] = frame.assign(**{ROW_FILE: source, ROW_NUMBER: numbers})
    return result


def read_parquet(path: Path) -> ReadResult:
    """Parquet (typed columns kept); `_row` is the 1-based row within the file."""
    source = str(path)
    if path.stat().st_size == 0:
        raise ReadError(f"{source}: the file is empty")
    from llmrec_platform.data.duck import session  # duck imports this module

    try:
        with session() as conn:
            table = conn.sql("SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row "
                             "FROM read_parquet(?, file_row_number = true)", params=[source]).to_arrow_table()
    except duckdb.Error as exc:
        raise ReadError(f"{source}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc
    numbers = table[ROW_NUMBER].to_numpy().astype("int64")
    return ReadResult(_numbered(table.drop_columns([ROW_NUMBER]), source, numbers), empty_quarantine(),
                      {source: table.num_rows}, [])


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
        return ReadResult(empty_table(), empty_quarantine(), {}, notes)
    rows = {k: v for r in results for k, v in r.rows.items()}
    result = ReadResult(concat_tables([r.table for r in results]), concat_quarantine(r.quarantine for r in results),
                        rows, notes + [n for r in results for n in r.notes])
    if any("frame" in r.__dict__ for r in results):  # JSON Lines' values as parsed (see read_jsonl)
        result.__dict__["frame"] = pd.concat([r.frame for r in results], ignore_index=True)
    return result


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    """Tables of several files, columns by name (missing ones null); a column whose types differ between
    files becomes text."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    kinds: dict[str, set] = {}
    for table in tables:
        for f in table.schema:
            kinds.setdefault(f.name, set()).add(f.type)
    mixed = {n for n, k in kinds.items() if len(k - {pa.null()}) > 1}
    uniform = []
    for table in tables:
        for i, f in enumerate(table.schema):
            if f.name in mixed:
                table = table.set_column(i, f.name, table[f.name].cast(pa.string()))
        uniform.append(table)
    return pa.concat_tables(uniform, promote_options="default")


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """A pandas frame as Arrow; a column of values of mixed types (JSON Lines) becomes text, missing values null."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[str(name)] = pa.array([None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                                           else str(v) for v in frame[name]], type=pa.string())
    return pa.table(columns)
