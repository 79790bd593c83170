"""bench/plan_quality.py turns a planner's result (or its exception) into a scored row."""

from __future__ import annotations

from bench.plan_quality import run_one, task_order
from engine.plan import Node, Plan, single_node_plan
from engine.planner.decompose import Clarification, DecomposeResult

TASK = {
    "id": "t",
    "language": "en",
    "task": "Plan a 3-day trip to Lisbon on a moderate budget.",
    "vague": False,
    "listed_parts": False,
    "aspects": [
        {"name": "budget", "keywords": ["budget", "cost"]},
        {"name": "itinerary", "keywords": ["itinerar", "visit"]},
        {"name": "hotel", "keywords": ["hotel"]},
    ],
}


def test_a_plan_is_scored_on_its_subtasks() -> None:
    children = [
        Node(id="s1", title="Budget", instruction="Estimate the daily cost."),
        Node(id="s2", title="Itinerary", instruction="Choose places to visit each day."),
    ]
    plan = Plan(task=TASK["task"], root=Node(id="root", title="Trip", children=children))
    row = run_one(TASK, lambda task: DecomposeResult(plan=plan))
    assert row["subtasks"] == 2 and row["aspects_covered"] == 2
    assert row["covers_all_or_all_but_one"] and not row["fallback"] and not row["off_topic"]


def test_fallback_clarification_and_errors() -> None:
    one = DecomposeResult(plan=single_node_plan(TASK["task"]), fallback=True)
    row = run_one(TASK, lambda task: one)
    assert row["fallback"] and row["aspects_covered"] == 0
    vague = TASK | {"task": "x", "vague": True, "aspects": []}
    asked = DecomposeResult(plan=single_node_plan("x"), clarification=Clarification("Say more."))
    assert run_one(vague, lambda task: asked)["vague_handled"]

    def broken(task: str) -> DecomposeResult:
        raise RuntimeError("model missing")

    row = run_one(TASK, broken)
    assert row["error"] == "RuntimeError: model missing" and row["fallback"]


def test_vague_tasks_are_spread_through_the_order() -> None:
    tasks = [TASK | {"id": f"c{i}"} for i in range(6)] + [
        TASK | {"id": f"v{i}", "vague": True} for i in range(2)
    ]
    order = [t["id"] for t in task_order(tasks)]
    assert sorted(order) == sorted(t["id"] for t in tasks)
    assert order.index("v0") < 5
