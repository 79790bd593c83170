"""The workbench and sessions pages under Streamlit's AppTest, on the real bundled model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage.workspace import Workspace
from tests.support.apptest import notices
from tests.support.planner_jobs import finish_planner_job

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _one_node_plan(at: AppTest, task: str = "Write a haiku about autumn leaves.") -> AppTest:
    at.text_area(key="task_input").input(task)
    at.button(key="blank_plan").click().run()
    assert not at.exception
    return at


def test_main_page_renders_the_task_box_and_no_plan_yet(app):
    assert app.title[0].value == "Arbor workbench"
    assert app.text_area(key="task_input").value == ""
    assert any("press Decompose" in info.value for info in app.info)


def test_empty_task_is_refused_with_a_message(app):
    app.button(key="decompose").click().run()
    assert any("The task is empty" in error.value for error in app.error)
    assert app.session_state.session.plan is None


def test_one_node_plan_is_drawn_as_a_clickable_graph(app):
    _one_node_plan(app)
    charts = app.get("vega_lite_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert "node_pick" in json.dumps(spec.get("params", []))


def test_editing_a_node_updates_the_plan_and_a_cycle_is_refused(app):
    _one_node_plan(app)
    app.button(key="add_child").click().run()
    plan = app.session_state.session.plan
    child = plan.root.children[0].id
    assert app.session_state.selected_node == child
    assert next(box for box in app.selectbox if box.label == "Node").value == child

    form_inputs = app.text_input
    title_box = next(box for box in form_inputs if box.label == "Title")
    title_box.input("Count the syllables")
    depends = next(box for box in app.multiselect if box.label == "Uses the output of")
    depends.set_value(["root"])  # the root waits for its child: child -> root -> child
    next(b for b in app.button if b.label == "Apply changes").click().run()
    assert any("cycle" in text for text in notices(app))
    unchanged = app.session_state.session.plan.node(child)
    assert unchanged.title == "New subtask 1"
    assert unchanged.depends_on == []

    depends = next(box for box in app.multiselect if box.label == "Uses the output of")
    depends.set_value([])
    next(b for b in app.button if b.label == "Apply changes").click().run()
    assert app.session_state.session.plan.node(child).title == "Count the syllables"

    app.button(key="undo").click().run()
    assert app.session_state.session.plan.node(child).title == "New subtask 1"
    app.button(key="redo").click().run()
    assert app.session_state.session.plan.node(child).title == "Count the syllables"


def test_a_template_with_an_unknown_variable_is_refused_at_edit_time(app):
    _one_node_plan(app)
    instruction = next(box for box in app.text_area if box.label == "Instruction")
    instruction.input("Answer {{ task }} using {{ answer_of_everything }}")
    next(b for b in app.button if b.label == "Apply changes").click().run()
    assert any("answer_of_everything" in text for text in notices(app))
    assert "{{" not in app.session_state.session.plan.root.instruction


def test_saved_changes_become_revisions_that_can_be_diffed_and_restored(app, tmp_path):
    _one_node_plan(app)
    app.button(key="save_session").click().run()
    app.button(key="add_child").click().run()
    app.button(key="save_session").click().run()
    session_id = app.session_state.session.id
    revisions = Workspace(tmp_path).sessions.revisions.list(session_id)
    assert [r.number for r in revisions] == [2, 1]
    assert any("1 added" in md.value for md in app.markdown)

    app.selectbox(key="rev_restore").set_value(1)
    app.button(key="restore_revision").click().run()
    assert app.session_state.session.plan.root.children == []
    app.button(key="undo").click().run()
    assert len(app.session_state.session.plan.root.children) == 1


def test_every_change_is_autosaved_and_turning_autosave_off_stops_it(app, tmp_path):
    sessions = Workspace(tmp_path).sessions
    assert sessions.list() == []  # an empty session is not worth a row
    _one_node_plan(app)
    session_id = app.session_state.session.id
    saved = sessions.get(session_id)  # no Save press
    assert saved.plan is not None and saved.task.startswith("Write a haiku")
    assert any("Autosaved at" in c.value for c in app.caption)

    app.button(key="add_child").click().run()
    assert len(sessions.get(session_id).plan.root.children) == 1
    assert [r.number for r in sessions.revisions.list(session_id)] == [2, 1]
    app.sidebar.text_input(key="session_name").input("Renamed").run()
    assert sessions.get(session_id).name == "Renamed"

    app.sidebar.toggle(key="autosave").set_value(False).run()
    app.button(key="add_child").click().run()
    assert len(app.session_state.session.plan.nodes()) == 3
    assert len(sessions.get(session_id).plan.nodes()) == 2  # not saved
    assert any("Autosave is off" in c.value for c in app.caption)
    app.sidebar.toggle(key="autosave").set_value(True).run()
    assert len(sessions.get(session_id).plan.nodes()) == 3  # saved once back on


def test_missing_model_file_is_reported_by_check_model(app):
    app.selectbox(key="default_model_kind").set_value("Local GGUF file").run()
    app.text_input(key="default_model_path").input("/nonexistent/model.gguf")
    app.button(key="check_model").click().run()
    assert any("/nonexistent/model.gguf" in error.value for error in app.error)


@pytest.mark.model
def _wait_for_answer(app: AppTest, after: str | None = None) -> str:
    """Rerun the page until a run other than ``after`` shows its answer; its run id."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        app.run()
        run_id = app.session_state.run_id
        if run_id != after and any(md.value == "#### Answer" for md in app.markdown):
            assert not app.exception
            return run_id
        time.sleep(1)
    pytest.fail("the run did not finish in the UI within 180 s")


def test_run_shows_answer_and_model_calls_then_session_reopens(app, tmp_path):
    _one_node_plan(app)
    app.number_input(key="cap_node").set_value(48)
    app.button(key="run_plan").click().run()
    _wait_for_answer(app)
    run_id = app.session_state.run_id
    calls = Workspace(tmp_path).traces.model_calls(run_id)
    assert len(calls) == 1 and calls[0]["status"] == "ok" and calls[0]["output_tokens"] > 0
    assert any(md.value == "#### Model calls" for md in app.markdown)

    # Unchanged: the next run reuses the recorded call; "Re-run from root" calls the model.
    app.button(key="run_plan").click().run()
    reused_run = _wait_for_answer(app, after=run_id)
    assert Workspace(tmp_path).traces.model_calls(reused_run) == []
    # The summary is a success, or a warning when the run is "suspect" (an echo, cut off).
    assert any("reused 1 unchanged: root" in s.value for s in [*app.success, *app.warning])
    app.button(key="rerun_from").click().run()
    forced_run = _wait_for_answer(app, after=reused_run)
    assert len(Workspace(tmp_path).traces.model_calls(forced_run)) == 1
    assert any("Executed 1 node(s)." in s.value for s in [*app.success, *app.warning])

    app.text_input(key="session_name").input("Haiku session")
    app.button(key="save_session").click().run()
    assert any("Saved session" in text for text in notices(app))
    saved = Workspace(tmp_path).sessions.list()
    assert [s.name for s in saved] == ["Haiku session"]
    assert saved[0].run_ids == [run_id, reused_run, forced_run]

    app.switch_page("ui/sessions_page.py").run()
    assert app.title[0].value == "Sessions"
    app.button(key="open_session").click().run()
    assert not app.exception
    assert app.session_state.session.name == "Haiku session"
    assert app.session_state.session.plan.root.title.startswith("Write a haiku")


@pytest.mark.model
def test_rate_difficulty_fills_unrated_nodes_and_can_be_undone(app):
    _one_node_plan(app)
    app.button(key="add_child").click().run()
    app.button(key="rate_difficulty").click().run()
    finish_planner_job(app)  # the planner runs as a background job
    assert not app.exception
    plan = app.session_state.session.plan
    rated = [node for node, _ in plan.iter_nodes() if node.difficulty is not None]
    assert any(text.startswith(f"Rated {len(rated)} of 2") for text in notices(app))
    if rated:  # a rating is an edit like any other
        app.button(key="undo").click().run()
        plan = app.session_state.session.plan
        assert all(node.difficulty is None for node, _ in plan.iter_nodes())


def test_alternatives_are_shown_side_by_side_and_ticked_subtasks_merge(app, monkeypatch):
    """The UI's wiring of alternatives: side by side, tick, merge, undo. The planner's answers
    are scripted here (two real samples took 90 s of the suite); the bundled model sampling
    alternatives is tested in test_alternatives.py and the planner in the browser tests."""
    from app.services import planning
    from tests.support.fake_backend import ScriptedPlanner, planner_json, subtask

    scripted = ScriptedPlanner(
        planner_json(subtask("Choose the park"), subtask("Pack the food", ("Choose the park",))),
        planner_json(subtask("Invite the friends"), subtask("Bring games")),
    )
    monkeypatch.setattr(planning, "backend_for", lambda model: scripted)
    _one_node_plan(app, "Plan a picnic for six friends in a city park.")
    app.button(key="sample_alternatives").click().run(timeout=300)
    finish_planner_job(app)  # the planner runs as a background job
    assert not app.exception
    offer = app.session_state.alternatives
    assert len(offer["results"]) == 2
    usable = [i for i, r in enumerate(offer["results"]) if not r.fallback]
    assert usable, [r.notes for r in offer["results"]]
    picks = []
    for index in usable:
        first = offer["results"][index].plan.root.children[0]
        app.checkbox(key=f"alt_{index}_{first.id}").check()
        picks.append(first.title)
    app.run()  # the merge button is enabled once a ticked box has reached the script
    app.button(key="merge_alternatives").click().run()
    assert not app.exception
    merged = app.session_state.session.plan
    assert [c.title.split(" (")[0] for c in merged.root.children] == [
        t.split(" (")[0] for t in picks
    ]
    assert app.session_state.alternatives is None
    app.button(key="undo").click().run()
    assert app.session_state.session.plan.root.children == []


@pytest.mark.model
def test_a_node_strategy_shows_in_the_allocation_and_its_votes_after_the_run(app, tmp_path):
    _one_node_plan(app, "What is 7 + 5? Answer with a number only.")
    app.number_input(key="cap_node").set_value(16)
    app.checkbox(key="own_strategy_root").check().run()
    app.selectbox(key="node_strategy_root_kind").set_value("self_consistency").run()
    app.slider(key="node_strategy_root_self_consistency_samples").set_value(3)
    app.checkbox(key="node_strategy_root_early").uncheck()
    app.button(key="apply_compute_root").click().run()
    assert not app.exception
    strategy = app.session_state.session.plan.root.strategy
    assert (strategy.kind, strategy.samples, strategy.early_stop) == ("self_consistency", 3, False)
    table = _table_with(app, "planned_tokens")
    assert table.loc[0, "strategy"] == "self-consistency vote ×3"
    assert "manual strategy" in table.loc[0, "source"]

    app.button(key="run_plan").click().run()
    run_id = _wait_for_answer(app)
    calls = Workspace(tmp_path).traces.model_calls(run_id)
    assert [c["role"] for c in calls] == ["sample"] * 3
    heads = [e.label for e in app.expander if "sample(s)" in e.label]
    assert heads and "self-consistency vote ×3" in heads[0] and "agreement" in heads[0]
    samples = _table_with(app, "vote")
    assert list(samples["role"]) == ["sample"] * 3 and samples["selected"].tolist().count("✔") == 1

    # A policy change is seen in the table before any run.
    app.selectbox(key="policy_kind").set_value("difficulty")
    app.button(key="apply_policy").click().run()
    assert app.session_state.session.plan.allocation.kind == "difficulty"
    table = _table_with(app, "planned_tokens")
    assert "manual strategy" in table.loc[0, "source"]  # the node's own strategy still wins


def _table_with(app: AppTest, column: str):
    """The first dataframe on the page that has ``column`` (AppTest does not expose keys)."""
    for frame in app.dataframe:
        if column in frame.value.columns:
            return frame.value
    pytest.fail(f"no table with a {column!r} column on the page")


def test_fast_deliberate_policy_shows_which_nodes_get_more_compute(app):
    from engine.plan import Node

    _one_node_plan(app, "Compare two laptops for a student")
    plan = app.session_state.session.plan
    plan.root.children = [
        Node(id="easy", title="List the specs", instruction="x", difficulty=1),
        Node(id="hard", title="Weigh the trade-offs", instruction="y", difficulty=5),
    ]
    app.run()
    app.selectbox(key="policy_kind").set_value("fast_deliberate").run()
    app.slider(key="policy_threshold").set_value(4)
    app.button(key="apply_policy").click().run()
    assert not app.exception
    assert app.session_state.session.plan.allocation.kind == "fast_deliberate"
    table = _table_with(app, "planned_tokens").set_index("node")
    assert table.loc["hard", "strategy"] == "self-consistency vote ×5"
    assert table.loc["easy", "strategy"] == "single call"
    assert table.loc["hard", "planned_tokens"] > table.loc["easy", "planned_tokens"]
    assert "deliberate (difficulty 5)" in table.loc["hard", "source"]
