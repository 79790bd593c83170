"""A planner action in the background under AppTest: the progress box (elapsed time, stage,
Cancel), the disabled planner buttons while it runs, and a cancel that changes nothing.

The planner here waits for its cancel (a stand-in for a long model call), so the page is seen
mid-action every time; the bundled model under a cancelled job is tested in
tests/app/services/test_planner_jobs.py and in the browser test."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.services import planning
from app.ui import planner_jobs
from engine.errors import PlannerCancelled
from storage.workspace import Workspace
from tests.support.apptest import notices
from tests.support.planner_jobs import finish_planner_job

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
TASK = "Plan a three-day trip to Lisbon on a budget"
#: Bounds a hung test only.
WAIT_S = 120


@pytest.fixture
def started(monkeypatch):
    """A decompose that reports a stage, streams a little, then waits to be cancelled."""
    reached = threading.Event()

    def waiting_decompose(task, model=None, *, on_progress=None, cancel=None, on_text=None, **_):
        on_progress("sampling 4 candidate plans")
        on_text("1. Book cheap")
        reached.set()
        assert cancel is not None and cancel.wait(WAIT_S), "never cancelled"
        raise PlannerCancelled("The planner action was cancelled; nothing was changed.")

    monkeypatch.setattr(planning, "decompose", waiting_decompose)
    return reached


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=WAIT_S)
    at.run()
    assert not at.exception
    return at


def test_a_running_decompose_shows_its_progress_and_cancel_changes_nothing(app, started, tmp_path):
    app.text_area(key="task_input").input(TASK)
    app.button(key="decompose").click().run()
    assert started.wait(WAIT_S)
    app.run()  # draw the progress box with the stage the planner has reached
    assert not app.exception
    texts = "\n".join(m.value for m in app.markdown) + "\n".join(c.value for c in app.caption)
    assert "**Decompose** · running for" in texts
    assert "Stage: sampling 4 candidate plans" in texts
    assert any("1. Book cheap" in code.value for code in app.code)
    decompose = app.button(key="decompose")
    assert decompose.disabled and decompose.proto.help == planner_jobs.BUSY_HELP

    app.button(key=planner_jobs.CANCEL_KEY).click().run()
    finish_planner_job(app)
    assert not app.exception
    assert app.session_state.session.plan is None
    assert any("Decompose cancelled after" in text for text in notices(app))
    assert not app.button(key="decompose").disabled
    [run] = Workspace(tmp_path).traces.runs(kinds=("decompose",))
    assert run["status"] == "cancelled"
