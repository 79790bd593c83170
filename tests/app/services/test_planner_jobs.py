"""Planner actions as background jobs (``app.services.planner_jobs``): status, stage, streamed
text, alternatives as they finish, cancel. The decompose and expand jobs run the real bundled
model; the alternatives and failure tests script or break the model, since what is under test
there is the job, not the planner."""

from __future__ import annotations

import time

import pytest

from app.services import planning
from app.services.planner_jobs import PlannerJob, PlannerJobManager
from engine.plan import ModelRef, single_node_plan
from storage.traces import TraceStore
from tests.support.fake_backend import ScriptedPlanner, planner_json, subtask

TASK = "Organise a book swap for the families on our street."
#: Generous: the page polls as long as a job runs; these only bound a hung test.
JOB_TIMEOUT_S = 300


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "traces.duckdb")


@pytest.fixture
def jobs():
    return PlannerJobManager(workers=1)


def _wait_for_stage(job: PlannerJob, stage: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while stage not in job.snapshot().stages and not job.done:
        assert time.monotonic() < deadline, job.snapshot()
        time.sleep(0.005)


@pytest.mark.model
def test_a_decompose_job_cancelled_after_its_first_stage_ends_cancelled_and_applies_nothing(
    jobs, store, bundled_path
):
    job = jobs.decompose(TASK, ModelRef(path=str(bundled_path)), store=store, session_id="s1")
    _wait_for_stage(job, "choosing a planner")
    job.cancel()
    assert job.wait(JOB_TIMEOUT_S)
    snap = job.snapshot()
    assert snap.status == "cancelled", snap
    assert snap.result is None and snap.error is None
    assert snap.cancel_requested
    [run] = store.runs(kinds=("decompose",))
    assert run["status"] == "cancelled"
    assert run["run_id"] == snap.run_id


@pytest.mark.model
def test_a_decompose_job_reports_stages_and_text_and_gives_a_useful_plan(jobs, store, bundled_path):
    job = jobs.decompose(TASK, ModelRef(path=str(bundled_path)), store=store, session_id="s1")
    assert job.wait(JOB_TIMEOUT_S)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    assert snap.result is not None and not snap.result.fallback, snap.result.notes
    steps = [f"{c.title} {c.instruction}".lower() for c in snap.result.plan.root.children]
    assert 2 <= len(steps) <= 6
    # on topic: the steps (a pattern's skeleton fills its instructions with the task's subject)
    assert any(word in " ".join(steps) for word in ("book", "swap", "famil", "street")), steps
    assert any(stage.startswith("sampling") for stage in snap.stages), snap.stages
    assert "scoring the candidates" in snap.stages
    assert "candidate 1 of" in snap.text  # each candidate's text once the batch is done
    [run] = store.runs(kinds=("decompose",))
    assert run["status"] == "completed" and run["run_id"] == snap.run_id


@pytest.mark.model
def test_an_expand_job_adds_children_and_leaves_the_plan_it_started_from_alone(
    jobs, store, bundled_path
):
    plan = single_node_plan(TASK, ModelRef(path=str(bundled_path)))
    before = plan.model_copy(deep=True)
    job = jobs.split(plan, "root", None, store=store, session_id="s1")
    assert job.wait(JOB_TIMEOUT_S)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    assert snap.title == "Expand root"
    assert plan == before
    assert snap.result.new_ids and snap.result.plan.root.children
    assert any("candidate splits of root" in stage for stage in snap.stages), snap.stages


def test_an_alternatives_job_shows_each_alternative_as_soon_as_it_is_ready(
    jobs, store, monkeypatch
):
    scripted = ScriptedPlanner(
        planner_json(subtask("Choose the park"), subtask("Pack the food")),
        planner_json(subtask("Invite the friends"), subtask("Bring games")),
    )
    monkeypatch.setattr(planning, "backend_for", lambda model: scripted)
    plan = single_node_plan("Plan a picnic for six friends in a city park.", ModelRef())
    seen_partial: list[int] = []
    job = jobs.alternatives(plan.task, 2, None, plan=plan, store=store, style="chat", seed=3)
    while not job.done:
        seen_partial.append(len(job.snapshot().partial))
        time.sleep(0.001)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    assert len(snap.partial) == 2 and snap.partial == snap.result
    assert snap.title == "Sample alternatives of the task"
    assert any(s.startswith("alternative 2 of 2") for s in snap.stages)


def test_a_failed_job_says_what_failed_in_one_line(jobs, store, tmp_path):
    missing = ModelRef(path=str(tmp_path / "no-such-model.gguf"))
    job = jobs.decompose(TASK, missing, store=store)
    assert job.wait(JOB_TIMEOUT_S)
    snap = job.snapshot()
    assert snap.status == "failed"
    assert snap.error and "\n" not in snap.error and "no-such-model.gguf" in snap.error


def test_a_job_cancelled_before_a_worker_takes_it_never_runs(store, tmp_path):
    jobs = PlannerJobManager(workers=1)
    calls: list[str] = []

    def slow(job: PlannerJob) -> None:
        time.sleep(0.2)
        calls.append("slow")

    def never(job: PlannerJob) -> None:
        calls.append("never")

    first = jobs.start("rate", "", slow)
    second = jobs.start("rate", "", never)
    second.cancel()
    assert first.wait(JOB_TIMEOUT_S) and second.wait(JOB_TIMEOUT_S)
    assert second.snapshot().status == "cancelled"
    assert calls == ["slow"]
