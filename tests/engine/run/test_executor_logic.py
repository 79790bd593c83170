"""Executor logic with an in-process fake model: order, concurrency, failures, caps, cancel.

These tests say nothing about model quality; the real-model runs are in test_storage.py and
test_cli.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import CycleError, ModelCallFailed
from engine.plan import GenerationConfig
from engine.run.budget import RunCaps
from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunFinished, RunStarted
from engine.run.executor import execute_plan
from engine.run.scheduler import NodeStatus
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

DIAMOND = {
    "id": "root",
    "children": [
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a"]},
        {"id": "d", "depends_on": ["b", "c"]},
    ],
}


def _run(spec, behaviours=None, caps=None, **kwargs):
    plan = fake_models(tree(spec))
    factory, recorder = fake_factory(behaviours)
    events: list = []
    result = execute_plan(
        plan, caps or RunCaps(), backend_factory=factory, listeners=[events.append], **kwargs
    )
    return result, recorder, events


def _leaves(count: int, **extra) -> dict:
    return {"id": "root", "children": [{"id": f"l{i}", **extra} for i in range(count)]}


def test_nodes_run_in_dependency_order_and_the_root_answers():
    result, recorder, _ = _run(DIAMOND, caps=RunCaps(max_parallel=1))
    assert recorder.calls == ["a", "b", "c", "d", "root"]
    assert result.status == "completed" and result.stop_reason is None
    assert result.answer == "output of root"
    assert {n: r.status for n, r in result.nodes.items()} == dict.fromkeys(
        ["a", "b", "c", "d", "root"], NodeStatus.DONE
    )


def test_dependants_and_parents_see_upstream_outputs_in_their_prompts():
    _, recorder, _ = _run(DIAMOND)
    assert "output of a" in recorder.prompts["b"]
    assert "output of b" in recorder.prompts["d"] and "output of c" in recorder.prompts["d"]
    for child in "abcd":
        assert f"output of {child}" in recorder.prompts["root"]


def test_independent_nodes_really_run_concurrently():
    sleep = 0.6
    started = time.perf_counter()
    result, recorder, _ = _run(
        _leaves(3), {f"l{i}": Behaviour(sleep_s=sleep) for i in range(3)}, RunCaps(max_parallel=4)
    )
    elapsed = time.perf_counter() - started
    assert result.status == "completed"
    assert recorder.max_active == 3
    assert recorder.overlapped("l0", "l1") and recorder.overlapped("l1", "l2")
    assert elapsed < 3 * sleep  # serial would take at least 1.8 s


def test_max_parallel_bounds_how_many_nodes_run_at_once():
    result, recorder, _ = _run(
        _leaves(5), {f"l{i}": Behaviour(sleep_s=0.15) for i in range(5)}, RunCaps(max_parallel=2)
    )
    assert result.status == "completed"
    assert recorder.max_active == 2


def test_a_node_never_starts_before_its_dependencies_finish():
    behaviours = {"a": Behaviour(sleep_s=0.3), "b": Behaviour(sleep_s=0.1)}
    _, recorder, _ = _run(DIAMOND, behaviours, RunCaps(max_parallel=4))
    for before, after in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "root")]:
        assert recorder.intervals[before][1] <= recorder.intervals[after][0]


def test_failing_node_blocks_its_dependants_but_not_an_independent_branch():
    spec = {
        "id": "root",
        "children": [
            {"id": "bad"},
            {"id": "good", "children": [{"id": "good_leaf"}]},
            {"id": "after_bad", "depends_on": ["bad"]},
        ],
    }
    behaviours = {
        "bad": Behaviour(sleep_s=0.05, error=ModelCallFailed("server said no")),
        "good_leaf": Behaviour(sleep_s=0.2),
    }
    result, recorder, events = _run(spec, behaviours)
    status = {n: r.status for n, r in result.nodes.items()}
    assert status == {
        "bad": NodeStatus.FAILED,
        "good_leaf": NodeStatus.DONE,
        "good": NodeStatus.DONE,
        "after_bad": NodeStatus.BLOCKED,
        "root": NodeStatus.BLOCKED,
    }
    assert result.nodes["bad"].error == "server said no"
    assert "'bad' failed" in result.nodes["after_bad"].error
    assert "after_bad" not in recorder.calls and "root" not in recorder.calls
    assert result.status == "failed" and result.answer is None
    assert "bad" in result.stop_reason and "server said no" in result.stop_reason
    errors = [e for e in events if isinstance(e, ModelCallFinished) and e.status == "error"]
    assert [e.node_id for e in errors] == ["bad"]


def test_unexpected_backend_exception_fails_the_node_not_the_whole_run():
    spec = {"id": "root", "children": [{"id": "crash"}, {"id": "fine"}]}
    result, _, events = _run(spec, {"crash": Behaviour(error=RuntimeError("llama_decode -3"))})
    assert result.status == "failed"
    assert result.nodes["crash"].status is NodeStatus.FAILED
    assert "RuntimeError" in result.nodes["crash"].error
    assert "llama_decode -3" in result.nodes["crash"].error
    assert result.nodes["fine"].status is NodeStatus.DONE
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"


def test_an_empty_answer_counts_as_a_failed_node():
    result, _, _ = _run({"id": "root"}, {"root": Behaviour(output="  \n ")})
    assert result.status == "failed"
    assert result.nodes["root"].error == "the model returned an empty answer"


def test_node_output_limit_is_capped_by_the_run_cap():
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}]}))
    plan.root.children[0].generation = GenerationConfig(max_tokens=500)
    factory, recorder = fake_factory()
    execute_plan(plan, RunCaps(max_tokens_per_node=40), backend_factory=factory)
    assert recorder.max_tokens["a"] == 40
    assert recorder.max_tokens["root"] == 40


def test_token_cap_stops_the_run_cleanly_with_a_reason():
    chain = {
        "id": "root",
        "children": [
            {"id": "s1"},
            {"id": "s2", "depends_on": ["s1"]},
            {"id": "s3", "depends_on": ["s2"]},
            {"id": "s4", "depends_on": ["s3"]},
        ],
    }
    behaviours = {n: Behaviour(output_tokens=100) for n in ["s1", "s2", "s3", "s4", "root"]}
    caps = RunCaps(total_tokens=300, max_tokens_per_node=100)
    result, recorder, events = _run(chain, behaviours, caps)
    assert result.status == "stopped"
    assert result.stop_reason.startswith("token cap reached")
    assert "of 300 tokens used" in result.stop_reason
    assert result.total_tokens <= 300
    assert result.answer is None
    statuses = {n: r.status for n, r in result.nodes.items()}
    assert statuses["s1"] is NodeStatus.DONE
    skipped = [n for n, s in statuses.items() if s is NodeStatus.SKIPPED]
    assert "root" in skipped
    assert not set(skipped) & set(recorder.calls)  # a skipped node never called its model
    assert f"node '{skipped[0]}'" in result.stop_reason
    for node in skipped:
        assert result.nodes[node].error == result.stop_reason
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.status == "stopped" and finished.stop_reason == result.stop_reason
    # Every node ends with exactly one NodeFinished.
    node_finished = [e.node_id for e in events if isinstance(e, NodeFinished)]
    assert sorted(node_finished) == sorted(statuses)


@settings(max_examples=30, deadline=None)
@given(
    total=st.integers(100, 1500),
    per_node=st.integers(16, 300),
    parallel=st.integers(1, 4),
    outputs=st.lists(st.integers(1, 400), min_size=6, max_size=6),
)
def test_used_tokens_never_exceed_the_cap(total, per_node, parallel, outputs):
    spec = {
        "id": "root",
        "children": [
            {"id": "a"},
            {"id": "b"},
            {"id": "c", "depends_on": ["a"]},
            {"id": "d", "children": [{"id": "e"}]},
        ],
    }
    names = ["a", "b", "c", "d", "e", "root"]
    behaviours = {n: Behaviour(output_tokens=o) for n, o in zip(names, outputs, strict=True)}
    caps = RunCaps(total_tokens=total, max_tokens_per_node=per_node, max_parallel=parallel)
    result, _, events = _run(spec, behaviours, caps)
    assert result.total_tokens <= total
    assert result.status in {"completed", "stopped"}
    if result.status == "stopped":
        assert result.stop_reason.startswith("token cap reached")
    assert set(result.nodes) == set(names)
    calls = [e for e in events if isinstance(e, ModelCallFinished)]
    assert sum(c.input_tokens + c.output_tokens for c in calls) == result.total_tokens
    assert all(c.output_tokens <= per_node for c in calls)


def test_cancel_event_skips_everything_not_yet_started():
    chain = {"id": "root", "children": [{"id": "s1"}, {"id": "s2", "depends_on": ["s1"]}]}
    plan = fake_models(tree(chain))
    factory, recorder = fake_factory({"s1": Behaviour(sleep_s=0.1)})
    cancel = threading.Event()
    events: list = []

    def listener(event):
        events.append(event)
        if isinstance(event, NodeFinished) and event.node_id == "s1":
            cancel.set()

    result = execute_plan(
        plan, RunCaps(max_parallel=1), backend_factory=factory, listeners=[listener], cancel=cancel
    )
    assert result.status == "cancelled"
    assert result.stop_reason == "cancelled by the user"
    assert recorder.calls == ["s1"]
    assert result.nodes["s1"].status is NodeStatus.DONE
    assert result.nodes["s2"].status is NodeStatus.SKIPPED
    assert result.nodes["root"].status is NodeStatus.SKIPPED
    assert events[-1].status == "cancelled"


def test_cancel_while_a_node_runs_lets_it_finish_and_starts_nothing_else():
    spec = {"id": "root", "children": [{"id": "slow"}, {"id": "next", "depends_on": ["slow"]}]}
    plan = fake_models(tree(spec))
    factory, recorder = fake_factory({"slow": Behaviour(sleep_s=0.8)})
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        result = execute_plan(plan, RunCaps(), backend_factory=factory, cancel=cancel)
    finally:
        timer.cancel()
    assert result.status == "cancelled"
    assert recorder.calls == ["slow"]
    assert result.nodes["slow"].status is NodeStatus.DONE
    assert result.nodes["next"].status is NodeStatus.SKIPPED


def test_events_arrive_in_a_consistent_order():
    _, _, events = _run(DIAMOND)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    seen_started: set[str] = set()
    seen_finished: set[str] = set()
    for event in events[1:-1]:
        if isinstance(event, NodeStarted):
            seen_started.add(event.node_id)
        elif isinstance(event, ModelCallFinished):
            assert event.node_id in seen_started and event.node_id not in seen_finished
        elif isinstance(event, NodeFinished):
            assert event.node_id in seen_started
            seen_finished.add(event.node_id)
    assert seen_finished == {"a", "b", "c", "d", "root"}
    assert len({e.run_id for e in events}) == 1


def test_invalid_plan_raises_before_anything_runs():
    plan = fake_models(tree({"id": "root", "children": [{"id": "a", "depends_on": ["a"]}]}))
    factory, recorder = fake_factory()
    events: list = []
    with pytest.raises(CycleError):
        execute_plan(plan, backend_factory=factory, listeners=[events.append])
    assert events == [] and recorder.calls == []
