"""Readable texts for the language model: items ("Title (Year). Genres: ...", enriched from OMDb) and users.

Every text is normalised (`normalize_text`: ftfy repairs mojibake such as "ExupÃ©ry", even twice over, and
HTML entities such as `&amp;`; e-mail addresses, URLs, phone numbers and long digit runs are scrubbed;
whitespace is collapsed) before it reaches an encoder or the warehouse.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sqlite3
import unicodedata
from pathlib import Path

import ftfy
import pandas as pd

from llmrec_platform.data.privacy import scrub_pii
from llmrec_platform.encoders.descriptions import ItemFacts

_ARTICLE_SUFFIX = re.compile(r"^(?P<rest>.*),\s*(?P<article>the|a|an|les|la|le|il|el|das|der|die)$", re.IGNORECASE)
_PARENS = re.compile(r"\s*\([^)]*\)")
OMDB_FIELDS = ["director", "cast", "writer", "language", "country"]
MAX_CAST = 4


_SPACES = re.compile(r"\s+")


def normalize_text(value) -> str:
    """Mojibake and HTML entities repaired (ftfy), personal data scrubbed (`scrub_pii`), whitespace
    collapsed; None / NA give ""."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value)
    if not text:
        return ""
    if not text.isascii() or "&" in text:
        text = ftfy.fix_text(text, unescape_html=True)
    return scrub_pii(_SPACES.sub(" ", text).strip())


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def normalize_title(title: str) -> str:
    """Lower-case, accent-free, 'Godfather, The' -> 'the godfather', alternate titles in brackets dropped."""
    title = _PARENS.sub("", title).strip()
    match = _ARTICLE_SUFFIX.match(title)
    if match:
        title = f"{match['article']} {match['rest']}"
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def omdb_path() -> Path | None:
    spec = importlib.util.find_spec("bokeh_sampledata")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "_data" / "movies.db"
    return path if path.exists() else None


def load_omdb(path: Path | None = None) -> pd.DataFrame:
    """OMDb credits keyed by (normalized title, year); empty when bokeh-sampledata is not installed."""
    path = path or omdb_path()
    if path is None:
        return pd.DataFrame(columns=["title_key", "year", *OMDB_FIELDS])
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        frame = pd.read_sql_query(
            'SELECT "Title", "Year", "Director", "Cast", "Writer", "Language", "Country", "imdbVotes" FROM omdb', conn
        )
    frame.columns = ["title", "year", "director", "cast", "writer", "language", "country", "votes"]
    frame["title_key"] = frame["title"].astype(str).map(normalize_title)
    frame["year"] = pd.to_numeric(frame["year"], errors="coerce").astype("Int64")
    # When two OMDb rows share a key, keep the better-known film.
    frame = frame.sort_values("votes", ascending=False, na_position="last").drop_duplicates(["title_key", "year"])
    return frame[["title_key", "year", *OMDB_FIELDS]].reset_index(drop=True)


def with_credits(items: pd.DataFrame, omdb: pd.DataFrame | None = None) -> pd.DataFrame:
    """`items` with the OMDb credit columns (OMDB_FIELDS, NA where unmatched), joined on normalized title and year
    (`omdb` None: `load_omdb()`). A config dataset brings its own texts: no film credits are joined."""
    if "text" in items.columns:
        omdb = pd.DataFrame({"title_key": pd.Series(dtype="object"), "year": pd.Series(dtype="Int64"),
                             **{f: pd.Series(dtype="object") for f in OMDB_FIELDS}})
    omdb = load_omdb() if omdb is None else omdb
    keyed = items.assign(title_key=items["title"].astype(str).map(normalize_title))
    return keyed.merge(omdb, on=["title_key", "year"], how="left", validate="many_to_one")


def build_item_texts(items: pd.DataFrame, omdb: pd.DataFrame | None = None) -> tuple[pd.DataFrame, float]:
    """Return (item_id, text, text_hash, omdb_matched) and the OMDb match rate."""
    merged = with_credits(items, omdb)
    matched = merged["director"].notna() | merged["cast"].notna()
    own = merged["text"] if "text" in merged.columns else pd.Series("", index=merged.index)
    texts = [normalize_text(_own_item_text(row, t) if normalize_text(t) else _item_text(row))
             for row, t in zip(merged.itertuples(index=False), own, strict=True)]
    frame = pd.DataFrame({
        "item_id": merged["item_id"].astype(str),
        "text": texts,
        "text_hash": [text_hash(t) for t in texts],
        "omdb_matched": matched.to_numpy(),
    })
    return frame, float(matched.mean()) if len(frame) else 0.0


def item_facts(items: pd.DataFrame, omdb: pd.DataFrame | None = None) -> list[ItemFacts]:
    """What a description model may use about each item of a raw items frame (item_id, title, year, genres[, text]):
    the catalogue's fields and the credits `with_credits` joins."""
    own_text = "text" in items.columns
    facts = []
    for row in with_credits(items, omdb).itertuples(index=False):
        genres = tuple(g for g in (row.genres if isinstance(row.genres, list | tuple) else list(row.genres))
                       if g and g != "unknown")
        facts.append(ItemFacts(
            item_id=str(row.item_id), title=normalize_text(row.title), year=None if pd.isna(row.year) else int(row.year),
            genres=genres, director=_clean(row.director), cast=_top_cast(row.cast), writer=_clean(row.writer),
            about=normalize_text(_clean(row.text)) if own_text else ""))
    return facts


def with_descriptions(item_texts: pd.DataFrame, descriptions: pd.DataFrame) -> pd.DataFrame:
    """`item_texts` (item_id, text, text_hash, ...) with each kept description (`encoders.descriptions`) appended to
    its item's text, and the hash recomputed (so the embedding cache encodes the new texts)."""
    kept = descriptions.set_index("item_id")["description"]
    extra = item_texts["item_id"].astype(str).map(kept).fillna("")
    texts = [f"{t} {d}" if d else t for t, d in zip(item_texts["text"], extra, strict=True)]
    return item_texts.assign(text=texts, text_hash=[text_hash(t) for t in texts])


def _clean(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _top_cast(value) -> str:
    """The first MAX_CAST names of an OMDb cast list."""
    return ", ".join([c.strip() for c in _clean(value).split(",") if c.strip()][:MAX_CAST])


def _own_item_text(row, text: str) -> str:
    """A config dataset's item text (its `text` fields joined) plus its categories."""
    text = normalize_text(text)
    genres = [g for g in (row.genres if isinstance(row.genres, list | tuple) else list(row.genres)) if g]
    if genres:
        text = f"{text.rstrip('.')}. Categories: {', '.join(genres)}."
    return text


def _item_text(row) -> str:
    year = f" ({int(row.year)})" if pd.notna(row.year) else ""
    parts = [f"{row.title}{year}."]
    genres = [g for g in (row.genres if isinstance(row.genres, list | tuple) else list(row.genres)) if g != "unknown"]
    if genres:
        parts.append(f"Genres: {', '.join(genres)}.")
    director, writer, cast = _clean(row.director), _clean(row.writer), _top_cast(row.cast)
    if director:
        parts.append(f"Directed by {director}.")
    if cast:
        parts.append(f"Starring {cast}.")
    if writer:
        parts.append(f"Written by {writer}.")
    language, country = _clean(row.language), _clean(row.country)
    if language or country:
        parts.append(f"{language or 'Unknown language'}; {country or 'unknown country'}.")
    return " ".join(parts)


def build_user_texts(users: pd.DataFrame) -> pd.DataFrame:
    """Return (user_id, text, text_hash): a readable profile from demographics."""
    own = users["text"] if "text" in users.columns else pd.Series("", index=users.index)
    texts = [normalize_text(t) or normalize_text(_user_text(row))
             for row, t in zip(users.itertuples(index=False), own, strict=True)]
    return pd.DataFrame({
        "user_id": users["user_id"].astype(str).to_numpy(),
        "text": texts,
        "text_hash": [text_hash(t) for t in texts],
    })


def _user_text(row) -> str:
    gender = {"M": "man", "F": "woman"}.get(_clean(row.gender).upper(), "person")
    age_group = _clean(getattr(row, "age_group", ""))
    age = f"aged {age_group}" if age_group and age_group != "unknown" else "of unknown age"
    occupation = _clean(row.occupation)
    occupation = occupation if occupation and occupation not in ("none", "unknown") else "no stated occupation"
    return f"A {gender} {age}, working as {occupation}, who enjoys watching movies."
