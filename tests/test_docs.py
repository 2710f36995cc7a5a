"""The manual builds (`mkdocs build --strict`, as `make docs` and CI do) and the README stays a front door."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250
# [text](target) and [text]: target, outside code spans; images too.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def relative_links(markdown: str) -> list[str]:
    """Link targets that point into the repository (no scheme, no bare #anchor), without their #anchor."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    targets = [first or second for first, second in LINK.findall(prose)]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def settings_hook():
    """The MkDocs hook module that completes the settings page (mkdocs.yml `hooks:`)."""
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "docs_hooks" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return out


def test_the_manual_builds_strictly(site):
    assert (site / "index.html").exists() and (site / "own-data.html").exists()
    assert (site / "security" / "erasure.html").exists()


def test_the_settings_page_names_every_variable_of_settings_py(site):
    hook = settings_hook()
    variables = {name for row in hook.docstring_rows() for name in hook.VARIABLE.findall(row)}
    assert "LLMREC_HOME" in variables
    page = (site / "settings.html").read_text(encoding="utf-8")
    assert sorted(v for v in variables if v not in page) == []


def test_the_readme_is_at_most_250_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= MAX_README_LINES


def test_every_relative_link_in_the_readme_points_at_a_file():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert "docs/own-data.md" in links  # the parser finds the README's links at all
    missing = sorted({link for link in links if not (ROOT / link).exists()})
    assert missing == [], f"README.md links to files that do not exist: {missing}"


def test_the_link_parser_skips_urls_anchors_and_code():
    text = "[a](docs/x.md#y) [b](https://e.org) [c](#top) `[d](nope.md)`\n```\n[e](no.md)\n```\n[f]: docs/z.md\n"
    assert relative_links(text) == ["docs/x.md", "docs/z.md"]


def test_a_variable_missing_from_the_settings_page_is_appended_from_settings_py():
    missing_rows = settings_hook().missing_rows
    rows = ["| LLMREC_HOME | `.llmrec` | home |", "| LLMREC_A, LLMREC_B | unset | pair |"]
    assert missing_rows("`LLMREC_HOME` and LLMREC_A", rows) == [rows[1]]
    assert missing_rows("LLMREC_HOME LLMREC_A LLMREC_B", rows) == []
