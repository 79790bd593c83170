"""The debugging loop in a real browser, on the bundled model, as an analyst walks it.

Decompose a task (and read "Why this plan"); set a breakpoint before the root; run; the run
pauses with the root's inputs and rendered prompt; edit the prompt; continue; label the answer
bad; fork from a leaf with a pinned fix; open the fork compared against the source run in the
Inspector; save the session.

What is checked against the trace store, not only the page: the edit is recorded and the root's
call carries it; the annotation is stored; the fork makes no call upstream of or beside the
leaf, none for the pinned leaf, and the root's prompt in the fork holds the pinned text.
"""

from __future__ import annotations

import json
import re
import time

import networkx as nx
import pytest
from playwright.sync_api import expect

from engine.plan import Plan
from storage.workspace import Workspace
from tests.support.browser import ARTIFACTS, _choose, _click, _settled, plan_json

pytestmark = [pytest.mark.browser, pytest.mark.model]

TASK = "Plan a picnic for six friends in a city park."
EDIT = "Answer in one short sentence:"
FIX = "Bring sandwiches, lemonade and a big blanket for six."


def _finished_run(data_dir, run_id: str, tries: int = 300) -> dict:
    """The run's row once it has finished (the UI's writer lets go of the store after it);
    polled once a second, ``tries`` times at most."""
    for _ in range(tries):
        try:
            record = Workspace(data_dir).traces.run(run_id)
        except Exception:  # the UI process holds the file for a moment: try again
            record = None
        if record and record["status"] not in ("running", "paused"):
            return record
        time.sleep(1.0)
    pytest.fail(f"run {run_id} did not finish")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-loop-{name}.png"), full_page=True)


def _wait_or_shoot(locator, page, name: str, timeout_ms: int) -> None:
    try:
        locator.wait_for(timeout=timeout_ms)
    except Exception:
        _shot(page, f"no-{name}")
        raise


def test_decompose_pause_edit_continue_annotate_fork_and_compare(browser, ui_server):
    data_dir = ui_server.data_dir
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.set_default_timeout(120_000)
    page.goto(ui_server.url)

    # -- decompose with the bundled model, then keep the calls short ---------------------------
    page.get_by_label("Task").fill(TASK)
    _click(page, "Decompose")
    graph = page.locator('[data-testid="stVegaLiteChart"]').first
    _wait_or_shoot(graph, page, "plan", 300_000)
    graph.locator("canvas, svg").first.wait_for()  # vega-embed has drawn the plan
    # "Why this plan": the planner's candidates, and the decomposition is a planner run
    [decomposition] = Workspace(data_dir).traces.runs(kinds=("decompose",))
    assert decomposition["status"] == "completed", decomposition["stop_reason"]
    page.get_by_text("Why this plan").first.click()
    page.get_by_text("task language:").wait_for()
    page.get_by_text(f"Recorded as planner run {decomposition['run_id']}").wait_for()
    _shot(page, "plan")
    plan = Plan.model_validate(plan_json(page))
    leaves = [node_id for node_id, node in plan.nodes().items() if not node.children]
    assert plan.root.children and leaves, plan
    node_cap = page.get_by_role("spinbutton", name="Output limit per call (tokens)")
    node_cap.fill("32")
    node_cap.press("Enter")
    _settled(page)

    # -- a breakpoint before the root; run; the pause shows the root's inputs and prompt ----------
    _choose(page, "Node", f"{plan.root.id}:")
    page.get_by_text("Pause before", exact=True).click()
    _settled(page)
    expect(page.get_by_role("switch", name="Pause before")).to_be_checked()
    _click(page, "Debug run")
    paused = page.get_by_text(re.compile(r"^Paused before")).first
    _wait_or_shoot(paused, page, "pause", 600_000)
    _settled(page)
    assert plan.root.id in paused.inner_text()
    inputs = page.get_by_text(re.compile(r"^Input from "))
    expect(inputs).to_have_count(len(plan.root.children) + len(plan.root.depends_on))
    prompt = page.get_by_label("Prompt", exact=True)
    assert prompt.input_value().strip(), "the paused root shows its rendered prompt"
    prompt.fill(prompt.input_value() + "\n" + EDIT)
    prompt.blur()
    _settled(page)
    _shot(page, "paused")
    _click(page, "Continue")

    finished = page.get_by_text(re.compile(r"^Run run-\d{8}-\d{6}-\w+: (completed|suspect)"))
    _wait_or_shoot(finished, page, "answer", 300_000)
    source_id = re.search(r"run-\d{8}-\d{6}-\w+", finished.inner_text()).group(0)
    source = _finished_run(data_dir, source_id)
    assert source["answer"] and source["answer"].strip()
    edits = json.loads(source["edits"])
    assert [(e["node_id"], e["field"]) for e in edits] == [(plan.root.id, "prompt")]
    root_calls = [
        c for c in Workspace(data_dir).traces.model_calls(source_id) if c["node_id"] == plan.root.id
    ]
    assert root_calls and EDIT in root_calls[0]["prompt"]

    # -- label the answer bad ------------------------------------------------------------------
    _settled(page)
    page.get_by_text(re.compile(rf"^Annotate node {re.escape(plan.root.id)}:")).click()
    inner = page.get_by_text("Annotate this node", exact=True)
    inner.click()
    _settled(page)
    page.get_by_role("radiogroup", name="Label").get_by_role("radio", name="bad").click()
    page.get_by_label("Note", exact=True).fill("a list of steps, not a plan")
    page.get_by_label("Note", exact=True).blur()
    _click(page, "Save annotation")
    expect(
        page.get_by_text(re.compile(rf"Saved: node {re.escape(plan.root.id)} is bad"))
    ).to_be_visible()
    stored = Workspace(data_dir).traces.annotations(source_id)
    assert [(a["node_id"], a["label"]) for a in stored] == [(plan.root.id, "bad")]

    # -- fork from a leaf with its output pinned to a fix ------------------------------------------
    leaf = leaves[0]
    _choose(page, "Node", f"{leaf}:")
    page.get_by_text(f"Fork from {leaf}", exact=True).first.click()
    _settled(page)
    page.get_by_label("Output (pins it; leave empty to run the node)").fill(FIX)
    page.get_by_label("Output (pins it; leave empty to run the node)").blur()
    _click(page, f"Fork from {leaf}")
    summary = page.get_by_text(re.compile(rf"^Forked {re.escape(source_id)} at {re.escape(leaf)}:"))
    _wait_or_shoot(summary, page, "fork", 300_000)
    _shot(page, "forked")

    fork_id = Workspace(data_dir).traces.runs(limit=1)[0]["run_id"]
    fork = _finished_run(data_dir, fork_id)
    assert fork["forked_from"] == source_id and fork["forked_at_node"] == leaf
    graph_of_plan = Plan.from_json(fork["plan_json"]).validate_graph()
    downstream = nx.descendants(graph_of_plan, leaf)
    calls = Workspace(data_dir).traces.model_calls(fork_id)
    called = {c["node_id"] for c in calls}
    assert called <= downstream, f"calls beside or upstream of {leaf}: {called - downstream}"
    assert plan.root.id in called
    root_prompt = next(c["prompt"] for c in calls if c["node_id"] == plan.root.id)
    assert FIX in root_prompt, "the root's prompt in the fork holds the pinned fix"
    nodes = {row["node_id"]: row for row in Workspace(data_dir).traces.node_executions(fork_id)}
    assert nodes[leaf]["output"] == FIX
    assert nodes[leaf]["pinned"]
    counts = re.search(r"(\d+) nodes reused, (\d+) model call", summary.inner_text())
    beside = set(graph_of_plan) - downstream - {leaf}
    assert counts and (int(counts.group(1)), int(counts.group(2))) == (len(beside), len(calls))

    # -- compare in the Inspector: both runs, the changed leaf, the annotation -------------------
    _click(page, "Compare in the Inspector")
    page.get_by_role("heading", name="Inspector").first.wait_for()
    _settled(page)
    both = re.compile(rf"A: .*{re.escape(source_id)}.*B: .*{re.escape(fork_id)}", re.S)
    expect(page.get_by_text(both)).to_be_visible()
    expect(page.get_by_text(re.compile(rf"Annotated: `?{re.escape(plan.root.id)}"))).to_be_visible()
    _shot(page, "compare")

    # -- save the session: its plan, its caps and both runs --------------------------------------
    page.get_by_role("link", name="Workbench").first.click()
    _click(page, "Save session")
    page.get_by_text("Saved session").wait_for()
    [saved] = Workspace(data_dir).sessions.list()
    assert saved.task == TASK and saved.plan is not None
    assert saved.caps.max_tokens_per_node == 32
    assert {source_id, fork_id} <= set(saved.run_ids)
    assert saved.break_before == [plan.root.id]
    page.close()
