"""What holds memory between the steps of an in-process run: `execute_keeping` frees each step's output once it is
stored, where `execute_in_process` keeps every one until the run ends; the current RSS falls when memory is freed."""

from __future__ import annotations

import gc
import weakref

import dagster as dg
import numpy as np

from llmrec_platform.memory import current_rss_bytes, peak_rss_bytes
from llmrec_platform.orchestration.in_process import execute_keeping


class Fitted:
    """Stands in for a fitted ranker: a value whose lifetime the test watches."""


class Discard(dg.IOManager):
    """Stores nothing and loads a fresh value (an artifact file read back)."""

    def handle_output(self, context, obj) -> None:
        pass

    def load_input(self, context):
        return Fitted()


def two_step_job(made: list[weakref.ref]) -> dg.JobDefinition:
    @dg.asset(io_manager_key="files")
    def fitted() -> Fitted:
        value = Fitted()
        made.append(weakref.ref(value))
        return value

    @dg.asset(io_manager_key="files")
    def report(fitted: Fitted) -> dict:
        return {"champion": "ease"}

    defs = dg.Definitions(assets=[fitted, report], jobs=[dg.define_asset_job("both")], resources={"files": Discard()})
    return defs.resolve_job_def("both")


def test_execute_keeping_frees_every_output_but_the_kept_ones():
    made: list[weakref.ref] = []
    with dg.DagsterInstance.ephemeral() as instance:
        kept = execute_keeping(two_step_job(made), {"report"}, instance, tags={"llmrec/dataset": "shop"})
        gc.collect()
        assert kept.success and kept.output_for_node("report") == {"champion": "ease"}
        assert made[0]() is None  # the fitted value died once its IO manager had it
        assert kept.dagster_run.tags["llmrec/dataset"] == "shop"
        assert {e.step_key for e in kept.all_events if e.is_step_success} == {"fitted", "report"}

        # What it replaces: Dagster's execute_in_process keeps every output for output_for_node, to the run's end.
        everything = two_step_job(made).execute_in_process(instance=instance)
        gc.collect()
        assert everything.success and made[1]() is not None


def test_the_current_rss_rises_and_falls_while_the_peak_stays():
    before = current_rss_bytes()
    block = np.ones(256 * 1024**2 // 8)  # 256 MiB, touched
    grown = current_rss_bytes()
    del block
    after = current_rss_bytes()
    assert grown - before > 200 * 1024**2
    assert grown - after > 200 * 1024**2  # returned to the system (a large numpy block is its own mapping)
    assert peak_rss_bytes() > grown - 16 * 1024**2  # the high-water mark (the kernel updates it a little late)
