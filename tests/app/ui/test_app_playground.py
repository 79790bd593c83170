"""The playground panel under Streamlit's AppTest, on the real bundled model: the root's prompt
shows its child's recorded output, two variants run in the background side by side, and the
second one (a new instruction) is applied to the node, undoably."""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from engine.plan import Node, Plan
from engine.prompts import DEFAULT_ROOT_INSTRUCTION
from engine.run.budget import RunCaps
from storage.workspace import Workspace
from tests.support.apptest import choice

pytestmark = pytest.mark.model

NEW_INSTRUCTION = "Name the capital of Japan in one word."


def _script() -> None:
    import os

    import streamlit as st

    from app.ui.playground import playground_panel
    from engine.plan import Plan
    from engine.plan.history import PlanHistory
    from storage.sessions import ArborSession
    from storage.workspace import Workspace

    ws = Workspace(os.environ["ARBOR_DATA_DIR"])
    run_id = os.environ["PG_RUN"]
    if "session" not in st.session_state:
        record = ws.traces.run(run_id)
        plan = Plan.from_json(record["plan_json"])
        st.session_state.session = ArborSession(plan=plan)
        st.session_state.history = PlanHistory(plan)
    session = st.session_state.session

    def apply_edit(label, edit):
        session.plan = st.session_state.history.apply(edit(), label)
        return True

    playground_panel(ws, session, run_id, "root", apply_edit)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    data = tmp_path_factory.mktemp("pg-app-data")
    plan = Plan(
        task="Name the capital of Japan.",
        root=Node(
            id="root",
            title="Capital of Japan",
            instruction=DEFAULT_ROOT_INSTRUCTION,
            children=[Node(id="s1", title="Capital", instruction="What is the capital of Japan?")],
        ),
    )
    result = Workspace(data).run_plan(plan, RunCaps(max_tokens_per_node=24))
    return data, result.run_id


def _wait_for(at: AppTest, label: str, timeout: float = 300) -> None:
    """Rerun the page until a button labelled ``label`` shows (the fragment's polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(button.label == label for button in at.button):
            return
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
    raise AssertionError(f"no {label!r} button after {timeout} s")


def test_two_variants_run_side_by_side_and_one_is_applied(recorded, monkeypatch):
    data, run_id = recorded
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    monkeypatch.setenv("PG_RUN", run_id)
    child_output = next(
        row["output"]
        for row in Workspace(data).traces.node_executions(run_id)
        if row["node_id"] == "s1"
    )
    at = AppTest.from_function(_script, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    prompts = [box.value for box in at.text_area if box.label.startswith("Prompt")]
    assert prompts and child_output.strip() in prompts[0]  # upstream from the recorded run
    assert at.number_input(key="pg_root_count").value == 2
    at.text_area(key="pg_root_v1_instruction").input(NEW_INSTRUCTION)
    at.run()
    # the second variant's prompt is rendered from its new instruction
    assert any(
        NEW_INSTRUCTION in box.value for box in at.text_area if box.label.startswith("Prompt")
    )
    at.button(key="pg_root_run").click().run()
    _wait_for(at, "Apply variant 2 to the node")
    outputs = [block.value for block in at.code]
    assert len([text for text in outputs if text.strip() and text != "(no output)"]) >= 2
    captions = " ".join(caption.value for caption in at.caption)
    assert "tokens in" in captions and "kind playground" in captions
    next(b for b in at.button if b.label == "Apply variant 2 to the node").click().run()
    session = at.session_state.session
    assert session.plan.node("root").instruction == NEW_INSTRUCTION
    history = at.session_state.history
    assert history.undo().node("root").instruction == DEFAULT_ROOT_INSTRUCTION


def test_a_call_in_the_inspector_opens_in_the_playground(recorded, monkeypatch):
    from pathlib import Path

    from storage.sessions import ArborSession

    data, run_id = recorded
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    ws = Workspace(data)
    call = next(c for c in ws.traces.model_calls(run_id) if c["node_id"] == "s1")
    plan = Plan.from_json(ws.traces.run(run_id)["plan_json"])
    main = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=60)
    at.session_state["session"] = ArborSession(plan=plan, run_ids=[run_id])
    at.run()
    at.switch_page("ui/inspector_page.py").run()
    at.selectbox(key="inspect_run").set_value(run_id)
    at.segmented_control(key="inspector_view").set_value("Node detail").run()
    choice(at, "inspect_node").set_value("s1").run()
    assert not at.exception, at.exception
    at.button(key=f"pg_open_{call['call_id']}").click().run()
    assert not at.exception, at.exception
    prompts = [box.value for box in at.text_area if box.label.startswith("Prompt")]
    [recorded_prompt] = [message["content"] for message in json.loads(call["prompt"])]
    assert prompts == [recorded_prompt, recorded_prompt]  # each of the two variants' box
    assert "What is the capital of Japan?" in prompts[0]
    assert any(button.label == "Run variants" for button in at.button)
    seeds = [box.value for box in at.number_input if box.label == "Seed"]
    assert seeds[0] == (call["seed"] if call["seed"] is not None else 1)  # the call's own seed
    assert any("prompt of call" in caption.value for caption in at.caption)
