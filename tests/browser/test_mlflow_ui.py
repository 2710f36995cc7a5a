"""The MLflow UI (and its REST API) list the training runs the platform tracks."""

import json
import os
import urllib.request

import pytest

from llmrec_platform.storage.tracking import Tracker
from tests.browser.conftest import free_port, server

pytestmark = pytest.mark.browser

RUNS = {"popularity": 0.21, "llm_content": 0.17}


@pytest.fixture
def mlflow_ui(tmp_path, browser):
    store = tmp_path / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracker = Tracker(uri, store / "artifacts", "llmrec")
    for name, ndcg in RUNS.items():
        run_id = tracker.start_run(name, {"dataset": "tiny"}, tags={"ranker": name})
        tracker.log_metrics(run_id, {"ndcg@10": ndcg}, prefix="valid_")
        tracker.end_run(run_id)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # One worker and no background job runner: the UI and REST API are all this test needs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with server(["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                env, f"{url}/health", tmp_path / "mlflow-ui.log"):
        yield url, tracker.experiment_id


def test_the_mlflow_ui_lists_the_runs(mlflow_ui, page, artifacts):
    url, experiment_id = mlflow_ui
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"experiment_ids": [experiment_id]}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.load(response)["runs"]
    assert {r["info"]["run_name"] for r in runs} == set(RUNS)
    # The "Model training" view of the experiment (MLflow 3 opens GenAI experiments on traces otherwise).
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    for name in RUNS:
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(artifacts / "mlflow-runs.png"))
