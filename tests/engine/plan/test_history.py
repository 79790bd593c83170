"""Undo/redo of plan edits: any sequence undoes back to the exact starting plan."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import editing
from engine.errors import PlanError
from engine.plan import Plan
from engine.plan.history import PlanHistory
from tests.support.fake_backend import tree
from tests.support.plan_strategies import draw_edit, valid_plans


def _plan() -> Plan:
    return tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans(min_nodes=3), st.data())
def test_undoing_a_random_edit_sequence_restores_the_start_and_redo_restores_the_end(plan, data):
    initial = plan
    history = PlanHistory(plan)
    states = [plan]  # every distinct plan the history went through
    for _ in range(data.draw(st.integers(1, 25), label="length")):
        label, edit = draw_edit(data, history.current)
        try:
            outcome = edit()
        except PlanError:
            continue
        new = outcome[0] if isinstance(outcome, tuple) else outcome
        assert history.apply(new, label) == new
        if new != states[-1]:
            states.append(new)
        assert history.current == new
    final = history.current
    assert history.can_redo is False
    undone = []
    while history.can_undo:
        undone.append(history.undo())
    assert history.current == initial
    assert undone == states[-2::-1]  # each undo gives back the plan before that edit
    while history.can_redo:
        history.redo()
    assert history.current == final
    assert history.can_undo == (len(states) > 1)


def test_labels_name_the_edit_that_undo_and_redo_would_affect():
    history = PlanHistory(_plan())
    assert (history.undo_label, history.redo_label) == (None, None)
    assert not history.can_undo and not history.can_redo
    history.apply(editing.add_child(history.current, "a", "Leaf")[0], "add child")
    history.apply(editing.reorder_node(history.current, "b", 0), "move b up")
    assert history.undo_label == "move b up"
    history.undo()
    assert (history.undo_label, history.redo_label) == ("add child", "move b up")


def test_a_new_edit_after_undo_clears_redo():
    start = _plan()
    history = PlanHistory(start)
    history.apply(editing.remove_node(start, "a"), "remove a")
    history.undo()
    assert history.can_redo
    history.apply(editing.remove_node(start, "b"), "remove b")
    assert not history.can_redo and history.redo_label is None
    assert [c.id for c in history.current.root.children] == ["a"]


def test_applying_an_unchanged_plan_records_no_step():
    history = PlanHistory(_plan())
    history.apply(editing.add_dependency(_plan(), "b", "a"), "b uses a")
    history.apply(editing.add_dependency(history.current, "b", "a"), "again")
    assert history.undo_label == "b uses a"
    history.undo()
    assert not history.can_undo


def test_undo_and_redo_with_nothing_to_do_are_refused():
    history = PlanHistory(_plan())
    with pytest.raises(PlanError, match="Nothing to undo"):
        history.undo()
    with pytest.raises(PlanError, match="Nothing to redo"):
        history.redo()


def test_history_keeps_only_the_last_limit_steps():
    history = PlanHistory(_plan(), limit=3)
    plan = _plan()
    for i in range(5):
        plan = editing.update_node(plan, "a", instruction=f"v{i}")
        history.apply(plan, f"v{i}")
    steps = 0
    while history.can_undo:
        history.undo()
        steps += 1
    assert steps == 3
    assert history.current.node("a").instruction == "v1"
    with pytest.raises(ValueError, match="at least 1"):
        PlanHistory(_plan(), limit=0)


def test_mutating_a_plan_handed_out_or_in_does_not_rewrite_history():
    start = _plan()
    history = PlanHistory(start)
    new = editing.update_node(start, "a", title="Alpha")
    history.apply(new, "rename")
    new.root.children[0].title = "tampered"
    history.current.root.children[1].title = "tampered too"
    start.root.title = "tampered start"
    assert history.current.node("a").title == "Alpha"
    assert history.current.node("b").title == "step b"
    assert history.undo() == _plan()
