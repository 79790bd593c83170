"""Issue 15 in a real browser: a generated dataset (gym:chain_sum) chosen on the Evaluate page
brings its three-node plan and the dataset's own scorer, asks for a seed, levels and examples per
level, runs on the bundled model and shows accuracy and cost per difficulty level with one chart
per level."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from storage.evaluations import list_evaluations, load_summary
from tests.support.browser import ARTIFACTS, _choose, _click, _settled

pytestmark = [pytest.mark.browser, pytest.mark.model]


def test_a_generated_dataset_is_evaluated_per_difficulty_level(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/evaluate_page")
    page.get_by_role("heading", name="Evaluate").first.wait_for()
    _settled(page)

    _choose(page, "Dataset", "gym:chain_sum")
    _settled(page)
    expect(page.get_by_role("combobox", name="Plan to evaluate", exact=True)).to_have_value(
        "Shipped plan: gym_chain_sum"
    )
    expect(page.get_by_role("combobox", name="Checker", exact=True)).to_have_value(
        "the dataset's own scorer (generated datasets)"
    )
    per_level = page.get_by_role("spinbutton", name="Per level")
    per_level.fill("1")
    per_level.press("Enter")
    _settled(page)
    # Levels 1-3 are chosen by default: one example each.
    expect(page.get_by_text("gym:chain_sum: 3 examples, 3 will run")).to_be_visible()

    _click(page, "Run evaluation")
    heading = page.get_by_role("heading", name="By difficulty level")
    heading.wait_for(timeout=240_000)
    _settled(page)
    for level in (1, 2, 3):
        expect(page.get_by_role("tab", name=f"Level {level}")).to_be_visible()
    expect(page.get_by_text("Does the level predict failure here?")).to_be_visible()
    [saved] = list_evaluations(ui_server.workspace.traces)
    assert saved["status"] == "completed" and saved["results"] == 6  # single and sc5
    summary = load_summary(ui_server.workspace.traces, saved["evaluation_id"])
    assert summary is not None
    assert sorted({row["difficulty"] for row in summary["by_difficulty"]}) == [1, 2, 3]
    page.get_by_role("tab", name="Level 2").click()
    # The overall chart and the chosen level's (the other levels' charts sit in hidden tabs).
    expect(page.locator('[data-testid="stVegaLiteChart"]:visible')).to_have_count(2)
    expect(page.get_by_text("Frontier at level 2:")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-evaluate-levels.png"), full_page=True)
    page.close()
