"""Run a job in this process without keeping every step's output alive (what `llmrec demo` runs).

`JobDefinition.execute_in_process` (dagster 1.13) captures every step's output value in a dict for the whole run,
so that `result.output_for_node` can return it: every fitted ranker, frame and embedding matrix stays referenced
until the run ends, and the process grows step by step (16.8 GiB at the end of the 1M-interaction shop's graph).
Here only the outputs of the steps named in `keep` are captured; every other value is freed once its step has
stored it through its IO manager, and after each step the memory it freed is handed back to the system
(`memory.return_freed_memory`). The rest is what `execute_in_process` does for a job without selection, partition key
or extra resources.
"""

from __future__ import annotations

import gc
from collections.abc import Collection, Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    job_execution_iterator,
)
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.plan.outputs import StepOutputHandle

from llmrec_platform.memory import return_freed_memory


class KeptOutputs(dict):
    """An output capture that keeps only the outputs of the steps in `steps` and drops every other value."""

    def __init__(self, steps: Collection[str]):
        super().__init__()
        self.steps = frozenset(steps)

    def __setitem__(self, handle: StepOutputHandle, value: Any) -> None:
        if handle.step_key in self.steps:
            super().__setitem__(handle, value)


def execute_keeping(
    job_def: dg.JobDefinition,
    keep: Collection[str],
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """`job_def.execute_in_process(run_config, instance, tags, raise_on_error)`, whose result returns the outputs
    of the steps in `keep` only (`output_for_node` raises for the others)."""
    job = InMemoryJob(job_def=job_def.as_ephemeral_job(resource_defs={}, input_values={}))
    run_config = dict(run_config or {})
    definition = job.get_definition()
    plan = create_execution_plan(job, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None)
    captured = KeptOutputs(keep)
    run = instance.create_run_for_job(
        job_def=definition,
        run_config=run_config,
        execution_plan=plan,
        tags={**definition.run_tags, **merge_run_tags(job_def, None, tags, None, instance, run_config)},
    )
    events = []
    # A full collection traverses every live object (~0.25 s with Dagster and torch loaded, ~10 s over a demo's 34
    # steps): what is alive before the first step, and what survives each step's collection, is set aside (frozen),
    # so the collection after a step scans only what that step made. Unfrozen when the run ends.
    gc.freeze()
    try:
        events.extend(_run_steps(job, plan, run, instance, run_config, captured, raise_on_error))
    finally:
        gc.unfreeze()
    return dg.ExecuteInProcessResult(
        job_def=definition, event_list=events, dagster_run=instance.get_run_by_id(run.run_id), output_capture=captured
    )


def _run_steps(job, plan, run, instance, run_config, captured, raise_on_error):
    for event in ExecuteRunWithPlanIterable(
        execution_plan=plan,
        iterator=job_execution_iterator,
        execution_context_manager=PlanOrchestrationContextManager(
            context_event_generator=orchestration_context_event_generator,
            job=job,
            execution_plan=plan,
            dagster_run=run,
            instance=instance,
            run_config=run_config,
            executor_defs=None,
            output_capture=captured,
            raise_on_error=raise_on_error,
        ),
    ):
        yield event
        if event.is_step_success or event.is_step_failure:
            return_freed_memory()  # the step's data is unreferenced now: its pages go back before the next step
            gc.freeze()
