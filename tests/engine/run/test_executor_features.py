"""Executor features with an in-process fake model: resource slots, streaming progress,
interrupting cancel, the call cache with re-run from a node.

Pure scheduling logic; the same behaviours against the real bundled model and a real loopback
server are in test_execution_real.py.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from engine.plan import Plan
from engine.run import executor
from engine.run.budget import RunCaps
from engine.run.events import ModelCallFinished, NodeFinished, NodeProgress, RunStarted
from engine.run.executor import execute_plan
from engine.run.scheduler import NodeStatus
from tests.support.fake_backend import Behaviour, MemoryCache, fake_factory, fake_models, tree


def _leaves(count: int) -> dict:
    return {"id": "root", "children": [{"id": f"l{i}"} for i in range(count)]}


def _max_overlap(recorder, node_ids) -> int:
    points = []
    for node_id in node_ids:
        start, end = recorder.intervals[node_id]
        points += [(start, 1), (end, -1)]
    active = best = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        active += step
        best = max(best, active)
    return best


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_nodes_on_one_resource_never_exceed_its_slots(slots):
    behaviours = {
        f"l{i}": Behaviour(sleep_s=0.15, resource="endpoint-a", max_concurrent=slots)
        for i in range(6)
    }
    plan = fake_models(tree(_leaves(6)))
    factory, recorder = fake_factory(behaviours)
    result = execute_plan(plan, RunCaps(max_parallel=8), backend_factory=factory)
    assert result.status == "completed"
    assert _max_overlap(recorder, [f"l{i}" for i in range(6)]) == slots


def test_a_busy_resource_does_not_hold_back_nodes_on_another_model():
    # l0..l2 queue on one local model; l3 is on an endpoint of its own and must not wait.
    behaviours = {f"l{i}": Behaviour(sleep_s=0.2, resource="local-gguf") for i in range(3)}
    behaviours["l3"] = Behaviour(sleep_s=0.2, resource="endpoint-b", max_concurrent=4)
    plan = fake_models(tree(_leaves(4)))
    factory, recorder = fake_factory(behaviours)
    execute_plan(plan, RunCaps(max_parallel=2), backend_factory=factory)
    assert recorder.overlapped("l0", "l3")  # l3 started while l0 held the local model
    assert _max_overlap(recorder, ["l0", "l1", "l2"]) == 1


def test_streamed_text_reaches_listeners_as_progress():
    pieces = tuple(f"word{i} " for i in range(8))
    plan = fake_models(tree({"id": "root"}))
    factory, _ = fake_factory({"root": Behaviour(sleep_s=1.2, stream=pieces)})
    events: list = []
    result = execute_plan(plan, backend_factory=factory, listeners=[events.append])
    progress = [e for e in events if isinstance(e, NodeProgress)]
    assert len(progress) >= 2, "expected several progress events during a 1.2 s stream"
    texts = [e.text for e in progress]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert "".join(pieces).startswith(texts[-1]) and result.answer == "".join(pieces)


def test_cancel_interrupts_running_calls_and_records_what_finished():
    spec = {
        "id": "root",
        "children": [{"id": "quick"}, {"id": "long"}, {"id": "after", "depends_on": ["long"]}],
    }
    plan = fake_models(tree(spec))
    factory, _ = fake_factory(
        {
            "quick": Behaviour(sleep_s=0.05),
            "long": Behaviour(sleep_s=20.0, stream=tuple("x" * 200)),
        }
    )
    cancel = threading.Event()
    events: list = []
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.perf_counter()
    try:
        result = execute_plan(
            plan, RunCaps(), backend_factory=factory, listeners=[events.append], cancel=cancel
        )
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5, f"cancel took {elapsed:.2f} s to stop a 20 s call"
    assert result.status == "cancelled"
    assert result.nodes["quick"].status is NodeStatus.DONE
    assert result.nodes["long"].status is NodeStatus.CANCELLED
    assert result.nodes["after"].status is NodeStatus.SKIPPED
    call = next(e for e in events if isinstance(e, ModelCallFinished) and e.node_id == "long")
    assert call.status == "cancelled" and call.output.startswith("x") and call.cache_key is None


def test_a_call_that_ignores_cancel_is_abandoned_after_the_grace_period(monkeypatch):
    monkeypatch.setattr(executor, "CANCEL_GRACE_S", 0.3)
    plan = fake_models(tree({"id": "root", "children": [{"id": "stuck"}]}))
    factory, _ = fake_factory({"stuck": Behaviour(sleep_s=5.0)})  # sleeps, never checks cancel
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.perf_counter()
    result = execute_plan(plan, backend_factory=factory, cancel=cancel)
    assert time.perf_counter() - started < 2.0
    assert result.nodes["stuck"].status is NodeStatus.CANCELLED
    assert "did not stop within" in (result.nodes["stuck"].error or "")


DIAMOND = {
    "id": "root",
    "children": [
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c"},
        {"id": "d", "depends_on": ["b"]},
    ],
}


def _edited(plan: Plan, node_id: str, instruction: str) -> Plan:
    edited = plan.model_copy(deep=True)
    edited.node(node_id).instruction = instruction
    return edited


def test_rerun_after_an_edit_executes_only_the_changed_node_and_its_descendants():
    plan = fake_models(tree(DIAMOND))
    cache = MemoryCache()
    factory, _ = fake_factory({"b": Behaviour(output="b v1")})
    first = execute_plan(plan, backend_factory=factory, listeners=[cache], cache=cache)
    assert first.status == "completed" and first.reused == []
    # One lookup for the first ready round (a, c); everything after ran downstream of a miss.
    assert cache.lookups == 1

    # b's instruction changes and so does its output; d and root read b, a and c do not.
    factory2, recorder2 = fake_factory({"b": Behaviour(output="b v2")})
    second = execute_plan(
        _edited(plan, "b", "do b differently"),
        backend_factory=factory2,
        listeners=[cache],
        cache=cache,
    )
    assert second.status == "completed"
    assert sorted(recorder2.calls) == ["b", "d", "root"]
    assert sorted(second.reused) == ["a", "c"]
    assert second.nodes["a"].reused_from == first.run_id
    assert second.nodes["a"].output == first.nodes["a"].output

    # Nothing changed since: everything is reused and no model is called.
    factory3, recorder3 = fake_factory({"b": Behaviour(output="b v2")})
    third = execute_plan(
        _edited(plan, "b", "do b differently"), backend_factory=factory3, cache=cache
    )
    assert recorder3.calls == [] and sorted(third.reused) == ["a", "b", "c", "d", "root"]
    assert third.answer == second.answer and third.total_tokens == 0


def test_rerun_from_a_node_forces_it_and_everything_downstream():
    plan = fake_models(tree(DIAMOND))
    cache = MemoryCache()
    factory, _ = fake_factory()
    execute_plan(plan, backend_factory=factory, listeners=[cache], cache=cache)
    factory2, recorder2 = fake_factory()
    result = execute_plan(plan, backend_factory=factory2, cache=cache, rerun=["b"])
    assert sorted(recorder2.calls) == ["b", "d", "root"]
    assert sorted(result.reused) == ["a", "c"]


def test_rerun_from_an_unknown_node_is_refused_before_anything_runs():
    plan = fake_models(tree(DIAMOND))
    factory, recorder = fake_factory()
    with pytest.raises(Exception, match="no such node"):
        execute_plan(plan, backend_factory=factory, rerun=["nope"])
    assert recorder.calls == []


def test_failed_and_truncated_calls_are_not_reused():
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]}))
    cache = MemoryCache()
    factory, _ = fake_factory({"a": Behaviour(error=RuntimeError("boom"))})
    execute_plan(plan, backend_factory=factory, listeners=[cache], cache=cache)
    factory2, recorder2 = fake_factory()
    result = execute_plan(plan, backend_factory=factory2, cache=cache)
    assert sorted(recorder2.calls) == ["a", "root"]  # a failed before; root never ran
    assert result.reused == ["b"]


def test_nodes_with_the_same_prompt_all_reuse_the_recorded_call():
    # Two siblings with one title, instruction and model render one prompt: one cache key.
    same = {"title": "Name a fruit", "instruction": "Name a fruit."}
    spec = {"id": "root", "children": [{"id": "a", **same}, {"id": "b", **same}, {"id": "c"}]}
    plan = fake_models(tree(spec))
    plan.node("b").model = plan.node("a").model
    cache = MemoryCache()
    factory, recorder = fake_factory()
    first = execute_plan(plan, backend_factory=factory, listeners=[cache], cache=cache)
    assert first.status == "completed" and sorted(recorder.calls) == ["a", "a", "c", "root"]
    factory2, recorder2 = fake_factory()
    second = execute_plan(plan, backend_factory=factory2, cache=cache)
    assert recorder2.calls == [], "a node sharing its prompt with another was called again"
    assert sorted(second.reused) == ["a", "b", "c", "root"]
    assert second.nodes["a"].output == second.nodes["b"].output


def test_a_cache_that_fails_means_calling_the_model_with_a_warning():
    class BrokenCache:
        def lookup(self, keys):
            raise OSError("disk gone")

    plan = fake_models(tree({"id": "root"}))
    factory, recorder = fake_factory()
    result = execute_plan(plan, backend_factory=factory, cache=BrokenCache())
    assert result.status == "completed" and recorder.calls == ["root"]
    assert any("disk gone" in w for w in result.warnings)


def test_run_started_names_the_process_and_the_run_it_resumes():
    plan = fake_models(tree({"id": "root"}))
    factory, _ = fake_factory()
    events: list = []
    execute_plan(plan, backend_factory=factory, listeners=[events.append], resumed_from="run-x")
    started = events[0]
    assert isinstance(started, RunStarted) and started.resumed_from == "run-x"
    assert started.pid and started.pid > 0
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert finished[-1].model == "fake:root"


def test_a_wide_plan_schedules_in_linear_time():
    # 2000 instant leaves: a quadratic scheduler would take seconds here.
    plan = fake_models(tree(_leaves(2000)))
    factory, recorder = fake_factory()
    started = time.perf_counter()
    result = execute_plan(
        plan, RunCaps(max_parallel=8, total_tokens=200_000), backend_factory=factory
    )
    elapsed = time.perf_counter() - started
    assert result.status == "completed" and len(recorder.calls) == 2001
    assert elapsed < 10, f"{elapsed:.1f} s for 2001 instant nodes"


# -- template rendering counts against the run's time cap ------------------------------------
HANGING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.timeout(60)
def test_a_hanging_template_fails_its_node_and_the_run_finishes_without_being_killed():
    plan = fake_models(
        tree(
            {
                "id": "root",
                "children": [
                    {"id": "hang", "instruction": HANGING},
                    {"id": "free"},
                ],
            }
        )
    )
    factory, _ = fake_factory()
    result = execute_plan(plan, RunCaps(max_parallel=2), backend_factory=factory)
    assert result.nodes["hang"].status is NodeStatus.FAILED
    assert (result.nodes["hang"].error or "").startswith(
        "Instruction of node 'hang' took longer than 2 s to render"
    )
    assert result.nodes["free"].status is NodeStatus.DONE
    assert result.nodes["root"].status is NodeStatus.BLOCKED


@pytest.mark.timeout(60)
def test_rendering_a_template_counts_against_the_runs_time_cap():
    # "slow" takes most of the 3 s cap; "hang" renders after it with less time left than the
    # template limit, so its rendering stops at the run's deadline and the run stops there.
    plan = fake_models(
        tree(
            {
                "id": "root",
                "children": [
                    {"id": "slow"},
                    {"id": "hang", "instruction": HANGING, "depends_on": ["slow"]},
                ],
            }
        )
    )
    factory, _ = fake_factory({"slow": Behaviour(sleep_s=2.2)})
    result = execute_plan(plan, RunCaps(wall_time_s=3.0), backend_factory=factory)
    assert result.nodes["slow"].status is NodeStatus.DONE
    assert result.nodes["hang"].status is NodeStatus.FAILED
    error = result.nodes["hang"].error or ""
    assert error.startswith("Instruction of node 'hang' took longer than")
    assert "the time left under the run's time cap" in error
    assert result.status in ("stopped", "failed")
