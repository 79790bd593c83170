"""A hand-made planner answer for tests of what the UI and the CLI do with one: a decomposition
with three scored candidates (one unusable) and, for the task ``VAGUE``, a clarification.
``fake_decompose`` stands in for ``engine.planner.decompose.decompose`` (monkeypatched into
``app.services.planning``) and reports three progress stages, noted in ``REPORTED``."""

from __future__ import annotations

from engine.models import Completion, Usage
from engine.plan import ModelRef, single_node_plan
from engine.planner.decompose import Clarification, DecomposeResult, PlanCandidate
from tests.support.fake_backend import tree

TASK = "Plan a three-day trip to Lisbon on a budget"
VAGUE = "do stuff"
REPORTED: list[str] = []
EXAMPLES = ["Plan a weekend trip to Porto for two", "Write a one-page summary of my notes"]


def _plan(titles: list[str]):
    return tree(
        {
            "id": "root",
            "title": TASK,
            "children": [{"id": f"s{i}", "title": t} for i, t in enumerate(titles, 1)],
        },
        task=TASK,
    )


def _completion(text: str) -> Completion:
    return Completion(text, Usage(100, 30), 0.4, "gemma.gguf", "stop")


def fake_decompose(
    task: str, model: ModelRef | None = None, *, on_progress=None, **options
) -> DecomposeResult:
    options["on_progress"] = on_progress
    stages = options.get("on_progress")
    if stages is not None:  # the page's reporter, which relabels its st.status
        for stage in ("choosing a pattern", "sampling 3 candidate plans", "scoring"):
            stages(stage)
            REPORTED.append(stage)
    if task == VAGUE:
        return DecomposeResult(
            plan=single_node_plan(task, model),
            calls=[_completion("?")],
            clarification=Clarification(
                "The task is too vague to plan: say what and for whom.", EXAMPLES
            ),
            style="base",
            language="en",
        )
    chosen = _plan(["Book cheap flights", "Find a hostel", "Plan free sights"])
    second = _plan(["Pick the days", "Walk the old town"])
    calls = [
        _completion("1. Book cheap flights"),
        _completion("1. Pick the days"),
        _completion("x"),
    ]
    return DecomposeResult(
        plan=chosen,
        calls=calls,
        candidates=[
            PlanCandidate(
                "sample 1",
                chosen,
                {"relevance": 0.9, "coverage": 0.7},
                0.82,
                text="a",
                call_index=0,
            ),
            PlanCandidate(
                "sample 2",
                second,
                {"relevance": 0.6, "coverage": 0.5},
                0.56,
                text="b",
                call_index=1,
            ),
            PlanCandidate(
                "sample 3",
                None,
                {"relevance": 0.1},
                0.05,
                problem="copied a worked example",
                call_index=2,
            ),
        ],
        chosen=0,
        pattern="sequence",
        style="base",
        language="en",
    )
