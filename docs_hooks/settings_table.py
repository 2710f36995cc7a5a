"""MkDocs hook: the settings page lists every LLMREC_* variable of settings.py's docstring table.

docs/settings.md holds the long descriptions; a variable added to settings.py (its docstring table is the
rule) but not yet described there is appended from that table, so the page can never miss one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SETTINGS_PY = Path(__file__).resolve().parents[1] / "llmrec_platform" / "settings.py"
VARIABLE = re.compile(r"LLMREC_[A-Z0-9_]+")


def docstring_rows(source: Path = SETTINGS_PY) -> list[str]:
    """The table rows (`| LLMREC_X | default | meaning |`) of settings.py's module docstring."""
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    return [line for line in doc.splitlines() if line.startswith("| LLMREC_")]


def missing_rows(markdown: str, rows: list[str]) -> list[str]:
    """Rows naming a variable the page does not mention yet."""
    known = set(VARIABLE.findall(markdown))
    return [row for row in rows if not set(VARIABLE.findall(row)) <= known]


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs' hook signature)
    if page.file.src_uri != "settings.md":
        return markdown
    rows = missing_rows(markdown, docstring_rows())
    if not rows:
        return markdown
    return (
        markdown
        + "\n\n## More variables\n\nFrom the table in `llmrec_platform/settings.py`'s docstring:\n\n"
        + "| variable | default | meaning |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
