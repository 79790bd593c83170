"""The playground in a real browser: a one-node plan is run, its Playground opened with two
variants (the second with a new instruction), both run side by side on the real bundled model,
and the second applied to the node. The screenshot is the README's
(assets/screenshots/playground.png, rewritten only with ARBOR_UPDATE_SCREENSHOTS=1 so a test
run leaves the tree clean)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, _click, _settled, wait_for_plan

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"
TASK = "What is the capital of Japan?"
NEW_INSTRUCTION = "Name the capital of Japan in one word."


def _open_expander(page, title: str) -> None:
    _settled(page)
    summary = page.locator("details > summary").filter(has_text=re.compile(rf"{title}$")).first
    if summary.locator("xpath=..").get_attribute("open") is None:
        summary.click()


def test_two_variants_run_side_by_side_and_one_is_applied(browser, ui_server):
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.set_default_timeout(90_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    _click(page, "Run plan")
    page.get_by_role("heading", name="Answer").wait_for(timeout=400_000)

    _open_expander(page, "Playground")
    instruction = page.locator(".st-key-pg_root_v1_instruction textarea")
    instruction.wait_for()
    instruction.fill(NEW_INSTRUCTION)
    instruction.press("Tab")  # a text area sends its value when it loses focus
    _settled(page)
    _click(page, "Run variants")
    apply = page.get_by_role("button", name="Apply variant 2 to the node", exact=True)
    apply.wait_for(timeout=400_000)
    page.get_by_role("button", name="Apply variant 1 to the node", exact=True).wait_for()
    _settled(page)
    facts = page.get_by_text("tokens in,")
    assert facts.count() >= 2  # tokens, seconds and cost under each variant
    ARTIFACTS.mkdir(exist_ok=True)
    apply.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-playground.png"), full_page=True)
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":  # the README's copy, on request only
        playground = page.locator("details").filter(
            has=page.locator("summary").filter(has_text=re.compile("Playground$"))
        )
        playground.first.screenshot(path=str(SCREENSHOTS / "playground.png"))
    runs = ui_server.workspace.traces.runs(kinds=("playground",))
    assert len(runs) == 1 and runs[0]["status"] in {"completed", "failed"}
    calls = ui_server.workspace.traces.model_calls(runs[0]["run_id"])
    assert sorted(call["node_id"] for call in calls) == ["root@v1", "root@v2"]
    assert all(call["output"].strip() for call in calls)

    _click(page, "Apply variant 2 to the node")
    plan = wait_for_plan(page, lambda p: p["root"]["instruction"] == NEW_INSTRUCTION)
    assert plan["root"]["instruction"] == NEW_INSTRUCTION
    _click(page, "Undo")
    plan = wait_for_plan(page, lambda p: p["root"]["instruction"] != NEW_INSTRUCTION)
    assert plan["root"]["instruction"] != NEW_INSTRUCTION
    page.close()
