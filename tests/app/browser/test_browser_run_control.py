"""Breakpoints in a real browser: pause before the root, see its prompt, edit it, continue."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from storage.workspace import Workspace
from tests.support.browser import ARTIFACTS, _choose, _click, _settled

pytestmark = pytest.mark.browser

TASK = "Name two colours."
EDIT = "Answer with the two colour names only:"


def _stored_run(data_dir, run_id: str, timeout_s: float = 240) -> dict:
    """The run's row once it has finished (the UI's writer lets go of the store after it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            record = Workspace(data_dir).traces.run(run_id)
        except Exception:  # the UI process holds the file for a moment: try again
            record = None
        if record and record["status"] not in ("running", "paused"):
            return record
        assert time.monotonic() < deadline, f"run {run_id} did not finish"
        time.sleep(1.0)


@pytest.mark.model
def test_pause_before_the_root_edit_its_prompt_and_continue(browser, ui_server):
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.set_default_timeout(120_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill(TASK)
    _click(page, "Start from a one-node plan")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    _click(page, "Add child")
    _choose(page, "Node", "root:")
    _click(page, "Add child")
    _choose(page, "Node", "root:")

    _settled(page)
    page.get_by_text("Pause before", exact=True).click()
    _settled(page)
    expect(page.get_by_role("switch", name="Pause before")).to_be_checked()
    _click(page, "Debug run")

    # the children run first (two calls of the bundled model); the pause then shows
    paused = page.get_by_text(re.compile(r"^Paused before")).first
    try:
        paused.wait_for(timeout=600_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-run-control-no-pause.png"), full_page=True)
        raise
    _settled(page)
    assert "root" in paused.inner_text()
    prompt = page.get_by_label("Prompt", exact=True)
    assert prompt.input_value().strip(), "the paused root shows its rendered prompt"
    assert page.get_by_text(re.compile(r"^Input from ")).count() == 2  # its two children
    prompt.fill(prompt.input_value() + "\n" + EDIT)
    prompt.blur()
    _settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-run-control-paused.png"), full_page=True)
    _click(page, "Continue")

    expect(page.get_by_text(re.compile(r"^Paused before"))).to_have_count(0, timeout=120_000)
    run_id = page.evaluate(
        "() => [...document.querySelectorAll('code')].map(c => c.innerText)"
        ".find(t => /^run-\\d{8}-/.test(t)) || null"
    )
    data_dir = ui_server.data_dir
    runs = Workspace(data_dir).traces.runs(limit=5) if run_id is None else None
    run_id = run_id or runs[0]["run_id"]
    record = _stored_run(data_dir, run_id)
    assert record["status"] in ("completed", "suspect"), record["stop_reason"]
    assert record["answer"] and record["answer"].strip()
    edits = json.loads(record["edits"])
    assert [(e["node_id"], e["field"]) for e in edits] == [("root", "prompt")]
    calls = Workspace(data_dir).traces.model_calls(run_id)
    root_prompts = [c["prompt"] for c in calls if c["node_id"] == "root"]
    assert root_prompts and EDIT in root_prompts[0]
    page.close()
