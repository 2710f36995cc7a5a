"""Settings: every LLMREC_* variable is parsed and validated in one place, and only there."""

import re
from pathlib import Path

import pytest

from llmrec_platform.settings import Settings, SettingsError

PACKAGE = Path(__file__).resolve().parent.parent / "llmrec_platform"


def test_defaults_when_nothing_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings == Settings(home=tmp_path / ".llmrec")
    assert (settings.dataset, settings.protocol, settings.device) == ("ml-100k", "recbole", "auto")
    assert (settings.retrain_cron, settings.timezone) == ("0 2 * * *", "UTC")
    assert (settings.champion_tolerance, settings.events_batch) == (0.02, 10_000)
    assert settings.paths.warehouse == tmp_path / ".llmrec" / "warehouse.duckdb"


def test_every_variable_is_read(tmp_path):
    settings = Settings.from_env({
        "LLMREC_HOME": str(tmp_path / "home"), "LLMREC_DATASET": "ml-1m", "LLMREC_PROTOCOL": "temporal",
        "LLMREC_DEVICE": "cuda:1", "LLMREC_RETRAIN_CRON": "30 3 * * 1-5", "LLMREC_TIMEZONE": "Europe/Berlin",
        "LLMREC_CHAMPION_TOLERANCE": "0.05", "LLMREC_EVENTS_BATCH": "500", "LLMREC_NUM_THREADS": "4",
        "LLMREC_FIT_CACHE": "off",
    })
    assert settings == Settings(home=tmp_path / "home", dataset="ml-1m", protocol="temporal", device="cuda:1",
                                retrain_cron="30 3 * * 1-5", timezone="Europe/Berlin", champion_tolerance=0.05,
                                events_batch=500, num_threads=4, fit_cache=False)


def test_empty_values_mean_the_default():
    settings = Settings.from_env({"LLMREC_DEVICE": " ", "LLMREC_EVENTS_BATCH": "", "LLMREC_TIMEZONE": ""})
    assert (settings.device, settings.events_batch, settings.timezone) == ("auto", 10_000, "UTC")


def test_a_relative_home_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"LLMREC_HOME": "state"}).home == tmp_path / "state"


@pytest.mark.parametrize("env, message", [
    ({"LLMREC_TIMEZONE": "Mars/Olympus"}, "LLMREC_TIMEZONE='Mars/Olympus' is not an IANA time zone"),
    ({"LLMREC_RETRAIN_CRON": "every night"}, "LLMREC_RETRAIN_CRON='every night': expected a 5-field cron"),
    ({"LLMREC_CHAMPION_TOLERANCE": "-1"}, "LLMREC_CHAMPION_TOLERANCE='-1': must be >= 0.0"),
    ({"LLMREC_CHAMPION_TOLERANCE": "nan"}, "LLMREC_CHAMPION_TOLERANCE='nan': must be >= 0.0"),
    ({"LLMREC_CHAMPION_TOLERANCE": "small"}, "LLMREC_CHAMPION_TOLERANCE='small': expected a number"),
    ({"LLMREC_EVENTS_BATCH": "0"}, "LLMREC_EVENTS_BATCH='0': must be >= 1"),
    ({"LLMREC_EVENTS_BATCH": "1.5"}, "LLMREC_EVENTS_BATCH='1.5': expected a whole number"),
    ({"LLMREC_PROTOCOL": "random"}, "LLMREC_PROTOCOL='random': use one of recbole, temporal"),
    ({"LLMREC_DEVICE": "tpu"}, "LLMREC_DEVICE='tpu': use auto, cpu, cuda or cuda:N"),
    ({"LLMREC_DEVICE": "cuda:x"}, "LLMREC_DEVICE='cuda:x'"),
    ({"LLMREC_NUM_THREADS": "0"}, "LLMREC_NUM_THREADS='0': must be >= 1"),
    ({"LLMREC_FIT_CACHE": "maybe"}, "LLMREC_FIT_CACHE='maybe': use 1 (on) or 0 (off)"),
    ({"LLMREC_DUCKDB_MEMORY_LIMIT": "lots"}, "LLMREC_DUCKDB_MEMORY_LIMIT='lots': expected a positive size"),
    ({"LLMREC_DUCKDB_MEMORY_LIMIT": "0GB"}, "LLMREC_DUCKDB_MEMORY_LIMIT='0GB': expected a positive size"),
])
def test_bad_settings_fail_with_the_variable_name(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_only_settings_reads_the_environment_and_nothing_writes_it():
    readers, writers = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"os\.(putenv|unsetenv)|os\.environ(\[[^]]+\]\s*=|\.(setdefault|update|pop)\b)", line):
                writers.append(f"{name}:{number}: {line.strip()}")
            elif re.search(r"os\.environ|os\.getenv", line) and name != "settings.py":
                readers.append(f"{name}:{number}: {line.strip()}")
    assert writers == []
    # The two exceptions: the CLI hands its environment (plus DAGSTER_HOME) to the processes it starts, and the
    # kernel pins must be in the environment before numpy and torch load, so the package's import sets them.
    # (settings.export_metrics_dir, the server's multiprocess-metrics folder for its workers, writes through a
    # parameter too, inside settings.py.)
    # (kernels.py also compares `environ is os.environ`, to warn only about this process's own libraries.)
    assert sorted(r.split(": ", 1)[1] for r in readers) == sorted([
        'return {**os.environ, "DAGSTER_HOME": str(paths.dagster_home)}',
        "def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:",
        "if late and environ is os.environ and any(environ.get(k) != v for k, v in AVX2_PINS.items()):"])


def test_the_long_term_refresh_mode_is_a_named_choice():
    assert Settings.from_env({}).long_term_refresh == "background"
    assert Settings.from_env({"LLMREC_LONG_TERM_REFRESH": "Request"}).long_term_refresh == "request"
    with pytest.raises(SettingsError, match="LLMREC_LONG_TERM_REFRESH='nightly': use request, background"):
        Settings.from_env({"LLMREC_LONG_TERM_REFRESH": "nightly"})


def test_the_duckdb_memory_limit_reaches_every_data_path_session():
    from llmrec_platform.data import duck

    assert Settings.from_env({}).duckdb_memory_limit == "4GB"
    limit = Settings.from_env({"LLMREC_DUCKDB_MEMORY_LIMIT": " 512MB "}).duckdb_memory_limit
    try:
        duck.set_memory_limit(limit)
        with duck.session() as conn:
            assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "488.2 MiB"  # 512e6 B
    finally:
        duck.set_memory_limit(duck.DEFAULT_MEMORY_LIMIT)
    with duck.session() as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "3.7 GiB"  # 4e9 B
