"""The Evaluate page in a real browser: the shipped capitals plan and dataset, two strategies,
the metrics table, the accuracy-vs-cost chart and the frontier sentence. The screenshot is the
page's documentation (assets/screenshots/evaluate.png, rewritten only with
ARBOR_UPDATE_SCREENSHOTS=1 so a test run leaves the tree clean)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from storage.evaluations import list_evaluations
from tests.support.browser import ARTIFACTS, _choose, _click, _settled

pytestmark = [pytest.mark.browser, pytest.mark.model]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"


def test_evaluate_page_compares_two_strategies_and_marks_the_frontier(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/evaluate_page")
    page.get_by_role("heading", name="Evaluate").first.wait_for()
    _settled(page)

    _choose(page, "Plan to evaluate", "Shipped plan: capitals")
    _choose(page, "Dataset", "capitals")
    _settled(page)
    limit = page.get_by_role("spinbutton", name="Examples to run (0: all)")
    limit.fill("4")
    limit.press("Enter")
    expect(page.get_by_text("4 will run")).to_be_visible()
    configurations = page.locator('[data-testid="stMultiSelect"]').first
    expect(configurations.get_by_text("single", exact=True)).to_be_visible()
    expect(configurations.get_by_text("sc5", exact=True)).to_be_visible()

    _click(page, "Run evaluation")
    success = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text="Frontier")
    success.wait_for(timeout=120_000)
    assert re.search(r"Best: \d+% at [\d,]+ tokens per example", success.inner_text())
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    table = page.locator('[data-testid="stDataFrame"]').filter(has_text="cost-of-pass")
    expect(table).to_be_visible()
    [saved] = list_evaluations(ui_server.workspace.traces)
    assert saved["status"] == "completed" and saved["results"] == 8

    # Streamlit scrolls inside its main block, so a full-page shot needs a viewport that tall.
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 6000)})
    _settled(page)
    page.wait_for_timeout(800)  # the chart redraws at the new size
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-evaluate.png"), full_page=True)
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":  # the README's copy, on request only
        page.screenshot(path=str(SCREENSHOTS / "evaluate.png"), full_page=True)
    print(success.inner_text())
    page.close()
