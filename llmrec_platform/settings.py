"""Every LLMREC_* environment variable, read in one place (no Dagster).

`Settings.from_env()` is the package's only reader of the environment: the CLI and the code location
call it once and hand the values down (paths into the resources, the device into `DeviceResource`, the
champion tolerance into `ExperimentResource`, the events batch into `EventLogResource`).

| variable | default | meaning |
|---|---|---|
| LLMREC_HOME | `.llmrec` (in the working directory) | folder all state lives under (warehouse, MLflow, ..., Dagster) |
| LLMREC_DATASET | `ml-100k` | dataset of the code location: `ml-100k`, `ml-1m` or a GroupLens folder path |
| LLMREC_PROTOCOL | `recbole` | split protocol of the code location: `recbole` (random 8:1:1 per user) or `temporal` |
| LLMREC_DEVICE | `auto` | where the language model runs when no device is configured: `auto`, `cpu`, `cuda` or `cuda:N` |
| LLMREC_RETRAIN_CRON | `0 2 * * *` | cron of the nightly retrain schedule |
| LLMREC_TIMEZONE | `UTC` | IANA time zone the retrain cron is read in |
| LLMREC_CHAMPION_TOLERANCE | `0.02` | how far (validation NDCG@10) a champion may fall below the last published one |
| LLMREC_EVENTS_BATCH | `10000` | most events one refresh run takes from the event log |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmrec_platform.data.split import PROTOCOLS
from llmrec_platform.paths import Paths

HOME_ENV = "LLMREC_HOME"
DATASET_ENV = "LLMREC_DATASET"
PROTOCOL_ENV = "LLMREC_PROTOCOL"
DEVICE_ENV = "LLMREC_DEVICE"
RETRAIN_CRON_ENV = "LLMREC_RETRAIN_CRON"
TIMEZONE_ENV = "LLMREC_TIMEZONE"
TOLERANCE_ENV = "LLMREC_CHAMPION_TOLERANCE"
EVENTS_BATCH_ENV = "LLMREC_EVENTS_BATCH"

DEFAULT_HOME = ".llmrec"
DEFAULT_DATASET = "ml-100k"
DEFAULT_PROTOCOL = "recbole"
DEFAULT_DEVICE = "auto"
DEFAULT_RETRAIN_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_TOLERANCE = 0.02
DEFAULT_EVENTS_BATCH = 10_000
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class Settings:
    home: Path = Path(DEFAULT_HOME)
    dataset: str = DEFAULT_DATASET
    protocol: str = DEFAULT_PROTOCOL
    device: str = DEFAULT_DEVICE
    retrain_cron: str = DEFAULT_RETRAIN_CRON
    timezone: str = DEFAULT_TIMEZONE
    champion_tolerance: float = DEFAULT_TOLERANCE
    events_batch: int = DEFAULT_EVENTS_BATCH

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the variables (`environ` defaults to the process environment)."""
        env = os.environ if environ is None else environ
        protocol = _text(env, PROTOCOL_ENV, DEFAULT_PROTOCOL)
        if protocol not in PROTOCOLS:
            raise SettingsError(f"{PROTOCOL_ENV}={protocol!r}: use one of {', '.join(PROTOCOLS)}")
        device = _text(env, DEVICE_ENV, DEFAULT_DEVICE)
        if not _DEVICE.fullmatch(device):
            raise SettingsError(f"{DEVICE_ENV}={device!r}: use auto, cpu, cuda or cuda:N")
        cron = _text(env, RETRAIN_CRON_ENV, DEFAULT_RETRAIN_CRON)
        if len(cron.split()) != 5:
            raise SettingsError(f"{RETRAIN_CRON_ENV}={cron!r}: expected a 5-field cron string such as {DEFAULT_RETRAIN_CRON!r}")
        timezone = _text(env, TIMEZONE_ENV, DEFAULT_TIMEZONE)
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"{TIMEZONE_ENV}={timezone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from exc
        return cls(
            home=Path(_text(env, HOME_ENV, DEFAULT_HOME)).expanduser().resolve(),
            dataset=_text(env, DATASET_ENV, DEFAULT_DATASET),
            protocol=protocol,
            device=device,
            retrain_cron=cron,
            timezone=timezone,
            champion_tolerance=_number(env, TOLERANCE_ENV, DEFAULT_TOLERANCE, float, minimum=0.0),
            events_batch=_number(env, EVENTS_BATCH_ENV, DEFAULT_EVENTS_BATCH, int, minimum=1),
        )


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """The stripped value; unset and empty both mean the default."""
    return env.get(name, "").strip() or default


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: expected {'a whole number' if kind is int else 'a number'}") from exc
    if not value >= minimum:  # also rejects nan
        raise SettingsError(f"{name}={raw!r}: must be >= {minimum}")
    return value
