"""The workbench's "Why this plan" and clarification panels under Streamlit's AppTest.

The planner's answer is a hand-made ``DecomposeResult`` (monkeypatched into the service the
page calls), so the candidates, scores and clarification are known; the service around it is
real, so every decomposition is recorded in the workspace's trace store. The real bundled model
decomposing through the same service is tested in tests/app/services/test_planning.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.services import planning
from storage.traces.planner_runs import planner_calls
from storage.workspace import Workspace
from tests.support.planner_jobs import finish_planner_job
from tests.support.planner_results import EXAMPLES, REPORTED, TASK, VAGUE, fake_decompose

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(planning, "decompose", fake_decompose)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _decompose(at: AppTest, task: str) -> AppTest:
    at.text_area(key="task_input").input(task)
    at.button(key="decompose").click().run()
    finish_planner_job(at)  # the planner runs as a background job
    assert not at.exception
    return at


def _first_title(at: AppTest) -> str:
    return at.session_state.session.plan.root.children[0].title


def _texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_why_this_plan_lists_every_candidate_and_another_can_replace_the_plan(app, tmp_path):
    _decompose(app, TASK)
    [why] = [e for e in app.expander if e.label.startswith("Why this plan")]
    assert why.label == "Why this plan (3 candidate(s))"
    text = _texts(app)
    assert "pattern: **sequence**" in text and "task language: **en**" in text
    for source in ("sample 1", "sample 2", "sample 3"):
        assert source in text
    assert "(chosen)" in text and "unusable: copied a worked example" in text
    assert "relevance 0.90" in text and "total 0.82" in text
    # only usable candidates other than the one in use can be taken instead
    keys = {b.key for b in app.button}
    assert "use_candidate_1" in keys
    assert "use_candidate_0" not in keys and "use_candidate_2" not in keys
    assert _first_title(app) == "Book cheap flights"

    app.button(key="use_candidate_1").click().run()
    assert not app.exception
    assert [c.title for c in app.session_state.session.plan.root.children] == [
        "Pick the days",
        "Walk the old town",
    ]
    assert "(in use)" in _texts(app)
    app.button(key="undo").click().run()  # an edit like any other: undo brings the choice back
    assert _first_title(app) == "Book cheap flights"

    [run] = Workspace(tmp_path).traces.runs(kinds=("decompose",))
    calls = planner_calls(Workspace(tmp_path).traces, run["run_id"])
    assert [c["detail"]["source"] for c in calls] == ["sample 1", "sample 2", "sample 3"]
    assert [c["selected"] for c in calls] == [True, False, False]
    assert run["run_id"] in _texts(app)


def test_a_vague_task_gets_the_clarification_and_an_example_fills_the_task_box(app, tmp_path):
    _decompose(app, VAGUE)
    assert any("too vague to plan" in w.value for w in app.warning)
    assert app.session_state.session.plan is None  # no plan instead of a guess
    assert not [e for e in app.expander if e.label.startswith("Why this plan")]
    app.button(key="clarify_example_0").click().run()
    assert not app.exception
    assert app.text_area(key="task_input").value == EXAMPLES[0]
    [run] = Workspace(tmp_path).traces.runs(kinds=("decompose",))
    assert run["status"] == "needs_detail"


def test_the_planner_reports_its_stages_to_the_page_while_it_works(app):
    REPORTED.clear()
    _decompose(app, TASK)
    assert REPORTED == ["choosing a pattern", "sampling 3 candidate plans", "scoring"]


def test_the_inspector_lists_planner_runs_under_their_kind_with_the_candidates(app, tmp_path):
    _decompose(app, TASK)
    [run] = Workspace(tmp_path).traces.runs(kinds=("decompose",))
    app.switch_page("ui/inspector_page.py").run()
    assert not app.exception
    # plan executions by default: the decomposition is not one of them
    assert app.radio(key="inspector_kind").value == "Plan runs"
    assert not [s for s in app.selectbox if s.key == "inspect_run"]
    app.radio(key="inspector_kind").set_value("Planner actions").run()
    assert not app.exception
    assert app.selectbox(key="inspect_run").value == run["run_id"]
    text = _texts(app)
    assert "Planner action: decompose" in text
    assert "3 candidate(s); chosen: #1 sample 1" in text
    table = next(f.value for f in app.dataframe if "score: relevance" in f.value.columns)
    assert table["source"].tolist() == ["sample 1", "sample 2", "sample 3"]
    assert table["chosen"].tolist() == [True, False, False]
    assert table["score: relevance"].tolist() == [0.9, 0.6, 0.1]
