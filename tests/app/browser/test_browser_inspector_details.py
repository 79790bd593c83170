"""Issue 19.7 in a real browser: the Inspector's runs table leads with the key facts (name,
status, local start, duration, calls, tokens, cost, nodes) in view at 1400 px, with no "None"
and no "+00:00"; a run is named and tagged from the page and the table filters by tag; the cost
view of a free run opens on tokens; the compare diff keeps one line per line.

The runs come from the executor with the in-process fake model (what is under test is the page,
not the model), written by the real TraceWriter into the served data directory. The screenshot
is the README's (assets/screenshots/inspector-runs.png, rewritten only with
ARBOR_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from tests.support.browser import ARTIFACTS, _choose, _click, _settled
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

pytestmark = [pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"
SPEC = {"id": "root", "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]}
KEY_COLUMNS = ["Name", "Status", "Started", "Duration (s)", "Calls", "Tokens", "Cost ($)", "Nodes"]


def _run(ws, outputs: dict[str, str]):
    plan = fake_models(tree(SPEC, task="Why we use this product?"))
    plan.node("b").strategy = strategy_from_spec("sc3")
    factory, _ = fake_factory({n: Behaviour(output=t, sleep_s=0.01) for n, t in outputs.items()})
    with ws.traces.writer() as writer:
        return execute_plan(
            plan, RunCaps(max_parallel=2), backend_factory=factory, listeners=[writer]
        )


def _grid(page):
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.locator('[role="columnheader"]').first.wait_for(state="attached")
    return grid


def _headers(page) -> list[str]:
    """The runs table's rendered column headers: the grid draws only the columns in view."""
    cells = _grid(page).locator('[role="columnheader"]')
    return [(text or "").strip() for text in cells.all_text_contents()]


def _cells(page) -> list[str]:
    return [(t or "").strip() for t in _grid(page).locator('[role="gridcell"]').all_text_contents()]


def _rows(page) -> int:
    return int(_grid(page).locator('[role="grid"]').get_attribute("aria-rowcount") or 0) - 1


def _view(page, name: str) -> None:
    _settled(page)
    page.locator('[data-testid="stButtonGroup"]').first.get_by_text(name, exact=True).click()
    _settled(page)


def test_runs_table_names_tags_costs_and_diff(browser, ui_server):
    ws = ui_server.workspace
    first = _run(ws, {"a": "A", "b": "B1"})
    assert first.status == "completed"
    second = _run(ws, {"a": "A", "b": "B2\nmore"})

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/inspector_page")
    page.get_by_role("heading", name="Inspector").first.wait_for()
    _settled(page)

    # -- key columns first, in view, local time, no None ------------------------------------
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    headers = [h for h in _headers(page) if h]
    assert headers[: len(KEY_COLUMNS)] == KEY_COLUMNS, headers
    cells = _cells(page)
    assert not any(cell == "None" or "+00:00" in cell for cell in cells), cells
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cell) for cell in cells), cells
    assert _rows(page) == 2

    # -- name and tag the newest run ----------------------------------------------------------
    page.get_by_text(re.compile("^Name and tags: unnamed")).click()
    page.get_by_role("textbox", name="Run name").fill("Baseline run")
    page.get_by_role("textbox", name="Tags (comma-separated)").fill("Baseline, prompt v2")
    page.get_by_role("textbox", name="Tags (comma-separated)").press("Enter")
    _click(page, "Save")
    _settled(page)
    expect(page.get_by_text("Name and tags: Baseline run · baseline, prompt-v2")).to_be_visible()
    labels = ws.traces.run_labels()
    assert labels[second.run_id].name == "Baseline run", labels
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"] [role=gridcell]')]"
        ".some(c => c.textContent.trim() === 'Baseline run')"
    )
    _shot(page, "inspector-runs")

    # -- the cost view of a free run opens on tokens ------------------------------------------
    _view(page, "Cost per node")
    expect(page.get_by_role("radio", name="tokens")).to_be_checked()

    # -- the compare diff: one line per line ------------------------------------------------
    _view(page, "Compare")
    box = page.get_by_role("combobox", name="Output diff of node", exact=True)
    if not (box.input_value() or "").startswith("b · "):
        _choose(page, "Output diff of node", "b · ")
    _settled(page)
    diff = page.locator('[data-testid="stCode"]').filter(has_text="+more").first
    lines = [line.strip() for line in diff.inner_text().splitlines()]
    assert "-B1" in lines and "+B2" in lines, lines

    # -- filter by tag -----------------------------------------------------------------------
    tags = page.get_by_role("combobox", name="Tags", exact=True)
    tags.click()
    page.get_by_role("option", name="baseline", exact=True).click()
    page.keyboard.press("Escape")
    _settled(page)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stDataFrame\"] [role=grid]')"
        "?.getAttribute('aria-rowcount') === '2'"
    )
    assert _rows(page) == 1
    page.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"))
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
