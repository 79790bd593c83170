"""Annotations and the flame graph in a real browser, on a run of the bundled model.

The Inspector opens on the recorded run; in Node detail the analyst labels a node bad with a
note and saves; the annotation is listed under the node and stored; the Timeline view's flame
graph then marks that node (its tooltip data carries the badge). The flame graph's screenshot is
the README's (assets/screenshots/flame-graph.png, rewritten only with
ARBOR_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from engine.plan import GenerationConfig, Node, Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from storage.sessions import ArborSession
from tests.support.browser import ARTIFACTS, _settled

pytestmark = [pytest.mark.browser, pytest.mark.model]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"


def _plan() -> Plan:
    return Plan(
        task="Describe autumn in three short facts.",
        root=Node(
            id="root",
            title="Summary",
            instruction="Combine the facts below into one sentence.",
            children=[
                Node(id="colour", title="Colours", instruction="Name a colour of autumn leaves."),
                Node(
                    id="weather",
                    title="Weather",
                    instruction="Describe autumn weather in five words.",
                    strategy=strategy_from_spec("sc3"),
                ),
                Node(id="food", title="Harvest", instruction="Name a fruit harvested in autumn."),
            ],
        ),
        default_generation=GenerationConfig(
            max_tokens=12, temperature=0.7, seed=11, prompt_format="completion"
        ),
    )


def _combobox(page, label: str, text: str) -> None:
    _settled(page)
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.fill(text)
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()
    _settled(page)


def test_annotate_a_node_bad_and_see_it_in_the_list_and_the_flame_graph(browser, ui_server):
    ws = ui_server.workspace
    plan = _plan()
    session = ws.sessions.save(ArborSession(name="Autumn", task=plan.task, plan=plan))
    run = ws.run_plan(plan, RunCaps(max_parallel=2), session_id=session.id)
    assert run.answered, run.stop_reason

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/inspector_page")
    page.get_by_role("heading", name="Inspector").first.wait_for()
    _combobox(page, "Run to inspect", run.run_id[-6:])
    page.locator('[data-testid="stButtonGroup"]').first.get_by_text(
        "Node detail", exact=True
    ).click()
    _combobox(page, "Node", "weather")

    page.get_by_text("Annotate this node", exact=False).first.click()
    _settled(page)
    # a segmented control is a radio group of buttons
    page.get_by_role("radiogroup", name="Label").get_by_role("radio", name="bad").click()
    page.get_by_label("Note").fill("rambles instead of five words")
    page.get_by_label("Note").blur()
    _settled(page)
    page.get_by_role("button", name="Save annotation").click()
    _settled(page)
    expect(page.get_by_text(re.compile(r"Saved: node weather is bad"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Annotate this node · bad"))).to_be_visible()
    stored = ws.traces.annotations(run.run_id)
    assert [(a["node_id"], a["label"], a["note"]) for a in stored] == [
        ("weather", "bad", "rambles instead of five words")
    ]

    page.locator('[data-testid="stButtonGroup"]').first.get_by_text("Timeline", exact=True).click()
    _settled(page)
    flame = page.locator('[data-testid="stVegaLiteChart"]').nth(1)
    flame.wait_for()
    expect(page.get_by_text("Flame graph", exact=True)).to_be_visible()
    # hover a bar of the annotated node: the tooltip names the node and its badge
    flame.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    ARTIFACTS.mkdir(exist_ok=True)
    flame.screenshot(path=str(ARTIFACTS / "browser-flame-graph.png"))
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":
        flame.screenshot(path=str(SCREENSHOTS / "flame-graph.png"))
    box = flame.locator("canvas, svg").first.bounding_box()
    assert box is not None and box["height"] >= 4 * 28 - 10  # run, nodes, samples, calls
    found = False
    tooltip = page.locator("#vg-tooltip-element")
    # scan the chart for a bar of node weather (rows are 28 px; nodes may be stacked)
    for y in range(7, int(box["height"]), 14):
        for step in range(1, 24):
            page.mouse.move(box["x"] + box["width"] * step / 24, box["y"] + y)
            page.wait_for_timeout(40)
            text = tooltip.inner_text() if tooltip.count() and tooltip.is_visible() else ""
            if "weather" in text and "invoke_agent" in text:
                assert "bad" in text, text
                found = True
                break
        if found:
            break
    assert found, "no flame graph bar of node weather answered the hover"
    page.close()
