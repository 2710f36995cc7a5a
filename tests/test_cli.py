"""The `llmrec` command: clear one-line errors for bad input, no traceback."""

import subprocess
import sys

import pytest


def run_cli(*args, env_home, **env):
    return subprocess.run([sys.executable, "-m", "llmrec_platform.cli", *args], capture_output=True, text=True,
                          env={"LLMREC_HOME": str(env_home), "PATH": "/usr/bin:/bin", **env}, timeout=120)


@pytest.mark.parametrize("dataset, message", [
    ("/definitely/not/here", "is neither a packaged dataset"),
    ("ml-20m", "is neither a packaged dataset"),
])
def test_bad_dataset_is_one_clear_line(tmp_path, dataset, message):
    result = run_cli("demo", "--dataset", dataset, env_home=tmp_path / "home")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_folder_is_one_clear_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t3\t4\n")
    result = run_cli("demo", "--dataset", str(folder), env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "missing file" in result.stderr and "u.item" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_of_range_cold_items_is_rejected(tmp_path):
    result = run_cli("demo", "--cold-items", "0.9", env_home=tmp_path / "home")
    assert result.returncode == 2 and "--cold-items" in result.stderr


def test_a_bad_setting_is_one_clear_line(tmp_path):
    result = run_cli("demo", env_home=tmp_path / "home", LLMREC_TIMEZONE="Mars/Olympus")
    assert result.returncode == 2
    assert "LLMREC_TIMEZONE='Mars/Olympus' is not an IANA time zone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
