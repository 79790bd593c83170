"""Difficulty ratings: scripted answers for batching and repair, the real model end to end."""

from __future__ import annotations

import json

import pytest

from engine.plan import Plan
from engine.planner.decompose import UnusablePlan
from engine.planner.difficulty import (
    RATE_BATCH,
    _example,
    parse_ratings,
    rate_difficulty,
    rating_messages,
)
from tests.support.fake_backend import ScriptedPlanner, tree


def ratings(*pairs) -> str:
    return json.dumps({"ratings": [{"difficulty": d, "reason": r} for d, r in pairs]})


def small_plan() -> Plan:
    plan = tree(
        {
            "id": "root",
            "title": "Report",
            "children": [
                {"id": "s1", "title": "Collect data"},
                {"id": "s2", "title": "Analyse", "depends_on": ["s1"]},
            ],
        },
        task="Write a report on rainfall",
    )
    plan.node("s1").difficulty, plan.node("s1").difficulty_reason = 5, "the analyst says so"
    return plan


def test_only_unrated_nodes_are_rated_and_overrides_are_kept():
    planner = ScriptedPlanner(ratings((2, "combines two results"), (4, "needs reasoning")))
    rated, notes = rate_difficulty(small_plan(), backend=planner)
    assert (rated.node("root").difficulty, rated.node("root").difficulty_reason) == (
        2,
        "combines two results",
    )
    assert rated.node("s2").difficulty == 4
    assert (rated.node("s1").difficulty, rated.node("s1").difficulty_reason) == (
        5,
        "the analyst says so",
    )
    assert notes[0] == "Rated 2 of 2 node(s)."
    messages, _, schema = planner.requests[0]
    items = schema["properties"]["ratings"]
    assert items["minItems"] == items["maxItems"] == 2
    assert "1. Report:" in messages[-1]["content"] and "2. Analyse:" in messages[-1]["content"]
    assert "Collect data" not in messages[-1]["content"]


def test_rerating_everything_overwrites_when_asked():
    planner = ScriptedPlanner(ratings((1, "a"), (1, "b"), (1, "c")))
    rated, _ = rate_difficulty(small_plan(), backend=planner, only_missing=False)
    assert rated.node("s1").difficulty == 1


def test_a_fully_rated_plan_makes_no_call():
    plan = small_plan()
    for node, _ in plan.iter_nodes():
        node.difficulty = 3
    planner = ScriptedPlanner()
    rated, notes = rate_difficulty(plan, backend=planner)
    assert rated == plan and planner.requests == [] and "nothing to rate" in notes[0]


def test_large_plans_are_rated_in_batches():
    plan = tree(
        {"id": "root", "children": [{"id": f"c{i}", "title": f"step {i}"} for i in range(19)]}
    )
    sizes = [RATE_BATCH, RATE_BATCH, 20 - 2 * RATE_BATCH]
    planner = ScriptedPlanner(*(ratings(*[(3, "x")] * size) for size in sizes))
    rated, notes = rate_difficulty(plan, backend=planner)
    assert len(planner.requests) == 3
    assert [r[2]["properties"]["ratings"]["maxItems"] for r in planner.requests] == sizes
    assert all(node.difficulty == 3 for node, _ in rated.iter_nodes())
    assert notes[0] == "Rated 20 of 20 node(s)."


def test_out_of_range_short_and_copied_answers_are_repaired_with_notes():
    copied = _example()["answer"]["ratings"][0]["reason"]
    values, notes = parse_ratings(
        json.dumps({"ratings": [{"difficulty": 9, "reason": copied}]}), ["A", "B"]
    )
    assert values == [(5, None), (None, None)]
    assert any("set the difficulty of 'A' to 5" in n for n in notes)
    assert any("copies the worked example" in n for n in notes)
    assert "the model gave 1 ratings for 2 steps" in notes


@pytest.mark.parametrize(
    "text", ["not json", '{"ratings": "x"}', '{"ratings": [{"difficulty": "?"}]}']
)
def test_unusable_ratings_raise(text):
    with pytest.raises(UnusablePlan):
        parse_ratings(text, ["A"])


def test_unusable_answers_twice_leave_the_nodes_unrated_and_say_so():
    planner = ScriptedPlanner("no", '{"ratings": []}')
    rated, notes = rate_difficulty(small_plan(), backend=planner)
    assert rated.node("s2").difficulty is None and rated.node("root").difficulty is None
    assert notes[0] == "Rated 0 of 2 node(s)."
    assert "Could not rate 'Report', 'Analyse'" in notes[1]


def test_the_prompt_carries_a_worked_example_and_cuts_long_instructions():
    messages = rating_messages("t", [("Long", "word " * 200)])
    assert messages[1]["role"] == "assistant" and '"ratings"' in messages[1]["content"]
    assert messages[-1]["content"].endswith("[...]")


# -- the real bundled model ---------------------------------------------------------------------


@pytest.mark.model
def test_bundled_model_rates_every_unrated_node(bundled_path):
    plan = small_plan()
    rated, notes = rate_difficulty(plan)
    Plan.from_json(rated.to_json())
    assert rated.node("s1").difficulty == 5  # the override stays
    unrated = [n.title for n, _ in rated.iter_nodes() if n.difficulty is None]
    for title in unrated:  # anything left unrated is explained
        assert any(title in note for note in notes), notes
    assert notes[0].startswith("Rated ") and len(unrated) < 2, notes
