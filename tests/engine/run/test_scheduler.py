"""The scheduler state machine and the token budget: no threads, no models."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.run.budget import MIN_OUTPUT_TOKENS, RunCaps, TokenBudget
from engine.run.scheduler import NodeStatus, Scheduler
from tests.support.fake_backend import tree


def _scheduler(plan) -> Scheduler:
    return Scheduler(plan.execution_graph(), plan.execution_order())


DIAMOND = {
    "id": "root",
    "children": [
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a"]},
        {"id": "d", "depends_on": ["b", "c"]},
    ],
}


def test_only_nodes_with_all_predecessors_done_are_ready():
    sched = _scheduler(tree(DIAMOND))
    assert sched.ready() == ["a"]
    sched.start("a")
    assert sched.ready() == []
    assert sched.running == ["a"]
    sched.finish("a")
    assert sched.ready() == ["b", "c"]
    sched.start("b")
    sched.finish("b")
    assert sched.ready() == ["c"]  # d still waits for c
    sched.start("c")
    sched.finish("c")
    assert sched.ready() == ["d"]
    sched.start("d")
    sched.finish("d")
    assert sched.ready() == ["root"]
    sched.start("root")
    assert not sched.finished
    sched.finish("root")
    assert sched.finished


def test_failure_blocks_every_dependant_and_names_the_cause():
    sched = _scheduler(tree(DIAMOND))
    sched.start("a")
    blocked = sched.fail("a", "boom")
    assert blocked == ["b", "c", "d", "root"]
    assert sched.status["a"] is NodeStatus.FAILED and sched.reasons["a"] == "boom"
    for node in blocked:
        assert sched.status[node] is NodeStatus.BLOCKED
        assert "'a' failed" in sched.reasons[node]
    assert sched.finished
    assert sched.ready() == []


def test_failure_leaves_an_independent_branch_runnable():
    plan = tree(
        {"id": "root", "children": [{"id": "x"}, {"id": "y"}, {"id": "z", "depends_on": ["x"]}]}
    )
    sched = _scheduler(plan)
    sched.start("x")
    sched.start("y")
    assert sched.fail("x", "bad") == ["z", "root"]
    assert sched.status["y"] is NodeStatus.RUNNING
    sched.finish("y")
    assert sched.status["y"] is NodeStatus.DONE
    assert sched.finished


def test_skip_pending_skips_only_pending_nodes_with_the_reason():
    sched = _scheduler(tree(DIAMOND))
    sched.start("a")
    skipped = sched.skip_pending("cancelled by the user")
    assert skipped == ["b", "c", "d", "root"]
    assert sched.status["a"] is NodeStatus.RUNNING
    assert {sched.reasons[n] for n in skipped} == {"cancelled by the user"}
    assert not sched.finished
    sched.finish("a")
    assert sched.finished


def test_requeue_returns_a_running_node_to_pending():
    sched = _scheduler(tree(DIAMOND))
    sched.start("a")
    sched.requeue("a")
    assert sched.status["a"] is NodeStatus.PENDING
    assert sched.ready() == ["a"]


@pytest.mark.parametrize("action", ["finish", "requeue"])
def test_illegal_transitions_are_refused(action):
    sched = _scheduler(tree(DIAMOND))
    with pytest.raises(ValueError, match="not running"):
        getattr(sched, action)("a")
    with pytest.raises(ValueError, match="not running"):
        sched.fail("a", "x")
    sched.start("a")
    with pytest.raises(ValueError, match="not pending"):
        sched.start("a")


# -- token budget ---------------------------------------------------------------------------


def test_budget_grants_less_output_near_the_cap_and_refuses_below_the_minimum():
    budget = TokenBudget(200)
    assert budget.reserve_call(50, 100) == 100
    assert budget.available == 50
    assert budget.reserve_call(10, 100) == 40  # only 40 left after its prompt
    assert budget.available == 0
    assert budget.reserve_call(1, MIN_OUTPUT_TOKENS) is None
    budget.settle(150, 120)
    assert budget.used == 120
    assert budget.available == 200 - 120 - 50


def test_run_caps_bounds_are_enforced():
    with pytest.raises(ValueError):
        RunCaps(total_tokens=10)
    with pytest.raises(ValueError):
        RunCaps(max_parallel=0)
    with pytest.raises(ValueError):
        RunCaps(max_tokens_per_node=MIN_OUTPUT_TOKENS - 1)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(100, 5000),
    calls=st.lists(
        st.tuples(st.integers(1, 400), st.integers(MIN_OUTPUT_TOKENS, 600), st.floats(0, 1)),
        min_size=1,
        max_size=40,
    ),
)
def test_concurrent_reservations_never_exceed_the_total(total, calls):
    """Threads reserving and settling at once: committed + reserved never passes the cap."""
    budget = TokenBudget(total)
    peak = []
    lock = threading.Lock()

    def worker(prompt: int, wanted: int, fraction: float) -> None:
        granted = budget.reserve_call(prompt, wanted)
        if granted is None:
            return
        with lock:
            peak.append(budget.total - budget.available)
        assert MIN_OUTPUT_TOKENS <= granted <= wanted
        budget.settle(prompt + granted, prompt + int(granted * fraction))

    threads = [threading.Thread(target=worker, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.used <= total
    assert all(value <= total for value in peak)
    assert budget.available == total - budget.used  # every reservation settled
