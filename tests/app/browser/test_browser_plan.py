"""Plan authoring in a real browser: expand a node, add a dependency, refuse a cycle, undo."""

from __future__ import annotations

import re

import pytest

from tests.support.browser import ARTIFACTS, _choose, _click, _settled, plan_json, wait_for_plan

pytestmark = pytest.mark.browser

TASK = "Organise a book swap for the families on our street."


def test_expand_add_dependency_refuse_cycle_and_undo_in_a_real_browser(browser, ui_server):
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()

    _click(page, "Expand with planner")
    page.get_by_text(re.compile(r"expand root(: done|: the planner)")).wait_for(timeout=240_000)
    children = plan_json(page)["root"]["children"]
    assert 2 <= len(children) <= 6, "the bundled model's split of the shipped task was unusable"
    # Two subtasks not linked yet; the planner may already have made a later one use an earlier.
    free = [
        (i, j)
        for i in range(len(children))
        for j in range(i + 1, len(children))
        if children[i]["id"] not in children[j]["depends_on"]
        and children[j]["id"] not in children[i]["depends_on"]
    ]
    i, j = free[0] if free else (0, 1)
    first, second = children[i]["id"], children[j]["id"]
    ARTIFACTS.mkdir(exist_ok=True)
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "browser-plan-expanded.png"), full_page=True)

    if free:
        _choose(page, "Node", f"{second}:")
        _click(page, "Add dependency…")
        _choose(page, f"{second} uses the output of", f"{first}:")
        _click(page, "Add edge")
        # Streamlit's markdown draws "<-" as an arrow.
        page.get_by_text(re.compile(rf"add dependency {second} (<-|←) {first}: done")).wait_for()
        plan = wait_for_plan(page, lambda p: first in p["root"]["children"][j]["depends_on"])
        assert first in plan["root"]["children"][j]["depends_on"]
    else:  # the planner linked the only two subtasks itself: second already uses first
        assert first in children[j]["depends_on"]

    _choose(page, "Node", f"{first}:")
    _click(page, "Add dependency…")
    _choose(page, f"{first} uses the output of", f"{second}:")
    _click(page, "Add edge")
    refusal = page.get_by_text(re.compile("dependency cycle"))
    refusal.wait_for()
    assert first in refusal.inner_text() and second in refusal.inner_text()
    _settled(page)
    refusal.scroll_into_view_if_needed()  # the refusal sits right above the plan graph
    page.screenshot(path=str(ARTIFACTS / "browser-plan-cycle-refused.png"), full_page=True)
    assert second not in plan_json(page)["root"]["children"][i]["depends_on"]

    _click(page, "Undo")
    page.get_by_text("Undone.").wait_for()
    if free:  # the added edge is undone
        plan = wait_for_plan(page, lambda p: first not in p["root"]["children"][j]["depends_on"])
        assert first not in plan["root"]["children"][j]["depends_on"]
    else:  # the last edit was the expansion
        plan = wait_for_plan(page, lambda p: p["root"]["children"] == [])
        assert plan["root"]["children"] == []
    page.close()
