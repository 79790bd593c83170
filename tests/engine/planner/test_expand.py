"""Expand a node and re-plan a subtree: scripted planner output for the tree surgery, the real
bundled model (and the loopback server) for the whole path."""

from __future__ import annotations

import pytest

from engine.errors import PlanError
from engine.plan import GenerationConfig, ModelRef, Plan
from engine.planner.base_planner import DEFAULT_SAMPLES
from engine.planner.decompose import PLAN_SCHEMA
from engine.planner.expand import child_ids, expand_node, replan_subtree
from tests.support.fake_backend import ScriptedPlanner, planner_json, subtask, tree


def trip_plan() -> Plan:
    """root -> [s1 (flights), s2 (stay) -> [s2.1, s2.2], s3 (budget, depends on s2.1)]."""
    plan = tree(
        {
            "id": "root",
            "title": "Trip to Lisbon",
            "children": [
                {"id": "s1", "title": "Flights", "instruction": "Find cheap flights."},
                {
                    "id": "s2",
                    "title": "Stay",
                    "instruction": "Choose where to stay.",
                    "children": [
                        {"id": "s2.1", "title": "Hostels"},
                        {"id": "s2.2", "title": "Guesthouses"},
                    ],
                },
                {"id": "s3", "title": "Budget", "depends_on": ["s2.1"]},
            ],
        },
        task="Plan a three-day trip to Lisbon on a small budget",
    )
    plan.node("s2").model = ModelRef(path="/models/other.gguf")
    plan.node("s2").generation = GenerationConfig(temperature=0.9)
    plan.node("s2").difficulty = 4
    return plan


def test_child_ids_extend_the_parent_id_and_skip_taken_ones():
    assert child_ids({"root"}, "root", 2) == ["s1", "s2"]
    assert child_ids({"s2", "s2.1"}, "s2", 2) == ["s2.2", "s2.3"]
    deep = "x" * 63
    assert child_ids({deep}, deep, 1) == ["n1"]  # "x...x.1" would pass the 64-character limit


def test_expand_adds_children_with_mapped_dependencies_and_ratings_and_keeps_the_rest():
    plan = trip_plan()
    planner = ScriptedPlanner(
        planner_json(
            subtask("Compare airlines", difficulty=2, reason="lookup"),
            subtask("Pick dates", [1], difficulty=3, reason="trade-offs"),
        )
    )
    result = expand_node(plan, "s1", backend=planner, style="chat")
    assert not result.fallback and result.new_ids == ["s1.1", "s1.2"]
    s1 = result.plan.node("s1")
    assert [c.title for c in s1.children] == ["Compare airlines", "Pick dates"]
    assert result.plan.node("s1.2").depends_on == ["s1.1"]
    assert (result.plan.node("s1.2").difficulty, result.plan.node("s1.2").difficulty_reason) == (
        3,
        "trade-offs",
    )
    # Nothing outside the expanded node changed.
    assert s1.model_copy(update={"children": []}) == plan.node("s1")
    for node_id in ("root", "s2", "s2.1", "s2.2", "s3"):
        before, after = plan.node(node_id), result.plan.node(node_id)
        if node_id != "root":
            assert after == before
    assert plan.node("s1").children == []  # the input plan is not modified
    assert planner.requests[0][2] is PLAN_SCHEMA


def test_the_expand_prompt_names_the_task_ancestors_and_siblings():
    plan = trip_plan()
    planner = ScriptedPlanner(planner_json(subtask("Dorm beds"), subtask("Private rooms")))
    expand_node(plan, "s2.1", backend=planner, style="chat")
    prompt = planner.requests[0][0][-1]["content"]
    assert plan.task in prompt
    assert "This step is part of:\n- Stay: Choose where to stay." in prompt
    assert "Other steps beside this one (done separately):\n- Guesthouses" in prompt
    assert "Step to split: Hostels" in prompt
    assert "- Flights" not in prompt  # siblings of the parent are not this node's siblings


def test_expanding_a_node_with_children_appends_and_drops_repeats_of_them():
    plan = trip_plan()
    planner = ScriptedPlanner(
        planner_json(subtask("hostels"), subtask("Apartments"), subtask("Camping"))
    )
    result = expand_node(plan, "s2", backend=planner, style="chat")
    titles = [c.title for c in result.plan.node("s2").children]
    assert titles == ["Hostels", "Guesthouses", "Apartments", "Camping"]
    assert result.new_ids == ["s2.3", "s2.4"]
    assert any("repeats the existing sub-step 'Hostels'" in n for n in result.notes)
    assert "Sub-steps it already has (add different ones):\n- Hostels" in planner.prompts[0]


def test_a_child_that_restates_the_node_is_dropped():
    plan = trip_plan()
    planner = ScriptedPlanner(
        planner_json(subtask("Flights"), subtask("Compare airlines"), subtask("Pick dates"))
    )
    result = expand_node(plan, "s1", backend=planner, style="chat")
    assert [c.title for c in result.plan.node("s1").children] == ["Compare airlines", "Pick dates"]
    assert any("restates 'Flights'" in n for n in result.notes)


def test_unusable_output_twice_leaves_the_plan_unchanged_and_says_why():
    plan = trip_plan()
    planner = ScriptedPlanner('{"subtasks": [{"title": "Only', planner_json(subtask("One")))
    result = expand_node(plan, "s1", backend=planner, style="chat")
    assert result.fallback and result.plan == plan and result.new_ids == []
    assert result.attempts == 2
    assert "could not split 'Flights'" in result.notes[-1]
    assert "truncated" in result.notes[-1] and "only 1 usable subtask" in result.notes[-1]
    assert "The plan is unchanged." in result.notes[-1]


def test_an_unknown_node_is_refused_before_any_model_call():
    planner = ScriptedPlanner()
    with pytest.raises(PlanError, match="No node with id 'nope'"):
        expand_node(trip_plan(), "nope", backend=planner, style="chat")
    assert planner.requests == []


def test_replan_replaces_the_subtree_keeps_the_node_settings_and_drops_dangling_edges():
    plan = trip_plan()
    planner = ScriptedPlanner(planner_json(subtask("Old town rooms"), subtask("Beach rooms")))
    result = replan_subtree(plan, "s2", backend=planner, style="chat")
    s2 = result.plan.node("s2")
    assert [(c.id, c.title) for c in s2.children] == [
        ("s2.1", "Old town rooms"),
        ("s2.2", "Beach rooms"),
    ]
    assert s2.model == plan.node("s2").model and s2.generation == plan.node("s2").generation
    assert s2.difficulty == 4
    # s3 depended on the old s2.1 (Hostels), which is gone: the edge is dropped, not remapped.
    assert result.plan.node("s3").depends_on == []
    assert any("'Budget' no longer depends on 'Hostels'" in n for n in result.notes)
    assert result.plan.node("s1") == plan.node("s1")
    # Re-planning does not show the old children as "already there".
    assert "Sub-steps it already has" not in planner.prompts[0]


def test_replan_defaults_to_a_fresh_seed_so_it_can_differ_from_the_first_split():
    planner = ScriptedPlanner(planner_json(subtask("A"), subtask("B")))
    replan_subtree(trip_plan(), "s2", backend=planner, style="chat")
    assert planner.requests[0][1].seed is None


# -- the real bundled model ---------------------------------------------------------------------


def _check_split(result, before: Plan, node_id: str, *, replaced: bool) -> None:
    after = Plan.from_json(result.plan.to_json())  # valid and serialisable
    # The JSON planner: one call and at most one retry; the sampling planner (base models):
    # one batched call of DEFAULT_SAMPLES candidates.
    assert result.attempts in ((1, 2) if result.style == "chat" else (DEFAULT_SAMPLES,))
    if result.fallback:
        assert after == before
        assert "The plan is unchanged." in result.notes[-1]
        return
    children = after.node(node_id).children
    kept = 0 if replaced else len(before.node(node_id).children)
    assert 2 <= len(children) - kept <= 6
    assert [c.id for c in children[kept:]] == result.new_ids
    for node_id_outside in (
        set(before.nodes()) - {node_id} - {n for n in before.nodes() if n.startswith(f"{node_id}.")}
    ):
        if node_id_outside != before.root.id:
            assert after.node(node_id_outside).title == before.node(node_id_outside).title


@pytest.mark.model
def test_bundled_model_expands_a_node_of_a_plan(bundled_path):
    plan = trip_plan()
    plan.node("s2").model = None  # the expanding model is the plan's default: the bundled one
    result = expand_node(plan, "s1")
    _check_split(result, plan, "s1", replaced=False)
    assert all(c.usage.output_tokens > 0 for c in result.calls)


# The remote (JSON-schema) planner is tested through the loopback server by
# test_decompose_through_the_remote_llama_server_uses_the_schema: re-planning goes through the
# same call, so here the bundled model re-plans (one batched call of its candidates).
@pytest.mark.model
def test_bundled_model_replans_a_subtree(bundled_path):
    plan = trip_plan()
    plan.node("s2").model = None  # the re-planning model is the plan's default: the bundled one
    result = replan_subtree(plan, "s2", seed=11)
    _check_split(result, plan, "s2", replaced=True)
    assert all(c.usage.output_tokens > 0 for c in result.calls)
