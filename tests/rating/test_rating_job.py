"""`llmrec demo --task rating` end to end on the tiny fixture: the rating_pipeline job, its warehouse table,
MLflow runs and report."""

import re

import pytest

from llmrec_platform.storage.warehouse import Warehouse

MODELS = {"baseline", "biased_mf", "svdpp", "lightgbm_no_llm", "lightgbm_llm"}


@pytest.mark.slow
def test_demo_task_rating_fills_rating_metrics_for_every_model_and_fold(llmrec_home, tiny_dataset_dir, capfd):
    import dagster as dg
    import mlflow

    from llmrec_platform.cli import main

    assert main(["demo", "--task", "rating", "--dataset", str(tiny_dataset_dir), "--device", "cpu", "--seed", "3"]) == 0
    out, _ = capfd.readouterr()
    instance = dg.DagsterInstance.from_config(str(llmrec_home.dagster_home))
    [run] = instance.get_runs()
    assert run.job_name == "rating_pipeline"
    rows = Warehouse(llmrec_home.warehouse).read("rating_metrics", "run_id = ?", [run.run_id])
    assert {(m, f) for m, f in zip(rows["model"], rows["fold"], strict=True)} == {(m, f) for m in MODELS for f in range(5)}
    assert len(rows) == 25 and rows["rmse"].between(0, 4).all() and (rows["rmse"] >= rows["mae"]).all()
    for model in MODELS:  # the CLI's mean table
        assert re.search(rf"^\| {model} \| \d\.\d{{4}} ± \d\.\d{{4}} \| \d\.\d{{4}} ± \d\.\d{{4}} \|$", out, re.MULTILINE)
    assert "LLM features: RMSE" in out
    runs = mlflow.tracking.MlflowClient(llmrec_home.mlflow_uri).search_runs(
        [e.experiment_id for e in mlflow.tracking.MlflowClient(llmrec_home.mlflow_uri).search_experiments()],
        filter_string=f"tags.dagster_run_id = '{run.run_id}'")
    assert {r.data.tags["model"] for r in runs} == MODELS
    assert all("mean_rmse" in r.data.metrics for r in runs)
    assert (llmrec_home.reports / "rating_latest.md").read_text().count("| lightgbm_llm |") == 1
    # The ranking graph did not run.
    assert not Warehouse(llmrec_home.warehouse).has_table("evaluation_metrics")


def test_rating_options_of_the_ranking_task_are_refused(llmrec_home, capsys):
    from llmrec_platform.cli import main

    assert main(["demo", "--task", "rating", "--cold-items", "0.1"]) == 2
    assert "--finetune, --fast and --cold-items belong to --task ranking" in capsys.readouterr().err


def test_an_unknown_task_is_one_line_with_the_choices(capsys):
    from llmrec_platform.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--task", "regression"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'regression'" in err and "ranking" in err and "rating" in err
