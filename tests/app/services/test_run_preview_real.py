"""Caps that cannot reach the answer, flagged before the run and continued after it, on the real
bundled model (``app.services.run_preview``)."""

from __future__ import annotations

import pytest

from app.services.run_preview import continue_caps, preview_run, stopped_on_cap
from engine.plan import Plan, single_node_plan
from engine.plan.editing import add_child
from engine.run.budget import RunCaps
from storage.workspace import Workspace

pytestmark = [pytest.mark.model, pytest.mark.timeout(1200)]


def three_node_plan() -> Plan:
    """What the workbench makes from "Start from a one-node plan" and "Add child" twice."""
    plan = single_node_plan("Plan a three-day trip to Lisbon on a budget.", None)
    plan, _ = add_child(plan, plan.root.id, "New subtask 1")
    plan, _ = add_child(plan, plan.root.id, "New subtask 2")
    return plan


def test_a_capped_run_is_flagged_before_and_continues_with_its_finished_nodes_reused(tmp_path):
    ws = Workspace(tmp_path)
    # One node at a time and a fixed seed: which nodes finish inside the cap is then the same
    # on every machine. With two at a time it depends on which call gets the CPU first, and a
    # node whose output the cap cut short is rightly run again, not reused.
    plan = three_node_plan()
    plan = plan.model_copy(
        update={"default_generation": plan.default_generation.model_copy(update={"seed": 7})}
    )
    small = RunCaps(total_tokens=600, max_parallel=1)

    before = preview_run(plan, small, ws).reachability
    assert before.verdict == "cannot_reach"
    assert any("Raise total tokens" in finding.reason for finding in before.problems)

    capped = ws.run_plan(plan, small)
    assert capped.status == "stopped" and stopped_on_cap(capped.status, capped.stop_reason)
    assert capped.stop_reason.startswith("token cap reached")
    assert capped.answer is None
    assert capped.total_tokens <= 600
    finished = [n for n, r in capped.nodes.items() if r.status.value == "done"]
    assert finished and plan.root.id not in finished

    raised = continue_caps(plan, small, capped.stop_reason, ws)
    assert raised.total_tokens >= 2 * small.total_tokens
    # The check says these caps are enough (the time it takes is recorded now, and uncapped).
    assert preview_run(plan, raised, ws).reachability.verdict == "reachable"

    continued = ws.run_plan(plan, raised, use_cache=True)
    reused = [n for n, r in continued.nodes.items() if r.reused_from == capped.run_id]
    assert len(reused) >= 1 and set(reused) <= set(finished)
    assert continued.status in {"completed", "suspect"}
    assert continued.answer and continued.answer.strip()
    assert continued.nodes[plan.root.id].reused_from is None  # the root really ran


def test_recorded_calls_give_the_time_check_its_pace(tmp_path):
    ws = Workspace(tmp_path)
    plan = single_node_plan("Name a colour.", None)
    ws.run_plan(plan, RunCaps(total_tokens=2000, max_tokens_per_node=16))

    check = preview_run(plan, RunCaps(total_tokens=2000, wall_time_s=1.0), ws).reachability
    assert check.expected_seconds is not None and check.expected_seconds > 0
    generous = RunCaps(total_tokens=2000, wall_time_s=check.expected_seconds * 10 + 10)
    assert preview_run(plan, generous, ws).reachability.verdict == "reachable"
