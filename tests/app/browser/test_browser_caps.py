"""Caps that cannot reach the answer, in a real browser: the warning before the run, the stop
on the cap, and "Continue with a higher cap" reusing the finished nodes."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.browser import ARTIFACTS, _choose, _click, _settled, wait_for_plan

pytestmark = [pytest.mark.browser, pytest.mark.timeout(2400)]

TASK = "Plan a three-day trip to Lisbon on a budget."
SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"
#: A run on the bundled model on a busy two-core machine: generous, never asserted on.
RUN_TIMEOUT_MS = 900_000


def _set_number(page, label: str, value: int) -> None:
    _settled(page)
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    _settled(page)
    expect(box).to_have_value(str(value))


def test_cap_warning_stop_and_continue_with_a_higher_cap(browser, ui_server):
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(120_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    _click(page, "Add child")
    wait_for_plan(page, lambda p: len(p["root"]["children"]) == 1)
    _choose(page, "Node", "root:")
    _click(page, "Add child")
    plan = wait_for_plan(page, lambda p: len(p["root"]["children"]) == 2)
    assert len(plan["root"]["children"]) == 2, plan

    # A cap the root cannot be reached with: flagged before anything runs.
    _set_number(page, "Total tokens (tokens)", 600)
    warning = page.get_by_text("These caps cannot reach the answer")
    warning.wait_for()
    expect(page.get_by_text(re.compile(r"Raise total tokens to at least [\d,]+"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Use the suggested caps"))).to_be_visible()
    _settled(page)
    warning.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "cap-warning.png"))

    # Run anyway: it stops on the cap, before the root, and offers to continue.
    _click(page, "Run plan")
    page.get_by_text(re.compile(r"token cap reached")).first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.get_by_text("No answer: the root node did not finish.").wait_for()
    continue_button = page.get_by_role("button", name="Continue with a higher cap", exact=True)
    continue_button.wait_for()
    raised = page.get_by_label("New total tokens (tokens)", exact=True)
    assert int(raised.input_value().replace(",", "")) >= 1200
    _settled(page)
    continue_button.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "cap-continue.png"))

    _click(page, "Continue with a higher cap")
    summary = page.get_by_text(re.compile(r"reused (\d+) unchanged"))
    summary.wait_for(timeout=RUN_TIMEOUT_MS)
    reused = int(re.search(r"reused (\d+) unchanged", summary.inner_text()).group(1))
    assert reused >= 1
    expect(page.get_by_text("No answer: the root node did not finish.")).to_have_count(0)
    # The sidebar's cap follows the continued run's.
    expect(page.get_by_label("Total tokens (tokens)", exact=True)).not_to_have_value("600")
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "cap-continued.png"), full_page=True)
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":  # the README's, only on request
        for name in ("cap-warning.png", "cap-continued.png"):
            shutil.copy(ARTIFACTS / name, SCREENSHOTS / name)
    page.close()
