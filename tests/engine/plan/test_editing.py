"""Plan edits: pure functions that return a new validated plan or refuse with a named reason."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.errors import CycleError, PlanError
from engine.plan import ModelRef, Plan, editing
from tests.support.fake_backend import tree
from tests.support.plan_strategies import draw_edit, valid_plans


def _titled(spec: dict) -> dict:
    """Each node titled with its id, so messages are easy to read."""
    return {
        **spec,
        "title": spec["id"],
        "children": [_titled(child) for child in spec.get("children", [])],
    }


def _plan() -> Plan:
    """root: research (r1, r2 uses r1), write (uses research), review; titles = ids."""
    return _tree(
        {
            "id": "root",
            "children": [
                {"id": "research", "children": [{"id": "r1"}, {"id": "r2", "depends_on": ["r1"]}]},
                {"id": "write", "depends_on": ["research"]},
                {"id": "review"},
            ],
        }
    )


def _tree(spec: dict) -> Plan:
    return tree(_titled(spec))


def _children(plan: Plan, node_id: str) -> list[str]:
    return [child.id for child in plan.node(node_id).children]


# -- random sequences ------------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans(min_nodes=3), st.data())
def test_random_edit_sequences_always_leave_a_valid_plan_and_never_touch_their_input(plan, data):
    for _ in range(data.draw(st.integers(1, 25), label="length")):
        before = plan.to_json()
        label, edit = draw_edit(data, plan)
        try:
            outcome = edit()
        except PlanError:  # CycleError included: a refusal
            assert plan.to_json() == before, "a refused edit changed its input"
            event(f"refused {label.split()[0]}")
            continue
        event(f"applied {label.split()[0]}")
        assert plan.to_json() == before, "an edit changed its input"
        plan = outcome[0] if isinstance(outcome, tuple) else outcome
        plan.validate_graph()
        assert Plan.from_json(plan.to_json()) == plan


# -- update_node -----------------------------------------------------------------------------


def test_update_node_changes_only_the_named_fields_and_returns_a_new_plan():
    plan = _plan()
    new = editing.update_node(
        plan, "write", title="Draft", difficulty=4, difficulty_reason="long", model=ModelRef()
    )
    assert new.node("write").title == "Draft" and new.node("write").difficulty == 4
    assert new.node("write").depends_on == ["research"]
    assert plan.node("write").title == "write" and plan.node("write").difficulty is None


def test_update_node_refuses_a_title_a_sibling_already_has_ignoring_case_and_spaces():
    with pytest.raises(PlanError, match=r"Node 'write' already has a sibling titled 'review'"):
        editing.update_node(_plan(), "write", title="  REVIEW ")


def test_update_node_keeps_a_title_that_only_changes_case_when_no_sibling_has_it():
    assert editing.update_node(_plan(), "write", title="WRITE").node("write").title == "WRITE"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_update_node_refuses_a_blank_title_naming_the_node(blank):
    with pytest.raises(PlanError, match=r"Node 'write' needs a title"):
        editing.update_node(_plan(), "write", title=blank)


def test_update_node_refuses_unknown_ids_and_fields_and_bad_values():
    with pytest.raises(PlanError, match=r"No node with id 'ghost'"):
        editing.update_node(_plan(), "ghost", title="x")
    with pytest.raises(PlanError, match=r"Node 'write': cannot change children, id"):
        editing.update_node(_plan(), "write", id="w", children=[])
    with pytest.raises(PlanError, match=r"Node 'write': difficulty"):
        editing.update_node(_plan(), "write", difficulty=9)


def test_update_node_refuses_a_dependency_cycle_and_an_unknown_dependency():
    with pytest.raises(CycleError) as info:
        editing.update_node(_plan(), "r1", depends_on=["write"])
    assert {"r1", "write", "research"} <= set(info.value.cycle)
    with pytest.raises(PlanError, match=r"'write'.*depends on 'ghost'"):
        editing.update_node(_plan(), "write", depends_on=["ghost"])


# -- adding ----------------------------------------------------------------------------------


def test_add_child_inserts_at_the_index_and_returns_the_new_id():
    new, new_id = editing.add_child(_plan(), "root", "Outline", "Plan it.", index=1)
    assert _children(new, "root") == ["research", new_id, "write", "review"]
    assert new.node(new_id).instruction == "Plan it."
    appended, last = editing.add_child(_plan(), "research", "More")
    assert _children(appended, "research") == ["r1", "r2", last]


def test_add_child_refuses_a_blank_or_repeated_title_and_an_unknown_parent():
    with pytest.raises(PlanError, match="blank title"):
        editing.add_child(_plan(), "root", "  ")
    with pytest.raises(
        PlanError, match=r"new child of 'root' already has a sibling titled 'write'"
    ):
        editing.add_child(_plan(), "root", "Write")
    with pytest.raises(PlanError, match=r"No node with id 'ghost'"):
        editing.add_child(_plan(), "ghost", "x")


def test_add_sibling_goes_right_after_the_node_and_is_refused_for_the_root():
    new, new_id = editing.add_sibling(_plan(), "research", "Outline")
    assert _children(new, "root") == ["research", new_id, "write", "review"]
    with pytest.raises(PlanError, match=r"root node 'root' has no siblings"):
        editing.add_sibling(_plan(), "root", "Outline")


# -- removing --------------------------------------------------------------------------------


def test_remove_node_drops_the_subtree_and_dependencies_on_it():
    new = editing.remove_node(_plan(), "research")
    assert _children(new, "root") == ["write", "review"]
    assert "r1" not in new.nodes() and new.node("write").depends_on == []


def test_remove_node_keep_children_lifts_them_into_the_parent_at_its_position():
    new = editing.remove_node(_plan(), "research", keep_children=True)
    assert _children(new, "root") == ["r1", "r2", "write", "review"]
    assert new.node("r2").depends_on == ["r1"]
    assert new.node("write").depends_on == []  # it used the removed node itself


def test_remove_node_keep_children_refuses_a_lifted_title_the_parent_already_has():
    plan = _tree({"id": "root", "children": [{"id": "a", "children": [{"id": "b"}]}, {"id": "b2"}]})
    plan = editing.update_node(plan, "b2", title="b")
    with pytest.raises(PlanError, match=r"Node 'b', lifted into 'root', already has a sibling"):
        editing.remove_node(plan, "a", keep_children=True)


def test_remove_node_refuses_the_root_and_unknown_ids():
    with pytest.raises(PlanError, match=r"root node 'root' cannot be deleted"):
        editing.remove_node(_plan(), "root")
    with pytest.raises(PlanError, match=r"No node with id 'ghost'"):
        editing.remove_node(_plan(), "ghost")


# -- moving ----------------------------------------------------------------------------------


def test_move_node_reparents_the_subtree_at_the_index():
    new = editing.move_node(_plan(), "review", "research", index=0)
    assert _children(new, "research") == ["review", "r1", "r2"]
    assert _children(new, "root") == ["research", "write"]


@pytest.mark.parametrize(("target", "where"), [("research", "itself"), ("r2", "'r2', inside")])
def test_move_node_refuses_moving_into_its_own_subtree(target, where):
    with pytest.raises(PlanError, match=rf"Node 'research' cannot be moved under {where}"):
        editing.move_node(_plan(), "research", target)


def test_move_node_refuses_the_root_and_unknown_ids():
    with pytest.raises(PlanError, match=r"root node 'root' cannot be moved"):
        editing.move_node(_plan(), "root", "write")
    with pytest.raises(PlanError, match=r"No node with id 'ghost'"):
        editing.move_node(_plan(), "review", "ghost")


def test_move_node_refuses_a_move_that_closes_a_cycle_and_names_it():
    # 'write' uses the output of 'research'; as research's child it would also feed research.
    with pytest.raises(CycleError) as info:
        editing.move_node(_plan(), "write", "research")
    assert set(info.value.cycle) == {"write", "research"}
    assert "write" in str(info.value) and "research" in str(info.value)


def test_moving_a_node_under_a_node_that_uses_it_is_allowed_as_no_cycle():
    # 'write' uses 'research'; as write's child, research still runs before write.
    new = editing.move_node(_plan(), "research", "write")
    assert _children(new, "write") == ["research"]
    assert new.node("write").depends_on == ["research"]


def test_move_node_refuses_a_repeated_title_under_the_new_parent():
    plan = editing.update_node(_plan(), "review", title="R1")
    with pytest.raises(PlanError, match=r"Node 'review', under 'research', already has a sibling"):
        editing.move_node(plan, "review", "research")


def test_reorder_node_moves_among_siblings_and_clamps_the_index():
    assert _children(editing.reorder_node(_plan(), "review", 0), "root") == [
        "review",
        "research",
        "write",
    ]
    assert _children(editing.reorder_node(_plan(), "research", 99), "root") == [
        "write",
        "review",
        "research",
    ]
    assert _children(editing.reorder_node(_plan(), "review", -5), "root")[0] == "review"
    with pytest.raises(PlanError, match=r"root node 'root' cannot be reordered"):
        editing.reorder_node(_plan(), "root", 0)


# -- duplicating -----------------------------------------------------------------------------


def test_duplicate_node_copies_the_subtree_with_fresh_ids_and_remaps_inner_dependencies():
    plan = editing.update_node(_plan(), "r1", depends_on=["review"])
    new, copy_id = editing.duplicate_node(plan, "research")
    assert _children(new, "root") == ["research", copy_id, "write", "review"]
    copy = new.node(copy_id)
    assert copy.title == "research (copy)"
    c1, c2 = copy.children
    assert {c1.id, c2.id}.isdisjoint(plan.nodes()) and copy_id not in plan.nodes()
    assert [c1.title, c2.title] == ["r1", "r2"]
    assert c2.depends_on == [c1.id]  # inside the copy: points at the copy
    assert c1.depends_on == ["review"]  # outside: kept
    assert new.node("write").depends_on == ["research"]  # users of the original are untouched
    assert new.node("r2").depends_on == ["r1"]


def test_duplicating_twice_numbers_the_copies_and_long_titles_stay_in_bounds():
    once, first = editing.duplicate_node(_plan(), "review")
    twice, second = editing.duplicate_node(once, "review")
    assert twice.node(first).title == "review (copy)"
    assert twice.node(second).title == "review (copy 2)"
    long = editing.update_node(_plan(), "review", title="x" * 200)
    copied, copy_id = editing.duplicate_node(long, "review")
    title = copied.node(copy_id).title
    assert len(title) == 200 and title.endswith(" (copy)")


def test_duplicate_node_refuses_the_root():
    with pytest.raises(PlanError, match=r"root node 'root' cannot be duplicated"):
        editing.duplicate_node(_plan(), "root")


# -- dependencies ----------------------------------------------------------------------------


def test_add_dependency_adds_the_edge_once():
    new = editing.add_dependency(_plan(), "review", "write")
    assert new.node("review").depends_on == ["write"]
    assert editing.add_dependency(new, "review", "write") == new


def test_add_dependency_that_closes_a_cycle_raises_cycle_error_naming_the_path():
    # 'write' uses 'research'; 'research' (through r1) using 'write' closes write -> ... loop.
    with pytest.raises(CycleError) as info:
        editing.add_dependency(_plan(), "r1", "write")
    assert info.value.cycle == ["r1", "research", "write"]
    assert "r1 -> research -> write -> r1" in str(info.value)


def test_add_dependency_on_itself_or_its_parent_is_a_cycle():
    with pytest.raises(CycleError, match=r"r1 -> r1"):
        editing.add_dependency(_plan(), "r1", "r1")
    with pytest.raises(CycleError, match=r"r1 -> research -> r1"):
        editing.add_dependency(_plan(), "r1", "research")


def test_add_dependency_refuses_unknown_ids():
    with pytest.raises(PlanError, match=r"Node 'write' cannot use the output of 'ghost'"):
        editing.add_dependency(_plan(), "write", "ghost")
    with pytest.raises(PlanError, match=r"No node with id 'ghost'"):
        editing.add_dependency(_plan(), "ghost", "write")


def test_remove_dependency_drops_the_edge_and_refuses_one_that_is_not_there():
    assert editing.remove_dependency(_plan(), "write", "research").node("write").depends_on == []
    with pytest.raises(PlanError, match=r"Node 'review' does not use the output of 'write'"):
        editing.remove_dependency(_plan(), "review", "write")
