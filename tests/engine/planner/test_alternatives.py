"""Alternative plans and merging picked subtasks: scripted output for the logic, the real
bundled model for the whole path."""

from __future__ import annotations

import pytest

from engine.errors import CycleError, PlanError
from engine.plan import GenerationConfig, ModelRef, Plan
from engine.planner.alternatives import (
    ALTERNATIVE_TEMPERATURES,
    MAX_ALTERNATIVES,
    SEED_STRIDE,
    merge_alternatives,
    sample_alternatives,
)
from engine.planner.base_planner import DEFAULT_SAMPLES
from engine.planner.decompose import build_plan, parse_subtasks
from engine.planner.scoring import off_topic_steps
from tests.support.fake_backend import ScriptedPlanner, planner_json, subtask, tree

TASK = "Organise a team offsite"


def alternative(*subs) -> Plan:
    subtasks, _ = parse_subtasks(planner_json(*subs), TASK)
    return build_plan(TASK, subtasks, ModelRef())


def test_k_samples_with_spread_seeds_warm_temperatures_and_repeats_noted():
    planner = ScriptedPlanner(
        planner_json(subtask("Venue"), subtask("Agenda", [1])),
        planner_json(subtask("Budget"), subtask("Invitations")),
        planner_json(subtask("venue"), subtask("agenda")),
    )
    results = sample_alternatives(TASK, 3, backend=planner, seed=5, style="chat")
    assert len(results) == 3 and not any(r.fallback for r in results)
    assert [c.title for c in results[1].plan.root.children] == ["Budget", "Invitations"]
    seeds = [config.seed for _, config, _ in planner.requests]
    assert seeds == [5, 5 + SEED_STRIDE, 5 + 2 * SEED_STRIDE]
    assert {config.temperature for _, config, _ in planner.requests} == {
        ALTERNATIVE_TEMPERATURES[0]
    }
    assert "the same steps as alternative 1" in results[2].notes


def test_an_unusable_sample_is_a_fallback_and_the_others_still_come_back():
    planner = ScriptedPlanner("nope", "still nope", planner_json(subtask("A"), subtask("B")))
    results = sample_alternatives(TASK, 2, backend=planner, seed=1, style="chat")
    assert [r.fallback for r in results] == [True, False]


@pytest.mark.parametrize("k", [0, MAX_ALTERNATIVES + 1])
def test_k_out_of_range_is_refused(k):
    with pytest.raises(PlanError, match="alternatives"):
        sample_alternatives(TASK, k, backend=ScriptedPlanner(), style="chat")


def test_subtree_alternatives_need_the_plan_and_change_only_the_subtree():
    with pytest.raises(PlanError, match="needs the plan"):
        sample_alternatives(TASK, 2, backend=ScriptedPlanner(), node_id="s1")
    base = alternative(subtask("Venue"), subtask("Agenda", [1]))
    planner = ScriptedPlanner(
        planner_json(subtask("Shortlist venues"), subtask("Visit them")),
        planner_json(subtask("Ask the team"), subtask("Book the best")),
    )
    results = sample_alternatives(
        TASK, 2, plan=base, node_id="s1", backend=planner, seed=3, style="chat"
    )
    assert [c.title for c in results[1].plan.node("s1").children] == [
        "Ask the team",
        "Book the best",
    ]
    for result in results:
        assert result.plan.node("s2") == base.node("s2")


def test_merge_keeps_dependencies_within_a_source_and_drops_others_with_a_note():
    first = alternative(subtask("Venue"), subtask("Agenda", [1]), subtask("Catering", [1]))
    second = alternative(subtask("Budget"), subtask("Agenda", [1]), subtask("Invites", [1, 2]))
    base = first.model_copy(update={"default_generation": GenerationConfig(temperature=0.3)})
    merged, notes = merge_alternatives(
        base, [(first, "s1"), (first, "s3"), (second, "s2"), (second, "s3")]
    )
    children = merged.root.children
    assert [(c.id, c.title) for c in children] == [
        ("s1", "Venue"),
        ("s2", "Catering"),
        ("s3", "Agenda"),
        ("s4", "Invites"),
    ]
    assert merged.node("s2").depends_on == ["s1"]  # Catering -> Venue, same source
    assert merged.node("s4").depends_on == ["s3"]  # Invites -> Agenda kept, Budget not picked
    assert merged.node("s3").depends_on == []  # second's Agenda needed Budget, not picked
    assert any("'Agenda' no longer depends on 'Budget'" in n for n in notes)
    assert any("'Invites' no longer depends on 'Budget'" in n for n in notes)
    assert merged.default_generation.temperature == 0.3  # the base plan's settings stay
    merged.validate_graph()


def test_merge_numbers_repeated_titles_and_copies_subtrees_with_fresh_ids():
    first = tree(
        {
            "id": "root",
            "children": [
                {"id": "s1", "title": "Venue", "children": [{"id": "s1.1", "title": "Visit"}]},
                {"id": "s2", "title": "Food", "depends_on": ["s1.1"]},
            ],
        },
        task=TASK,
    )
    second = alternative(subtask("Venue"), subtask("Music"))
    merged, _ = merge_alternatives(first, [(second, "s1"), (first, "s1"), (first, "s2")])
    assert [(c.id, c.title) for c in merged.root.children] == [
        ("s1", "Venue"),
        ("s2", "Venue (2)"),
        ("s3", "Food"),
    ]
    assert [c.id for c in merged.node("s2").children] == ["s2.1"]
    assert merged.node("s3").depends_on == ["s2.1"]  # followed its dependency to the new id


def test_merge_under_a_subtree_keeps_edges_to_nodes_outside_it():
    base = tree(
        {
            "id": "root",
            "children": [
                {"id": "s1", "title": "Research"},
                {"id": "s2", "title": "Write", "children": [{"id": "s2.1", "title": "Draft"}]},
            ],
        },
        task=TASK,
    )
    source = tree(
        {
            "id": "root",
            "children": [
                {"id": "s1", "title": "Research"},
                {
                    "id": "s2",
                    "title": "Write",
                    "children": [{"id": "s2.1", "title": "Outline", "depends_on": ["s1"]}],
                },
            ],
        },
        task=TASK,
    )
    merged, notes = merge_alternatives(base, [(source, "s2.1")], under="s2")
    assert merged.node("s2.1").title == "Outline" and merged.node("s2.1").depends_on == ["s1"]
    assert notes == []


def test_merge_with_nothing_picked_or_creating_a_cycle_is_refused():
    base = alternative(subtask("A"), subtask("B"))
    with pytest.raises(PlanError, match="Tick at least one"):
        merge_alternatives(base, [])
    cyclic_base = tree(
        {
            "id": "root",
            "children": [
                {"id": "s1", "title": "Outside", "depends_on": ["s2"]},
                {"id": "s2", "title": "Parent", "children": [{"id": "s2.1", "title": "Old"}]},
            ],
        },
        task=TASK,
    )
    source = tree(
        {
            "id": "root",
            "children": [
                {"id": "s1", "title": "Outside"},
                {
                    "id": "s2",
                    "title": "Parent",
                    "children": [{"id": "s2.1", "title": "New", "depends_on": ["s1"]}],
                },
            ],
        },
        task=TASK,
    )
    with pytest.raises(CycleError):
        merge_alternatives(cyclic_base, [(source, "s2.1")], under="s2")


# -- the real bundled model ---------------------------------------------------------------------


@pytest.mark.model
def test_bundled_model_samples_two_alternatives_that_can_be_merged(bundled_path):
    results = sample_alternatives(TASK, 2, seed=21)
    assert len(results) == 2
    for result in results:
        Plan.from_json(result.plan.to_json())
        assert result.plan.task == TASK and result.style == "base"
        # One batched call of candidates (the base planner), or none when the task lists parts.
        assert result.attempts in (0, 1, DEFAULT_SAMPLES)
    useful = [
        r
        for r in results
        if not r.fallback
        and not off_topic_steps(
            [f"{c.title}. {c.instruction}" for c in r.plan.root.children], TASK, "en"
        )
    ]
    assert useful, [r.notes for r in results]
    picks = [(r.plan, r.plan.root.children[0].id) for r in results if not r.fallback]
    if not picks:
        pytest.fail(f"both samples were unusable: {[r.notes for r in results]}")
    merged, _ = merge_alternatives(results[0].plan, picks)
    assert len(merged.root.children) == len(picks)
    merged.validate_graph()
