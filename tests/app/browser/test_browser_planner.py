"""The planner's story in a real browser: Decompose with the bundled model shows its progress,
then "Why this plan" lists the candidates the planner considered (or the clarification a vague
task gets), and the decomposition is a planner run in the trace store.

Needs Debian's chromium; skips without it except under CI=true (see test_browser.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def test_decompose_explains_why_this_plan_in_a_real_browser(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill("Plan a picnic for six friends in a city park.")
    page.get_by_role("button", name="Decompose").click()

    why = page.get_by_text("Why this plan")
    clarification = page.get_by_text("For example (click one to put it in the task box)")
    why.or_(clarification).first.wait_for(timeout=300_000)
    [decomposition] = ui_server.workspace.traces.runs(kinds=("decompose",))
    assert decomposition["status"] in {"completed", "fallback", "needs_detail"}
    if why.count():
        why.first.click()  # open the expander
        page.get_by_text("task language:").wait_for()
        page.get_by_text(f"Recorded as planner run {decomposition['run_id']}").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-why-this-plan.png"), full_page=True)
    assert ui_server.workspace.traces.runs(kinds=("execution",)) == []
    page.close()
