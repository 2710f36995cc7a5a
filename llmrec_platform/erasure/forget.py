"""`llmrec forget`: erase users everywhere the platform put them, resumably (no Dagster).

`forget(paths, ids)` journals the request (`pending.json`, fsynced) before it touches any store, writes the
tombstone to the ledger (from then on the event-log readers and a running server drop the user), then erases
store by store, each step idempotent, and finally records the outcome in the ledger and clears the journal.
A process killed half-way leaves the journal behind: `finish_pending` (run first by the next `llmrec forget`,
`llmrec serve` or pipeline run) finishes it.

The ledger and the outcome hold the tombstone and counts, never the id. Rankers that learned from the user
beyond their own row (`scrub.REFIT_NEEDED`) are listed in `refit.json` beside the ledger: their fit-cache
entries are deleted, so the next `nightly_retrain` (or `llmrec demo`) refits them on the data without the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llmrec_platform.erasure.ledger import (
    PendingErasure,
    append_ledger,
    erasure_key,
    read_journal,
    read_ledger,
    tombstone,
    write_durably,
    write_journal,
)
from llmrec_platform.erasure.scrub import needs_refit
from llmrec_platform.erasure.stores import (
    erase_bundles,
    erase_event_logs,
    erase_files,
    erase_pickles,
    erase_warehouse,
    leftovers,
    redact_log_ids,
    user_texts,
)
from llmrec_platform.live.events import EventLog
from llmrec_platform.paths import Paths
from llmrec_platform.serving.audit import AUDIT_NAME

REFIT_NAME = "refit.json"


@dataclass
class ErasureReport:
    """The outcome of one erasure (what the ledger's `completed` line holds)."""

    tombstone: str
    stores: dict[str, int] = field(default_factory=dict)  # rows, lines, files and bundles removed or rewritten
    refit: list[str] = field(default_factory=list)  # rankers that need a refit to forget the user fully
    leftovers: list[str] = field(default_factory=list)  # files that still name the user (should stay empty)
    resumed: bool = False  # finished after an interrupted run
    erased_before: str | None = None  # when an earlier request for the same id completed (a repeat request)

    @property
    def held(self) -> bool:
        return any(self.stores.values())


def forget(paths: Paths, user_ids: list[str], pseudonymize: Callable[[str], str] | None = None,
           on_step: Callable[[str], None] | None = None) -> tuple[dict[str, ErasureReport], list[ErasureReport]]:
    """Erase each of `user_ids` (the ids clients use; `pseudonymize` maps them to the stored ones when
    pseudonymization is on). Erasures an interrupted run left pending are finished first. Returns (the report
    of each id, the reports of other erasures that were finished on the way)."""
    folder = paths.erasure
    key = erasure_key(folder, create=True)
    resumed = {r.tombstone: r for r in finish_pending(paths, on_step)}
    marks, new = {}, []
    for raw in dict.fromkeys(str(u) for u in user_ids):
        stored = pseudonymize(raw) if pseudonymize is not None else raw
        marks[raw] = mark = tombstone(key, stored)
        if mark not in resumed and all(p.tombstone != mark for p in new):
            ids = [stored] + ([raw] if raw != stored else [])
            new.append(PendingErasure(mark, ids, user_texts(paths.warehouse, [stored]),
                                      log_offset=EventLog(paths.events).size()))
    write_journal(folder, new)  # durable before any store changes
    done = {**resumed, **{entry.tombstone: _erase(paths, entry, on_step) for entry in new}}
    write_journal(folder, [])
    return {raw: done[mark] for raw, mark in marks.items()}, [r for m, r in resumed.items() if m not in marks.values()]


def finish_pending(paths: Paths, on_step: Callable[[str], None] | None = None) -> list[ErasureReport]:
    """Finish the erasures an interrupted run left in the journal (none: nothing to do)."""
    folder = paths.erasure
    reports = []
    for entry in read_journal(folder):
        report = _erase(paths, entry, on_step)
        report.resumed = True
        reports.append(report)
        write_journal(folder, [p for p in read_journal(folder) if p.tombstone != entry.tombstone])
    return reports


def _erase(paths: Paths, entry: PendingErasure, on_step: Callable[[str], None] | None) -> ErasureReport:
    folder = paths.erasure
    earlier = [e for e in read_ledger(folder) if e.get("tombstone") == entry.tombstone]
    log_offset = entry.log_offset
    if not any(e.get("status") == "requested" and e.get("log_offset") == log_offset for e in earlier):
        # From here on, readers drop what the user had in the event log when the erasure was requested.
        append_ledger(folder, {"status": "requested", "tombstone": entry.tombstone, "log_offset": log_offset})
    ids, needles, texts = entry.ids[:1], entry.ids, entry.texts
    report = ErasureReport(entry.tombstone, erased_before=next(
        (e["at"] for e in earlier if e.get("status") == "completed"), None))
    step = on_step or (lambda _: None)

    def note_refit(rankers: list[str]) -> None:  # durable before the ranker changes: a crash cannot lose it
        needed = sorted({name for name in rankers if needs_refit(name)} - set(report.refit))
        if needed:
            report.refit = sorted({*report.refit, *needed})
            schedule_refit(folder, needed)

    step("warehouse")
    report.stores["warehouse_rows"] = erase_warehouse(paths.warehouse, ids)
    step("event and impression logs")
    report.stores["log_lines"] = erase_event_logs(paths.events, ids, log_offset)
    step("audit log")
    report.stores["audit_lines"] = redact_log_ids(paths.audit / AUDIT_NAME, ids)
    step("serving bundles")
    report.stores["bundles"], _ = erase_bundles(paths.bundles, ids, needles, note_refit)
    step("fitted rankers")
    report.stores["artifacts"], _ = erase_pickles(paths.artifacts, ids, needles + texts, before_write=note_refit)
    step("fit cache")
    report.stores["fit_cache_entries"], _ = erase_pickles(paths.fit_cache, ids, needles + texts, drop=True)
    step("reports, landing, MLflow, Dagster")
    handled = {paths.warehouse, paths.events, paths.audit, paths.bundles, paths.artifacts, paths.fit_cache, folder,
               paths.lock}
    report.stores["other_files"] = sum(erase_files(path, ids, needles, texts) for path in sorted(paths.home.iterdir())
                                       if path not in handled)
    step("checking every file under the home")
    report.leftovers = leftovers(paths.home, needles + texts, skip=[folder])
    append_ledger(folder, {"status": "completed", "tombstone": entry.tombstone, "held": report.held,
                           "stores": report.stores, "refit": report.refit, "leftover_files": len(report.leftovers)})
    return report


def schedule_refit(folder: Path, models: list[str]) -> None:
    """Record that `models` must be refitted without an erased user (merged with what is already waiting)."""
    path = Path(folder) / REFIT_NAME
    waiting = json.loads(path.read_text())["models"] if path.exists() else []
    requested_at = datetime.now(UTC).isoformat()  # to the microsecond: each erasure's request is told apart
    write_durably(path, json.dumps({"models": sorted(set(waiting) | set(models)), "requested_at": requested_at},
                                   indent=1).encode())


def refit_waiting(folder: Path) -> dict | None:
    """What `schedule_refit` recorded ({"models", "requested_at"}), or None."""
    path = Path(folder) / REFIT_NAME
    return json.loads(path.read_text()) if path.exists() else None
