"""Planner actions through ``app.services.planning``: each is recorded as a run in a real
DuckDB trace store with its calls' prompts, outputs and tokens.

One test decomposes a real task with the real bundled model (one planner invocation); the
others script the planner's answers (``ScriptedPlanner``) because what is under test is the
recording, not the model.
"""

from __future__ import annotations

import json

import pytest

from app.services import planning
from engine.errors import ModelUnavailable
from engine.models import Backend, Completion, Usage
from engine.plan import ModelRef
from storage.trace_queries import RunFilter, TraceQueries
from storage.traces import TraceStore
from storage.traces.planner_runs import planner_calls
from tests.support.fake_backend import ScriptedPlanner, planner_json, subtask, tree

TASK = "Plan a picnic for six friends in a city park."


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "traces.duckdb")


class Rater(Backend):
    """Answers every rating prompt the same way, whichever prompt style the rater uses."""

    label = "rater"
    ANSWER = "3; some work"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages, config, *, json_schema=None, on_token=None, cancel=None):
        self.calls += 1
        return Completion(self.ANSWER, Usage(10, 4), 0.01, self.label, "stop")


def _plan():
    return tree({"id": "root", "children": [{"id": "s1"}, {"id": "s2"}]}, task=TASK)


@pytest.mark.model
def test_a_real_decompose_is_recorded_with_its_calls_and_candidates(store, bundled_path):
    stages: list[str] = []
    recorded: list[str] = []
    result = planning.decompose_traced(
        "Write a short report on the causes of the French Revolution.",
        ModelRef(path=str(bundled_path)),
        store=store,
        session_id="s1",
        on_progress=stages.append,
        on_recorded=recorded.append,
    )
    assert stages, "the planner reported no progress"
    [run_id] = recorded
    run = store.run(run_id)
    assert run is not None and run["kind"] == "decompose" and run["session_id"] == "s1"
    assert run["status"] in {"completed", "fallback", "needs_detail"}
    calls = planner_calls(store, run_id)
    # every Completion the planner returned is counted once, and its rows carry the prompt
    assert result.calls
    assert sum(c.usage.input_tokens for c in result.calls) == run["input_tokens"]
    assert sum(c.usage.output_tokens for c in result.calls) == run["output_tokens"]
    made = [c for c in calls if c["role"] != "candidate" or c["detail"]["call_index"] is not None]
    assert made and all(json.loads(c["prompt"]) for c in made)
    candidates = [c for c in calls if c["role"] == "candidate"]
    assert len(candidates) == len(result.candidates)
    if result.chosen is not None:
        [chosen] = [c for c in candidates if c["selected"]]
        assert chosen["detail"]["candidate"] == result.chosen
        assert chosen["score"] == pytest.approx(result.candidates[result.chosen].total)
    assert not result.plan.root.children or run["answer"].startswith("1. ")
    # a planner run is not an execution: the execution lists leave it out
    queries = TraceQueries(store)
    assert queries.runs().empty
    assert queries.runs(RunFilter(kinds=("decompose",)))["run_id"].tolist() == [run_id]


def test_expand_rate_and_alternatives_are_recorded_as_their_kinds(store):
    plan = _plan()
    scripted = ScriptedPlanner(
        planner_json(subtask("Choose the park"), subtask("Pack the food", ("Choose the park",))),
        planner_json(subtask("Invite the friends"), subtask("Bring games")),
        planner_json(subtask("Book a table"), subtask("Bring games")),
    )
    expanded = planning.expand_traced(
        plan, "s1", store=store, backend=scripted, session_id="s", style="chat"
    )
    assert not expanded.fallback, expanded.notes
    rater = Rater()
    planning.rate_traced(plan, store=store, backend=rater, session_id="s")
    results = planning.alternatives_traced(
        TASK, 2, store=store, backend=scripted, session_id="s", seed=1, style="chat"
    )
    assert len(results) == 2

    runs = {r["kind"]: r for r in store.runs(kinds=planning_kinds())}
    assert set(runs) == {"expand", "rate", "alternatives"}
    assert store.runs(kinds=("execution",)) == []

    expand_calls = planner_calls(store, runs["expand"]["run_id"])
    assert [(c["role"], c["selected"], c["node_id"]) for c in expand_calls] == [
        ("attempt", True, "s1")
    ]
    assert json.loads(expand_calls[0]["prompt"])  # the messages the planner sent
    assert "1. Choose the park" in runs["expand"]["answer"]

    rate_calls = planner_calls(store, runs["rate"]["run_id"])
    assert [c["role"] for c in rate_calls] == ["rate"] * rater.calls > []
    assert {c["output"] for c in rate_calls} == {Rater.ANSWER}
    assert all(json.loads(c["prompt"]) for c in rate_calls)

    alternative_calls = planner_calls(store, runs["alternatives"]["run_id"])
    assert [c["detail"]["alternative"] for c in alternative_calls] == [1, 2]
    assert "Alternative 2: 1. Book a table" in runs["alternatives"]["answer"]


def planning_kinds() -> tuple[str, ...]:
    from storage.traces.schema import PLANNER_KINDS

    return PLANNER_KINDS


def test_a_model_that_cannot_be_loaded_is_recorded_as_a_failed_run_and_raised(store, tmp_path):
    with pytest.raises(ModelUnavailable):
        planning.decompose_traced(
            TASK, ModelRef(path=str(tmp_path / "missing.gguf")), store=store, session_id="s"
        )
    [run] = store.runs()
    assert (run["kind"], run["status"]) == ("decompose", "failed")
    assert "missing.gguf" in run["stop_reason"]


def test_a_store_that_cannot_be_written_costs_a_note_not_the_plan(tmp_path):
    blocked = tmp_path / "not-a-db"
    blocked.mkdir()
    store = TraceStore(blocked, lock_wait_s=0.5)  # a folder: DuckDB cannot open it
    scripted = ScriptedPlanner(planner_json(subtask("Choose the park"), subtask("Pack the food")))
    result = planning.expand_traced(_plan(), "s1", store=store, backend=scripted, style="chat")
    assert not result.fallback
    assert "not recorded" in result.notes[-1]


def test_the_cli_list_of_run_kinds_matches_the_schema():
    from app.cli.runs import _RUN_KINDS
    from storage.traces.schema import RUN_KINDS

    assert _RUN_KINDS == RUN_KINDS
