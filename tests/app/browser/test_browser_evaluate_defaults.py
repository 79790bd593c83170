"""Issue 19.8 in a real browser: the Evaluate page opens on a shipped dataset with the plan and
checker that fit it (not the workbench plan with a text checker), follows the dataset when it
changes, and shows calls, tokens and time next to "Run evaluation" before anything runs. No
model is called. The screenshot is the README's (assets/screenshots/evaluate-estimate.png,
rewritten only with ARBOR_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.browser import ARTIFACTS, _choose, _settled

pytestmark = [pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"


def _estimate(page):
    return page.get_by_text(re.compile(r"^At most [\d,]+ calls, "))


def test_defaults_follow_the_dataset_and_an_estimate_stands_by_the_button(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/evaluate_page")
    page.get_by_role("heading", name="Evaluate").first.wait_for()
    _settled(page)

    plan = page.get_by_role("combobox", name="Plan to evaluate", exact=True)
    dataset = page.get_by_role("combobox", name="Dataset", exact=True)
    checker = page.get_by_role("combobox", name="Checker", exact=True)
    expect(dataset).to_have_value("arithmetic")
    expect(plan).to_have_value("Shipped plan: arithmetic")
    expect(checker).to_have_value("number within tolerance")

    # 12 examples × (single: 1 call + sc5: 5 calls) on a one-node plan.
    estimate = _estimate(page)
    expect(estimate).to_be_visible()
    expect(estimate).to_contain_text("At most 72 calls")
    expect(estimate).to_contain_text(re.compile(r"[\d,]+ tokens, about \d+ (s|min)"))
    button = page.get_by_role("button", name="Run evaluation", exact=True)
    # Next to the button: on the same row, to its right.
    box, text = button.bounding_box(), estimate.bounding_box()
    assert box is not None and text is not None
    assert text["x"] > box["x"] + box["width"] - 1
    assert abs((text["y"] + text["height"] / 2) - (box["y"] + box["height"] / 2)) < 40
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-evaluate-estimate.png"))
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOTS / "evaluate-estimate.png"))

    _choose(page, "Dataset", "capitals")
    _settled(page)
    expect(plan).to_have_value("Shipped plan: capitals")
    expect(checker).to_have_value("normalised text")
    limit = page.get_by_role("spinbutton", name="Examples to run (0: all)")
    limit.fill("4")
    limit.press("Enter")
    _settled(page)
    expect(_estimate(page)).to_contain_text("At most 24 calls")

    _choose(page, "Dataset", "units")
    _settled(page)
    expect(plan).to_have_value("Shipped plan: units")
    expect(checker).to_have_value("number within tolerance")
    page.close()
