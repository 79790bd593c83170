"""Planner actions in the background, in a real browser with the bundled model: Decompose shows
its elapsed time, stage and a Cancel button while it runs; Cancel ends it with no plan; Expand
on a one-node plan runs to the end and adds the children.

The screenshot of a running planner job goes to tests/artifacts, and to the README's
assets/screenshots/planner-progress.png when ARBOR_UPDATE_SCREENSHOTS=1.
Needs Debian's chromium; skips without it except under CI=true (the browser fixture in
tests/conftest.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, _click, _settled, plan_json

# The suite's 600 s per-test limit is too short for two real planner actions on a loaded
# two-core machine (an expand took over 8 minutes at load average 30).
pytestmark = [pytest.mark.browser, pytest.mark.timeout(1800)]

TASK = "Organise a book swap for the families on our street."
SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"
#: Generous: the bundled model on a busy two-core machine; these only bound a hung test.
PLANNER_MS = 600_000


def _progress_box(page):
    return page.locator(".st-key-planner_job_box")


def test_cancel_a_decompose_then_expand_a_node_in_a_real_browser(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)

    # -- Decompose, seen running, then cancelled ----------------------------------------------
    _click(page, "Decompose")
    box = _progress_box(page)
    box.wait_for(timeout=PLANNER_MS)
    # drawn together with the box: elapsed time, the stage, Cancel
    assert box.get_by_text(re.compile(r"running for \d+ s")).count() == 1
    assert box.get_by_text(re.compile(r"^Stage: ")).count() == 1
    # at once: the planner must still be working when the click lands
    box.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_text(re.compile(r"Decompose cancelled after \d+ s")).first.wait_for(
        timeout=PLANNER_MS
    )
    _settled(page)
    assert _progress_box(page).count() == 0
    assert page.get_by_text("Import / plan as JSON").count() == 0  # no plan
    [decomposition] = ui_server.workspace.traces.runs(kinds=("decompose",))
    assert decomposition["status"] == "cancelled"
    assert page.get_by_role("button", name="Decompose", exact=True).is_enabled()

    # -- Expand a one-node plan to the end -------------------------------------------------------
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    _click(page, "Expand with planner")
    box = _progress_box(page)
    box.wait_for(timeout=PLANNER_MS)
    box.get_by_text(re.compile(r"running for \d+ s")).first.wait_for()
    assert box.get_by_role("button", name="Cancel", exact=True).count() == 1
    # the other planner buttons wait for this one
    assert page.get_by_role("button", name="Re-plan subtree", exact=True).is_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-planner-progress.png"))
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOTS / "planner-progress.png"))
    page.get_by_text(re.compile(r"Expand root finished in \d+ s")).first.wait_for(
        timeout=PLANNER_MS
    )
    children = plan_json(page)["root"]["children"]
    assert 2 <= len(children) <= 6, "the bundled model's split of the shipped task was unusable"
    [expansion] = ui_server.workspace.traces.runs(kinds=("expand",))
    assert expansion["status"] == "completed"
    page.close()
