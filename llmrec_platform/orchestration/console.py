"""What `llmrec demo` prints while a run executes: one line per finished step with its time, failed checks,
an asset's own warnings, and (on a terminal only) one live status line for the running step: its time and, for
long work that reports its progress (`llmrec_platform.progress`: texts encoded, epochs, trees), a progress bar.

It is a Dagster logger, so it sees the run's own step events whichever job runs; Dagster's console logger
(stack traces included) is on only with `--verbose`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

import dagster as dg

from llmrec_platform import progress
from llmrec_platform.memory import PeakMark

_EVENTS = dg.DagsterEventType
BAR_WIDTH = 24


class RunConsole(logging.Handler):
    """Turns a run's step events into short lines on `stream`."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        super().__init__(level=logging.DEBUG)
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.materialized: dict[str, list[str]] = {}
        self.checks_passed = 0
        self.checks_failed: list[str] = []
        self.step_seconds: dict[str, float] = {}
        # step -> (process peak GiB after it, GiB it raised that peak by, process RSS GiB right after it)
        self.step_memory: dict[str, tuple[float, float, float]] = {}
        self._marks: dict[str, PeakMark] = {}
        self._running: tuple[str, float] | None = None
        self._progress: dict[str, tuple[int, int, str]] = {}  # step -> its latest (done, total, unit)
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None

    # --- logging.Handler ---------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is None and meta.get("step_key"):
            text = meta.get("orig_message", record.getMessage())
            if record.levelno >= logging.WARNING:  # an asset's own warning
                self._line(f"  {meta['step_key']}: {record.levelname.lower()}: {text}")
            elif (reported := progress.parse(text)) is not None:
                with self._lock:
                    self._progress[meta["step_key"]] = reported
        if event is None or event.step_key is None:
            return
        step, kind = event.step_key, event.event_type
        if kind == _EVENTS.STEP_START:
            with self._lock:
                self._running = (step, time.monotonic())
                self._marks[step] = PeakMark()
            self._start_ticker()
        elif kind == _EVENTS.ASSET_MATERIALIZATION:
            self.materialized.setdefault(step, []).append(event.asset_key.to_user_string())
        elif kind == _EVENTS.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            if data.passed:
                self.checks_passed += 1
            else:
                name = f"{data.asset_key.to_user_string()}/{data.check_name}"
                self.checks_failed.append(name)
                self._line(f"  check {name} FAILED")
        elif kind == _EVENTS.STEP_SUCCESS:
            seconds = event.event_specific_data.duration_ms / 1000
            self.step_seconds[step] = seconds
            mark = self._marks.pop(step, None) or PeakMark()
            peak = mark.metadata()
            self.step_memory[step] = (peak["process_peak_rss_gib"], peak["step_raised_peak_by_gib"], peak["process_rss_now_gib"])
            if step in self.materialized:  # a check step prints nothing when it passes
                self._line(f"  {step:<34} {seconds:7.1f} s  {self.memory_text(step)}")
            self._done(step)
        elif kind == _EVENTS.STEP_FAILURE:
            self._line(f"  {step:<34}  FAILED")
            self._done(step)

    # --- output ------------------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")  # clear the live status line first
            self.stream.write(text + "\n")
            self.stream.flush()

    def _done(self, step: str) -> None:
        with self._lock:
            self._progress.pop(step, None)
            if self._running and self._running[0] == step:
                self._running = None

    def _start_ticker(self) -> None:
        if not self.live or self._ticker is not None:
            return

        def tick() -> None:
            while True:
                time.sleep(0.5)
                with self._lock:
                    if self._running:
                        step, since = self._running
                        self.stream.write(f"\r\033[K{self.status_line(step, time.monotonic() - since)}")
                        self.stream.flush()

        self._ticker = threading.Thread(target=tick, name="llmrec-console", daemon=True)
        self._ticker.start()

    def memory_text(self, step: str) -> str:
        """The step's memory: the process's peak RSS after it and how much the step raised it (the peak never
        falls, so a step that stayed below an earlier step's peak shows +0.00), and the RSS right after it (what
        the process still holds)."""
        peak, raised, now = self.step_memory[step]
        return f"peak RSS {peak:5.2f} GiB (+{raised:.2f})  RSS after {now:5.2f} GiB"

    def status_line(self, step: str, seconds: float) -> str:
        """The running step, its time and, once it has reported any, its progress bar."""
        line = f"  {step:<34} {seconds:7.0f} s"
        if step not in self._progress:
            return line + " ..."
        done, total, unit = self._progress[step]
        share = min(done / total, 1.0) if total > 0 else 0.0
        filled = int(round(share * BAR_WIDTH))
        return f"{line} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:,}/{total:,} {unit}"

    def summary(self) -> str:
        total = sum(self.step_seconds.values())
        checks = f"{self.checks_passed} asset checks passed"
        if self.checks_failed:
            checks += f", {len(self.checks_failed)} failed ({', '.join(self.checks_failed)})"
        return f"{len(self.materialized)} assets materialized in {total:.1f} s of step time; {checks}"


def console_logger(console: RunConsole) -> dg.LoggerDefinition:
    """A logger definition that feeds every record of the run to `console`."""

    @dg.logger(description="llmrec's short per-step output")
    def llmrec_console(_init_context) -> logging.Logger:
        logger = logging.Logger("llmrec.console", level=logging.DEBUG)
        logger.addHandler(console)
        return logger

    return llmrec_console
