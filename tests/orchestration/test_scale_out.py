"""The pipeline runs under the multiprocess executor (one process per step) on a persistent instance."""

import duckdb

from llmrec_platform.definitions import defs


def test_full_pipeline_runs_one_process_per_step(pipeline_run):
    assert pipeline_run.success
    steps = pipeline_run.step_pids
    assert {"raw_ratings", "item_embeddings", "evaluation_report", "recommendations"} <= set(steps)
    # Every step ran in its own child process, not in the orchestrator.
    assert pipeline_run.orchestrator_pid not in set(steps.values())
    assert len(set(steps.values())) == len(steps)
    with duckdb.connect(str(pipeline_run.home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM recommendations").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM champion_history").fetchone()[0] == 1


def test_full_pipeline_job_runs_multiprocess_by_default():
    # Dagster's default executor: multiprocess unless the run config asks for in_process.
    assert defs.resolve_job_def("full_pipeline").executor_def.name == "multi_or_in_process_executor"
