"""`run.py decompose` records the planner's work, and `run.py runs` lists plan executions unless
asked for planner actions (``--kind``, ``--all``). The planner's answer is hand-made (the
service and the trace store around it are real); the real model's decomposition is tested in
tests/app/services/test_planning.py."""

from __future__ import annotations

import json

import pytest

import run
from app.services import planning
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.workspace import Workspace
from tests.support.fake_backend import fake_factory, fake_models, tree
from tests.support.planner_results import TASK, VAGUE, fake_decompose


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(planning, "decompose", fake_decompose)
    factory, _ = fake_factory()
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}]}))
    with Workspace(tmp_path).traces.writer() as writer:
        execute_plan(plan, RunCaps(), backend_factory=factory, listeners=[writer])
    return tmp_path


def test_decompose_records_a_planner_run_and_prints_its_candidates(data, capsys):
    assert run.main(["decompose", TASK]) == 0
    out = capsys.readouterr()
    plan = json.loads(out.out)
    assert plan["root"]["children"][0]["title"] == "Book cheap flights"
    assert "candidate *1 sample 1: total 0.82 relevance=0.90 coverage=0.70" in out.err
    assert "unusable: copied a worked example" in out.err
    assert "planner: scoring" in out.err
    [recorded] = Workspace(data).traces.runs(kinds=("decompose",))
    assert f"recorded as planner run {recorded['run_id']}" in out.err


def test_a_vague_task_prints_the_clarification(data, capsys):
    assert run.main(["decompose", VAGUE]) == 0
    err = capsys.readouterr().err
    assert "needs detail: The task is too vague" in err
    assert "e.g. Plan a weekend trip to Porto for two" in err


def test_runs_lists_executions_unless_asked_for_planner_actions(data, capsys):
    assert run.main(["decompose", TASK]) == 0
    capsys.readouterr()
    [execution] = Workspace(data).traces.runs(kinds=("execution",))
    [planner_run] = Workspace(data).traces.runs(kinds=("decompose",))

    assert run.main(["runs"]) == 0
    listed = capsys.readouterr().out
    assert execution["run_id"] in listed and planner_run["run_id"] not in listed

    for flags in (["--all"], ["--kind", "decompose"]):
        assert run.main(["runs", *flags]) == 0
        listed = capsys.readouterr().out
        assert planner_run["run_id"] in listed
        assert (execution["run_id"] in listed) == (flags == ["--all"])
        assert "kind" in listed.splitlines()[0]
        assert TASK[:30] in listed
