"""Personal data on the way in (no Dagster): user pseudonyms and the PII scrub of every text.

Pseudonymization: with it on (a dataset config's `privacy: {pseudonymize: true}` or LLMREC_PSEUDONYMIZE),
every user id is replaced by `u` + the first 24 hex digits of HMAC-SHA256(key, id) when the dataset
resource loads the data (`datasets.load_pseudonymized`), before any asset sees
it, so the warehouse, MLflow, the reports, the recommendations and the serving bundle only ever hold
pseudonyms. The other ways in use the same key, so one user has one pseudonym everywhere: a file dropped
into the landing folder is pseudonymized before its rows reach the warehouse (`landing.ingest_landed_file`;
the processed file is then deleted rather than kept), and the serving API maps the raw id of every request
(events, histories, recommendations, queries) before the event log, the impression log or the live
histories see it. Clients send raw ids; a pseudonym sent as an id would be hashed again.
The key is a secret (LLMREC_PSEUDONYM_KEY, read by `settings`): the same key gives the same pseudonym in
every run (histories join across loads), another key gives unrelated ones, and without the key a
pseudonym cannot be recomputed from a guessed id. Quarantine rows of the parts that carry user ids keep
their file, row, field and reason, but not their raw text.

The scrub: e-mail addresses, URLs, phone numbers and long digit runs are replaced by a tag in every text
before an encoder or the warehouse sees it (`text.normalize_text` calls `scrub_pii`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

PSEUDONYM_PREFIX = "u"
PSEUDONYM_HEX = 24  # 96 bits: no collision in practice for any realistic number of users
MIN_KEY_CHARS = 16
WITHHELD = "[withheld: pseudonymization is on; the source file and row locate it]"
# Quarantine parts whose raw rows carry user ids.
USER_PARTS = ("ratings", "users", "user_texts")
KEY_VARIABLE = "LLMREC_PSEUDONYM_KEY"  # settings.PSEUDONYM_KEY_ENV (this module never reads the environment)


class PrivacyError(ValueError):
    """Pseudonymization is asked for but cannot be done (no key, or a key too short)."""


def missing_key_message(where: str, variable: str) -> str:
    return (f"pseudonymization is on ({where}) but {variable} is not set: the run refuses to start rather than "
            f"write raw user ids. Set {variable} to a secret of at least {MIN_KEY_CHARS} characters (keep it: "
            "the same key gives the same pseudonyms next time), or turn pseudonymization off.")


def pseudonymizer_for(on: bool, key: str | None, where: str, variable: str = KEY_VARIABLE) -> Pseudonymizer | None:
    """The Pseudonymizer when pseudonymization is on (None when off); on without a key refuses (PrivacyError)."""
    if not on:
        return None
    if not key:
        raise PrivacyError(missing_key_message(where, variable))
    return Pseudonymizer(key)


@dataclass(frozen=True)
class Pseudonymizer:
    """Keyed, stable user pseudonyms: HMAC-SHA256(key, id), truncated hex."""

    key: str = dataclasses.field(repr=False)

    def __post_init__(self):
        if len(self.key) < MIN_KEY_CHARS:
            raise PrivacyError(f"the pseudonym key has {len(self.key)} characters; use at least {MIN_KEY_CHARS}")

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self.key.encode("utf-8"), str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]

    def series(self, ids: pd.Series) -> pd.Series:
        """`ids` pseudonymized; each distinct id is hashed once (millions of rows, far fewer users)."""
        codes, uniques = pd.factorize(ids.astype(str), sort=False)
        mapped = pd.Index([self(u) for u in uniques], dtype=object)
        return pd.Series(mapped.take(codes), index=ids.index, dtype=object)


def pseudonymize_dataset(dataset, pseudonymizer: Pseudonymizer):
    """A copy of a `specs.Dataset` whose user ids are pseudonyms and whose quarantine rows of the
    user-bearing parts no longer hold their raw text (every other column kept)."""
    table = dataset.ratings_table
    pseudonyms = pseudonymizer.series(table["user_id"].to_pandas())
    ratings = table.set_column(table.column_names.index("user_id"), "user_id", pa.array(pseudonyms, pa.string()))
    users = dataset.users
    if len(users):
        users = users.assign(user_id=pseudonymizer.series(users["user_id"]))
    quarantine = dataset.quarantine
    if len(quarantine):
        carries_ids = quarantine["part"].isin(USER_PARTS)
        quarantine = quarantine.assign(raw=quarantine["raw"].where(~carries_ids, WITHHELD))
    return dataclasses.replace(dataset, ratings_table=ratings, users=users, quarantine=quarantine,
                               notes=[*dataset.notes, "user ids pseudonymized (HMAC-SHA256)"])


# --- the PII scrub ---------------------------------------------------------------------------------------

# E-mail addresses, URLs, phone numbers (9+ digits with the usual separators) and other long digit runs
# (7+: card, account, id numbers). Years and short numbers stay.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)  # not a final period
_PHONE = re.compile(r"(?<![\w+(])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?)?\d{2,5}(?:[ ./-]\d{2,8}){1,4}(?!\w)")
_DIGITS = re.compile(r"\d{7,}")
_YEAR = re.compile(r"(?:1[89]|20)\d\d")


def _phone_like(match: str) -> bool:
    """9+ digits, and not a run of years such as "1995 1996 1997"."""
    groups = re.findall(r"\d+", match)
    return sum(map(len, groups)) >= 9 and not all(_YEAR.fullmatch(g) for g in groups)


def scrub_pii(text: str) -> str:
    """`text` with e-mail addresses, URLs, phone numbers and long digit runs replaced by a tag."""
    if not any(ch.isdigit() or ch in "@/." for ch in text):
        return text
    text = _EMAIL.sub("[email]", text)
    text = _URL.sub("[url]", text)
    text = _PHONE.sub(lambda m: "[phone]" if _phone_like(m[0]) else m[0], text)
    return _DIGITS.sub("[number]", text)
