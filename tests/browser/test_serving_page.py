"""The web page at / in headless Chromium: a list with "because" lines; a click changes it; a free-text need."""

from __future__ import annotations

import httpx
import pytest

from llmrec_platform.paths import Paths
from llmrec_platform.testing import GROUPS
from tests.serving.conftest import Server, publish_tiny_bundle

pytestmark = pytest.mark.browser


@pytest.fixture
def served(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    running = Server(home).start()
    yield running
    running.stop()


def listed(page) -> list[str]:
    return page.eval_on_selector_all("#items li", "items => items.map(li => li.dataset.itemId)")


def test_a_click_on_the_page_changes_the_list(served, page, artifacts):
    page.goto(served.url + "/")
    page.wait_for_selector("#items li")
    assert "champion ease" in page.inner_text("#version")
    page.fill("#user", "visitor")
    page.click("#show")
    page.wait_for_function("document.querySelector('#status').textContent.includes('cold-start')")
    before = listed(page)
    assert len(before) == 10

    clicked = GROUPS["b"][0]
    page.click(f'#items li[data-item-id="{clicked}"] .title')
    page.wait_for_function(f"document.querySelector('#status').textContent.includes('clicked {clicked}')")
    after = listed(page)
    assert clicked not in after and after != before
    assert set(after[:5]) <= set(GROUPS["b"])  # the clicked film's taste group leads now
    because = page.inner_text("#items li:first-child .because")
    assert because.startswith("Because") and "Film i6" in because  # grounded in the one click
    page.screenshot(path=str(artifacts / "serving-page.png"))

    history = httpx.get(f"{served.url}/users/visitor/history").json()["items"]
    assert [(h["item_id"], h["event"]) for h in history] == [(clicked, "click")]


def test_a_free_text_need_without_an_encoder_shows_a_clear_message(served, page):
    page.goto(served.url + "/")
    page.wait_for_selector("#items li")
    page.fill("#need", "something funny")
    page.click("#ask")
    page.wait_for_selector("#status .error")
    assert "free-text queries are unavailable" in page.inner_text("#status")
