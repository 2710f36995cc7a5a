"""The README's "Run it on your own data" section, followed literally on a small CSV.

The test reads the section's CSV headers, its YAML block and its command from README.md itself, writes the two
CSV files the prose describes, and runs the command in a subprocess with an isolated LLMREC_HOME: a newcomer
who follows the README gets a finished run and the metrics table.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import GENRES, write_ml100k_folder

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Run it on your own data"


def own_data_section(readme: str = README.read_text(encoding="utf-8")) -> str:
    start = readme.index(HEADING)
    end = readme.find("\n## ", start + len(HEADING))
    return readme[start:end if end != -1 else None]


def fenced_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def csv_headers(section: str) -> dict[str, list[str]]:
    """`ratings.csv` (`a,b,c`) in the prose -> {"ratings.csv": ["a", "b", "c"]}."""
    return {name: header.split(",") for name, header in re.findall(r"`([\w.-]+\.csv)` \(`([\w,]+)`", section)}


def write_csvs(folder: Path, headers: dict[str, list[str]]) -> int:
    """The tiny two-taste-group dataset of tests/conftest.py, as the README's two CSV files; returns the rating count."""
    grouplens = write_ml100k_folder(folder / "grouplens")
    rating_values = [dict(zip(("user_id", "item_id", "rating", "timestamp"), row, strict=True)) for row in
                     (line.split("\t") for line in (grouplens / "u.data").read_text().splitlines())]
    item_values = []
    for line in (grouplens / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        genres = "|".join(genre for genre, flag in zip(GENRES, fields[5:], strict=True) if flag == "1")
        item_values.append({"item_id": fields[0], "title": fields[1], "genres": genres})
    rows = {"ratings.csv": rating_values, "items.csv": item_values}
    assert set(headers) == set(rows), f"the README names the files {sorted(headers)}"
    for name, header in headers.items():
        lines = [",".join(header)] + [",".join(_csv_field(row[column]) for column in header) for row in rows[name]]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(rating_values)


def _csv_field(value: str) -> str:
    return f'"{value}"' if "," in value else value


def test_the_section_has_one_yaml_block_one_command_and_the_csv_headers():
    section = own_data_section()
    [config_text] = fenced_blocks(section, "yaml")
    [command] = fenced_blocks(section, "bash")
    config = yaml.safe_load(config_text)
    headers = csv_headers(section)
    assert config["interactions"]["path"] in headers and config["items"]["path"] in headers
    mapped = {config["interactions"][key] for key in ("user", "item", "rating", "timestamp") if key in config["interactions"]}
    assert mapped <= set(headers[config["interactions"]["path"]])
    assert len(config_text.strip().splitlines()) <= 10  # "ten lines of YAML"
    assert command.strip().startswith("llmrec run ") and "\n" not in command.strip()


@pytest.mark.slow
def test_the_readme_own_data_snippet_runs_on_a_small_csv(tmp_path):
    section = own_data_section()
    [config_text] = fenced_blocks(section, "yaml")
    [command] = fenced_blocks(section, "bash")
    folder = tmp_path / "my-data"
    folder.mkdir()
    n_ratings = write_csvs(folder, csv_headers(section))
    assert 300 <= n_ratings <= 500  # "a few hundred ratings"
    config_name = re.search(r"--dataset (\S+)", command)[1]
    (folder / config_name).write_text(config_text, encoding="utf-8")

    home = tmp_path / "home"
    venv_bin = Path(sys.executable).parent  # what `source .venv/bin/activate` puts first on PATH
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}  # the run sets its own
    env.update(PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", LLMREC_HOME=str(home), LLMREC_DEVICE="cpu")
    result = subprocess.run(shlex.split(command), cwd=folder, env=env, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.startswith(f"llmrec run: {config_name}, ")
    assert re.search(r"^\| ranker \| ndcg@10 \|", out, re.MULTILINE), out  # the metrics table's header
    assert re.search(r"^\| ease \| 0\.\d{4} \|", out, re.MULTILINE), out
    assert re.search(r"^Champion: \w+ — best validation NDCG@10, 0\.\d{4}", out, re.MULTILINE), out
    assert (home / "warehouse.duckdb").exists()
