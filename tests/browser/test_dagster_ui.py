"""Drive the Dagster UI in headless Chromium: open the asset graph, launch a materialization, see it succeed."""

import os
import re
import time
import urllib.parse

import dagster as dg
import pytest

from llmrec_platform.paths import Paths
from llmrec_platform.storage.warehouse import Warehouse
from tests.browser.conftest import free_port, server
from tests.conftest import write_ml100k_folder

pytestmark = pytest.mark.browser

SELECTION = 'key:"raw_items" or key:"item_texts"'


@pytest.fixture
def dagster_ui(tmp_path, browser):
    home = Paths(tmp_path / "home").ensure()
    dataset = write_ml100k_folder(tmp_path / "tiny-ml")
    port = free_port()
    env = {**os.environ, "LLMREC_HOME": str(home.home), "DAGSTER_HOME": str(home.dagster_home),
           "LLMREC_DATASET": str(dataset), "LLMREC_DEVICE": "cpu"}
    url = f"http://127.0.0.1:{port}"
    with server(["dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], env,
                f"{url}/server_info", tmp_path / "dagster-dev.log"):
        yield url, home


def dismiss_onboarding(page) -> None:
    """Close the "join the community" dialog a fresh instance shows (it may not show at all)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=3000)
    except PlaywrightTimeout:
        return
    skip.click()


def test_materialize_a_selection_from_the_asset_graph(dagster_ui, page, artifacts):
    url, home = dagster_ui
    page.goto(f"{url}/asset-groups~{urllib.parse.quote(SELECTION)}/")
    dismiss_onboarding(page)
    page.get_by_text("ingest", exact=True).first.wait_for()
    page.get_by_text("text", exact=True).first.wait_for()
    page.get_by_role("button", name="Materialize all").click()
    page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).wait_for()
    page.screenshot(path=str(artifacts / "dagster-asset-graph.png"))

    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        deadline = time.monotonic() + 100
        while True:
            runs = instance.get_runs()
            if runs and runs[0].is_finished:
                break
            assert time.monotonic() < deadline, f"the launched run did not finish: {runs and runs[0].status}"
            time.sleep(1)
        [run] = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.asset_selection == {dg.AssetKey("raw_items"), dg.AssetKey("item_texts")}
        # Declarative automation is off until someone turns the automation sensor on: no other run started.
        assert [r.run_id for r in instance.get_runs()] == [run.run_id]

    page.goto(f"{url}/runs/{run.run_id}")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.get_by_text("RUN_SUCCESS").wait_for(timeout=60_000)  # the event log has loaded
    page.screenshot(path=str(artifacts / "dagster-run.png"))
    store = Warehouse(home.warehouse)
    assert len(store.read("items")) == 30 and len(store.read("item_texts")) == 30
