"""Fixtures for the orchestration tests: per-test Definitions bound to an isolated home, and one real
pipeline run under the multiprocess executor shared (as a copy) by the tests that need trained rankers."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.definitions import build_definitions, build_resources
from llmrec_platform.paths import Paths
from tests.conftest import write_ml100k_folder


def month_range(dataset: Path) -> tuple[str, str]:
    """First and last monthly partition keys that hold the dataset's ratings."""
    timestamps = load_dataset(str(dataset)).ratings["timestamp"]
    return (monthly_partitions.get_partition_key_for_timestamp(int(timestamps.min())),
            monthly_partitions.get_partition_key_for_timestamp(int(timestamps.max())))


def range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


@pytest.fixture
def home(llmrec_home: Paths, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setenv("LLMREC_DATASET", str(tiny_dataset_dir))
    return llmrec_home


@pytest.fixture
def defs(home: Paths, tiny_dataset_dir: Path) -> dg.Definitions:
    return build_definitions(build_resources(home, dataset=str(tiny_dataset_dir), device="cpu"))


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory):
    """One persistent (SQLite) instance for the session: sensor contexts need one, and creating it takes seconds."""
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster")), set_dagster_home=False) as instance:
        yield instance


# --- one real pipeline run, multiprocess, on a persistent instance ------------------------------------

def full_pipeline_job() -> dg.JobDefinition:
    """Reconstructable target: the `full_pipeline` job of the code location (resources from the env)."""
    from llmrec_platform.definitions import defs

    return defs.resolve_job_def("full_pipeline")


FORKSERVER_PRELOAD = ["dagster", "llmrec_platform.definitions", __name__, "mlflow", "sentence_transformers"]


@dataclass
class PipelineRun:
    home: Paths
    dataset: Path
    run_id: str
    success: bool
    step_pids: dict[str, int]
    orchestrator_pid: int


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    root = tmp_path_factory.mktemp("pipeline")
    dataset = write_ml100k_folder(root / "tiny-ml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMREC_HOME", str(root / "home"))
        paths = Paths(root / "home").ensure()
        mp.setenv("DAGSTER_HOME", str(paths.dagster_home))
        mp.setenv("LLMREC_DATASET", str(dataset))
        mp.setenv("LLMREC_DEVICE", "cpu")
        with dg.DagsterInstance.get() as instance:
            result = dg.execute_job(
                dg.reconstructable(full_pipeline_job), instance=instance, tags=range_tags(*month_range(dataset)),
                # forkserver: step processes fork from one that has imported the code once (spawn would
                # re-import dagster, torch and mlflow for every step).
                run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2, "start_method": {
                    "forkserver": {"preload_modules": FORKSERVER_PRELOAD}}}}}},
            )
            step_pids, orchestrator_pid = {}, 0
            for record in instance.get_records_for_run(result.run_id, limit=100_000).records:
                event = record.event_log_entry.dagster_event
                if event is None:
                    continue
                if event.event_type_value == "STEP_START":
                    step_pids[event.step_key] = event.pid
                elif event.event_type_value == "RUN_START":
                    orchestrator_pid = event.pid
            return PipelineRun(paths, dataset, result.run_id, result.success, step_pids, orchestrator_pid)


@pytest.fixture
def trained_home(pipeline_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """A private copy of the pipeline's home (warehouse, artifacts, MLflow), set as LLMREC_HOME."""
    assert pipeline_run.success, "the shared pipeline run failed: see test_scale_out"
    home = tmp_path / "home"
    shutil.copytree(pipeline_run.home.home, home, ignore=shutil.ignore_patterns("dagster"))
    monkeypatch.setenv("LLMREC_HOME", str(home))
    monkeypatch.setenv("LLMREC_DATASET", str(pipeline_run.dataset))
    monkeypatch.setenv("LLMREC_DEVICE", "cpu")
    paths = Paths(home).ensure()
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    return paths
