"""The Workbench's run control panel under Streamlit's AppTest, on the real bundled model:
pause toggles and pins kept in the session, a live paused run answered with Continue, and a
run paused in the store (as ``run.py`` leaves it) shown with Continue after a reload."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.services.run_control import run_with_control
from storage.workspace import Workspace

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    assert not at.exception
    at.text_area(key="task_input").input("Name a colour.")
    at.button(key="blank_plan").click().run()
    at.button(key="add_child").click().run()  # root <- one child, selected
    assert not at.exception
    return at


def _select_root(at: AppTest) -> str:
    root = at.session_state.session.plan.root.id
    at.session_state.selected_node = root
    at.run()
    return root


def test_pause_toggles_and_pins_live_in_the_session_and_are_saved_with_it(app, tmp_path):
    root = _select_root(app)
    app.toggle(key=f"pause_before_{root}").set_value(True).run()
    assert app.session_state.session.break_before == [root]
    app.run()  # kept across reruns
    assert app.toggle(key=f"pause_before_{root}").value is True
    child = app.session_state.session.plan.root.children[0].id
    app.session_state.selected_node = child
    app.run()
    app.text_area(key=f"pin_text_{child}").input("Teal").run()
    app.button(key=f"pin_{child}").click().run()
    assert app.session_state.session.pins == {child: "Teal"}
    app.toggle(key="step_mode").set_value(True).run()
    app.button(key="save_session").click().run()
    saved = Workspace(tmp_path).sessions.get(app.session_state.session.id)
    assert (saved.break_before, saved.pins, saved.step_mode) == ([root], {child: "Teal"}, True)
    app.button(key=f"unpin_{child}").click().run()
    assert app.session_state.session.pins == {}


def _wait(at: AppTest, done, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception


@pytest.mark.model
def test_a_debug_run_pauses_before_the_root_and_continues_with_an_edited_prompt(app):
    root = _select_root(app)
    app.toggle(key=f"pause_before_{root}").set_value(True).run()
    app.button(key="debug_run").click().run()
    _wait(app, lambda: any(b.key == "paused_continue" for b in app.button))
    assert any(f"Paused before **{root}**" in w.value for w in app.warning)
    run_id = app.session_state.run_id
    prompt = next(t for t in app.text_area if str(t.key).endswith("_prompt"))
    assert prompt.value  # the rendered prompt of the paused node
    prompt.input(prompt.value + "\nAnswer in one word:")
    app.button(key="paused_continue").click().run()
    job = None

    def finished() -> bool:
        nonlocal job
        from app.ui import state

        job = state.jobs().get(run_id)
        return job is not None and job.done

    _wait(app, finished)
    assert job.result is not None and job.result.status in ("completed", "suspect")
    assert [e.field for e in job.result.edits] == ["prompt"]


@pytest.mark.model
def test_a_run_paused_in_the_store_is_shown_paused_with_continue(app, tmp_path):
    session = app.session_state.session
    app.button(key="save_session").click().run()
    workspace = Workspace(tmp_path)
    result = run_with_control(
        workspace, session.plan, session.caps, break_before=[session.plan.root.id],
        session_id=session.id,
    )  # fmt: skip
    assert result.status == "paused"
    app.run()  # as after a page reload: nothing in memory knows the run
    assert any("is paused" in w.value for w in app.warning)
    assert any(b.key == "paused_continue" for b in app.button)


@pytest.mark.model
def test_a_fork_from_the_page_runs_the_node_with_a_changed_strategy(app, tmp_path):
    from app.ui import state

    session = app.session_state.session
    root, child = session.plan.root.id, session.plan.root.children[0].id
    session.caps.max_tokens_per_node = 24
    app.button(key="run_plan").click().run()
    source = app.session_state.run_id
    _wait(app, lambda: (job := state.jobs().get(source)) is not None and job.done)
    app.run()
    app.session_state.selected_node = child
    app.run()
    assert not app.exception, app.exception
    app.selectbox(key=f"fork_strategy_{child}").set_value("sc3").run()
    app.button(key="fork_run").click().run()
    forked = app.session_state.run_id
    assert forked != source
    _wait(app, lambda: (job := state.jobs().get(forked)) is not None and job.done)
    app.run()
    traces = Workspace(tmp_path).traces
    record = traces.run(forked)
    assert record["forked_from"] == source and record["forked_at_node"] == child
    nodes = {row["node_id"]: row for row in traces.node_executions(forked)}
    assert nodes[child]["strategy"].startswith("self-consistency")
    samples = [c for c in traces.model_calls(forked) if c["node_id"] == child]
    assert len(samples) >= 3
    assert nodes[root]["reused_from"] is None  # downstream of the changed node: ran again
    assert any(s.value.startswith(f"Forked `{source}`") for s in app.success), app.success
