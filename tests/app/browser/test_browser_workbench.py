"""The workbench as a daily tool, in a real browser: every editing action applies on the first
click right after another one (and an edge that would close a cycle is refused), and the page
holds at 800 and 1440 px (issue 19)."""

from __future__ import annotations

import re

import pytest

from tests.support.browser import ARTIFACTS, _choose, _click, _settled, wait_for_plan

pytestmark = pytest.mark.browser

TASK = "Organise a book swap for the families on our street."


def _children(plan: dict) -> list[dict]:
    return plan["root"]["children"]


def _ids(plan: dict) -> list[str]:
    return [child["id"] for child in _children(plan)]


def _picked(page) -> str:
    """The node id the "Node" picker shows (its options read "id: title")."""
    _settled(page)
    value = page.get_by_role("combobox", name="Node", exact=True).input_value()
    return value.split(":", 1)[0]


def _expect(page, description: str, check) -> dict:
    """The plan once ``check`` holds; fails with ``description`` if it never does."""
    plan = wait_for_plan(page, check, timeout_s=30)
    assert check(plan), f"{description}: not applied on the first click; plan is {plan}"
    return plan


def _apply_title(page, title: str) -> None:
    _settled(page)
    page.get_by_role("textbox", name="Title", exact=True).fill(title)
    _click(page, "Apply changes")


def _click_graph_node(page, node_id: str) -> None:
    _settled(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.locator(f'path[aria-roledescription="point"][aria-label*="id: {node_id};"]').click()


def test_each_edit_applies_on_the_first_click_and_keeps_the_selection(browser, ui_server):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()

    _click(page, "Add child")
    plan = _expect(page, "add child", lambda p: len(_children(p)) == 1)
    first = _ids(plan)[0]
    assert _picked(page) == first

    # The reported sequence: Apply changes, then Add sibling at once.
    _apply_title(page, "Collect the books")
    _expect(page, "apply", lambda p: _children(p)[0]["title"] == "Collect the books")
    assert _picked(page) == first
    _click(page, "Add sibling")
    plan = _expect(page, "add sibling after apply", lambda p: len(_children(p)) == 2)
    second = _ids(plan)[1]
    assert _picked(page) == second

    _apply_title(page, "Pick a date")
    _expect(page, "apply on the sibling", lambda p: _children(p)[1]["title"] == "Pick a date")
    _click(page, "Duplicate")
    plan = _expect(page, "duplicate after apply", lambda p: len(_children(p)) == 3)
    duplicate = _ids(plan)[2]
    assert _picked(page) == duplicate

    _click(page, "Move up")
    _expect(page, "move up", lambda p: _ids(p) == [first, duplicate, second])
    assert _picked(page) == duplicate
    _click(page, "Move down")
    _expect(page, "move down right after move up", lambda p: _ids(p) == [first, second, duplicate])

    _click(page, "Add dependency…")
    _choose(page, f"{duplicate} uses the output of", f"{first}:")
    _click(page, "Add edge")
    _expect(page, "add edge", lambda p: _children(p)[2]["depends_on"] == [first])
    _apply_title(page, "Announce the swap")
    _expect(page, "apply after add edge", lambda p: _children(p)[2]["title"] == "Announce the swap")

    # The edge back would close a cycle: refused in one line next to the graph, plan unchanged.
    _choose(page, "Node", f"{first}:")
    _click(page, "Add dependency…")
    _choose(page, f"{first} uses the output of", f"{duplicate}:")
    _click(page, "Add edge")
    refusal = page.get_by_text(re.compile("dependency cycle"))
    refusal.wait_for()
    assert first in refusal.inner_text() and duplicate in refusal.inner_text()
    _settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-plan-cycle-refused.png"), full_page=True)
    _expect(page, "no edge back", lambda p: _children(p)[0]["depends_on"] == [])

    # A click on the graph selects; a click on a node picked before (then left) selects again.
    _click_graph_node(page, first)
    page.get_by_role("textbox", name="Title", exact=True).wait_for()
    assert _wait_picked(page, first)
    _choose(page, "Node", f"{second}:")
    assert _picked(page) == second
    _click_graph_node(page, first)
    assert _wait_picked(page, first), "a second click on the same graph node was swallowed"

    _click(page, "Delete subtree")
    _expect(page, "delete", lambda p: _ids(p) == [second, duplicate])
    _click(page, "Undo")
    _expect(page, "undo right after delete", lambda p: _ids(p) == [first, second, duplicate])
    _click(page, "Redo")
    _expect(page, "redo right after undo", lambda p: _ids(p) == [second, duplicate])
    # Nothing the page said was an error.
    assert page.get_by_text(re.compile("Not applied")).count() == 0
    page.close()


def _wait_picked(page, node_id: str, tries: int = 40) -> bool:
    for _ in range(tries):
        if _picked(page) == node_id:
            return True
        page.wait_for_timeout(250)
    return False


def _layout_facts(page) -> dict:
    return page.evaluate(
        """() => {
        const main = document.querySelector('[data-testid="stMain"]');
        const sidebar = document.querySelector('[data-testid="stSidebar"]');
        // The graph as drawn: the chart's box cut by every ancestor that clips overflow.
        const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
        const graphRect = (() => {
            const r = chart.getBoundingClientRect();
            let {left, right, top, bottom} = r;
            for (let el = chart.parentElement; el; el = el.parentElement) {
                const cs = getComputedStyle(el);
                if (cs.overflowX !== 'visible') {
                    const c = el.getBoundingClientRect();
                    left = Math.max(left, c.left); right = Math.min(right, c.right);
                }
                if (cs.overflowY !== 'visible') {
                    const c = el.getBoundingClientRect();
                    top = Math.max(top, c.top); bottom = Math.min(bottom, c.bottom);
                }
            }
            return {left, right, top, bottom};
        })();
        const editor = [...document.querySelectorAll('[data-testid="stForm"]')]
            .find(form => form.innerText.includes('Edit node'));
        const box = (el) => { const r = el.getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
        const cut = [...document.querySelectorAll('button [data-testid="stMarkdownContainer"]')]
            .filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
            .map(el => el.innerText);
        return {
            sideways: main.scrollWidth - main.clientWidth,
            sidebarCollapsed: sidebar.getAttribute('data-collapsed') === 'true',
            graph: graphRect, editor: box(editor), cutButtons: cut,
        };
    }"""
    )


@pytest.mark.parametrize("width", [800, 1440])
def test_the_workbench_holds_at_800_and_1440_px(browser, ui_server, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    for _ in range(3):  # a chain three deep: the graph is wider than a narrow column
        _click(page, "Add child")
    _expect(page, "three children", lambda p: len(_children(p)) == 1)
    _settled(page)
    facts = _layout_facts(page)

    assert facts["sideways"] <= 1, f"the page scrolls sideways at {width} px: {facts}"
    assert facts["cutButtons"] == [], f"button labels cut at {width} px: {facts['cutButtons']}"
    graph, editor = facts["graph"], facts["editor"]
    overlap = not (
        graph["right"] <= editor["left"] + 1
        or editor["right"] <= graph["left"] + 1
        or graph["bottom"] <= editor["top"] + 1
        or editor["bottom"] <= graph["top"] + 1
    )
    assert not overlap, f"the graph overlaps the node editor at {width} px: {facts}"
    if width <= 1000:
        assert facts["sidebarCollapsed"], "the sidebar stays open on a narrow window"
        assert graph["bottom"] <= editor["top"] + 1, "graph and editor should stack"
    else:
        assert not facts["sidebarCollapsed"], "the sidebar folded on a wide window"
        assert graph["right"] <= editor["left"] + 1, "graph and editor should sit side by side"
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator('[data-testid="stVegaLiteChart"]').first.scroll_into_view_if_needed()
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / f"browser-workbench-{width}.png"))
    page.close()


def _fifty_node_plan_json() -> str:
    """Seven subtasks of six steps each (50 nodes) with long titles and dependency edges."""
    from engine.plan import Node, Plan

    areas = []
    for i in range(7):
        steps = [
            Node(
                id=f"s{i}_{j}",
                title=f"Step {j} of area {i}: gather, compare and summarise the evidence",
                depends_on=[f"s{i}_{j - 1}"] if j % 2 else [],
            )
            for j in range(6)
        ]
        areas.append(
            Node(
                id=f"a{i}",
                title=f"Area {i} of the market study for a neighbourhood bakery",
                children=steps,
                depends_on=[f"a{i - 1}"] if i else [],
            )
        )
    plan = Plan(task="A market study", root=Node(id="root", title="Market study", children=areas))
    assert len(plan.nodes()) == 50
    return plan.to_json()


def test_a_fifty_node_plan_is_readable(browser, ui_server, tmp_path):
    plan_file = tmp_path / "fifty.json"
    plan_file.write_text(_fifty_node_plan_json(), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill("A market study")
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    details = page.locator('[data-testid="stExpander"] details').filter(
        has=page.get_by_text("Import / plan as JSON")
    )
    details.locator("summary").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(plan_file))
    _click(page, "Import plan")
    _expect(page, "import", lambda p: len(_children(p)) == 7)
    _settled(page)
    page.get_by_text("Graph full width", exact=True).click()  # a segmented control
    page.locator(".st-key-plan_area .st-key-plan_graph_box").wait_for()
    _settled(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    points = chart.locator('path[aria-roledescription="point"]')
    assert points.count() == 50
    boxes = [points.nth(i).bounding_box() for i in range(50)]
    for i, first in enumerate(boxes):  # no node drawn over another
        for second in boxes[i + 1 :]:
            apart = (
                first["x"] + first["width"] <= second["x"] + 0.5
                or second["x"] + second["width"] <= first["x"] + 0.5
                or first["y"] + first["height"] <= second["y"] + 0.5
                or second["y"] + second["height"] <= first["y"] + 0.5
            )
            assert apart, f"two nodes overlap: {first} {second}"
    # Every node has a label with its id; long titles are abbreviated, the full one on hover.
    labels = chart.locator("text").evaluate_all("els => els.map(el => el.textContent)")
    for node_id in ["root", "a0", "a6", "s0_0", "s6_5"]:
        assert any(label.startswith(f"{node_id}: ") for label in labels), node_id
    assert any(label.endswith("…") for label in labels)
    # Ten-pixel type or larger, and the graph box scrolls rather than growing past the window.
    sizes = chart.locator("text").evaluate_all(
        "els => els.map(el => parseFloat(getComputedStyle(el).fontSize))"
    )
    assert min(sizes) >= 10
    box = page.locator(".st-key-plan_graph_box").bounding_box()
    assert box["height"] <= 0.8 * 900
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".st-key-plan_graph_box").scroll_into_view_if_needed()
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "browser-workbench-50-nodes.png"))
    page.close()
