"""The fuzz tests' case counts, printed in the terminal summary of every run (CI's log included)."""

from __future__ import annotations

import pytest

_STATS: dict[str, str] = {}


@pytest.fixture
def fuzz_stats() -> dict[str, str]:
    """A test records how many cases it ran: `fuzz_stats[name] = "N cases ..."`."""
    return _STATS


def pytest_terminal_summary(terminalreporter):
    if _STATS:
        terminalreporter.section("fuzzing: cases run")
        for name, line in sorted(_STATS.items()):
            terminalreporter.write_line(f"{name}: {line}")
