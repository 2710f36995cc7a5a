"""Operating settings read from the environment (no Dagster): schedules, time zone, promotion gate.

| variable | default | meaning |
|---|---|---|
| LLMREC_RETRAIN_CRON | `0 2 * * *` | cron of the nightly retrain schedule |
| LLMREC_TIMEZONE | `UTC` | IANA time zone the retrain cron is read in |
| LLMREC_CHAMPION_TOLERANCE | `0.02` | how far (validation NDCG@10) a champion may fall below the last published one |
| LLMREC_EVENTS_BATCH | `10000` | most events one refresh run takes from the event log |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RETRAIN_CRON_ENV = "LLMREC_RETRAIN_CRON"
TIMEZONE_ENV = "LLMREC_TIMEZONE"
TOLERANCE_ENV = "LLMREC_CHAMPION_TOLERANCE"
EVENTS_BATCH_ENV = "LLMREC_EVENTS_BATCH"

DEFAULT_RETRAIN_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_TOLERANCE = 0.02
DEFAULT_EVENTS_BATCH = 10_000


class SettingsError(ValueError):
    """An operating setting is malformed; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class OperatingSettings:
    retrain_cron: str = DEFAULT_RETRAIN_CRON
    timezone: str = DEFAULT_TIMEZONE
    champion_tolerance: float = DEFAULT_TOLERANCE
    events_batch: int = DEFAULT_EVENTS_BATCH

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatingSettings:
        env = os.environ if environ is None else environ
        cron = env.get(RETRAIN_CRON_ENV, "").strip() or DEFAULT_RETRAIN_CRON
        if len(cron.split()) != 5:
            raise SettingsError(f"{RETRAIN_CRON_ENV}={cron!r}: expected a 5-field cron string such as {DEFAULT_RETRAIN_CRON!r}")
        timezone = env.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"{TIMEZONE_ENV}={timezone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from exc
        return cls(
            retrain_cron=cron,
            timezone=timezone,
            champion_tolerance=_number(env, TOLERANCE_ENV, DEFAULT_TOLERANCE, float, minimum=0.0),
            events_batch=_number(env, EVENTS_BATCH_ENV, DEFAULT_EVENTS_BATCH, int, minimum=1),
        )


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: expected a {kind.__name__}") from exc
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be >= {minimum}")
    return value
