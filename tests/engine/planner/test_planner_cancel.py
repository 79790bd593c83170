"""Cancelling a planner action, and what it reports while it works (stages, streamed text,
alternatives as they finish). A scripted slow backend stands in for the model: what matters
here is where the planner checks the cancel, not what the model writes (the bundled model
under a cancelled background job is tested in tests/app/services/test_planner_jobs.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.errors import CallCancelled, PlannerCancelled
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import GenerationConfig, ModelRef
from engine.planner.alternatives import sample_alternatives
from engine.planner.control import ControlledBackend, PlannerControl
from engine.planner.decompose import decompose
from engine.planner.difficulty import rate_difficulty
from engine.planner.expand import expand_node
from tests.support.fake_backend import tree

TASK = "Organise a street party for the neighbours next summer"
STEPS = " Pick a date with the neighbours\n2. Ask the council for a permit\n3. Plan food and music"
MODEL = ModelRef(kind="remote", base_url="http://fake.invalid/v1", model="slow")


class SlowPlanner(Backend):
    """Streams ``text`` word by word, ``delay_s`` apart, checking ``cancel`` between words."""

    def __init__(self, text: str = STEPS, delay_s: float = 0.0):
        self.label = "slow planner"
        self.text = text
        self.delay_s = delay_s
        self.calls = 0
        self.finished = 0

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        self.calls += 1
        sent: list[str] = []
        for word in self.text.split(" "):
            piece = word if not sent else " " + word
            if cancel is not None and cancel.wait(self.delay_s):
                raise CallCancelled("cancelled", "".join(sent))
            sent.append(piece)
            if on_token is not None:
                on_token(piece)
        self.finished += 1
        return Completion("".join(sent), Usage(50, len(sent)), 0.01, self.label, "stop")


def test_a_cancel_before_the_first_model_call_raises_planner_cancelled_and_calls_nothing():
    backend = SlowPlanner()
    cancel = threading.Event()
    stages: list[str] = []

    def report(stage: str) -> None:
        stages.append(stage)
        cancel.set()  # the analyst presses Cancel as soon as the first stage shows

    with pytest.raises(PlannerCancelled, match="cancelled"):
        decompose(TASK, MODEL, backend=backend, style="base", cancel=cancel, on_progress=report)
    assert stages == ["choosing a planner"]
    assert backend.calls == 0


def test_a_cancel_during_a_streamed_call_stops_it_between_tokens():
    backend = SlowPlanner(text=" ".join(["word"] * 400), delay_s=0.01)
    cancel = threading.Event()
    streamed: list[str] = []

    def on_text(piece: str) -> None:
        streamed.append(piece)
        if len(streamed) == 5:
            cancel.set()

    with pytest.raises(PlannerCancelled):
        expand_node(
            tree({"id": "root", "children": [{"id": "s1"}]}, task=TASK),
            "s1",
            MODEL,
            backend=backend,
            style="chat",
            cancel=cancel,
            on_text=on_text,
        )
    assert backend.calls == 1 and backend.finished == 0
    assert 5 <= len(streamed) < 400  # stopped mid-call, not at its end


def test_a_cancelled_expand_leaves_the_plan_as_it_was():
    plan = tree({"id": "root", "children": [{"id": "s1"}]}, task=TASK)
    before = plan.model_copy(deep=True)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PlannerCancelled):
        expand_node(plan, "s1", MODEL, backend=SlowPlanner(), style="base", cancel=cancel)
    assert plan == before


def test_without_a_cancel_the_planner_reports_stages_and_each_candidates_text():
    stages: list[str] = []
    streamed: list[str] = []
    result = decompose(
        TASK,
        MODEL,
        backend=SlowPlanner(),
        style="base",
        samples=2,
        on_progress=stages.append,
        on_text=streamed.append,
    )
    assert not result.fallback
    assert stages[0] == "choosing a planner"
    assert "sampling 2 candidate plans" in stages and "scoring the candidates" in stages
    text = "".join(streamed)
    assert "candidate 1 of 2" in text and "candidate 2 of 2" in text
    assert "Ask the council for a permit" in text


def test_rating_does_not_swallow_a_cancel_as_an_unrated_step():
    plan = tree({"id": "root", "children": [{"id": "s1"}, {"id": "s2"}, {"id": "s3"}]}, task=TASK)
    plan.default_generation.prompt_format = "base"
    backend = SlowPlanner(text="3 | needs a permit")
    cancel = threading.Event()
    stages: list[str] = []

    def report(stage: str) -> None:
        stages.append(stage)
        if len(stages) == 2:
            cancel.set()

    with pytest.raises(PlannerCancelled):
        rate_difficulty(plan, MODEL, backend=backend, cancel=cancel, on_progress=report)
    assert stages[0].startswith("rating root (1 of 4)")
    assert backend.calls <= 2


def test_alternatives_arrive_one_by_one_and_a_cancel_stops_the_rest():
    plan = tree({"id": "root", "children": [{"id": "s1"}]}, task=TASK)
    ready: list[int] = []
    stages: list[str] = []
    results = sample_alternatives(
        TASK,
        2,
        MODEL,
        backend=SlowPlanner(),
        plan=plan,
        node_id="s1",
        seed=1,
        style="base",
        on_progress=stages.append,
        on_result=lambda number, result: ready.append(number),
    )
    assert ready == [1, 2] and len(results) == 2
    assert "alternative 1 of 2" in stages and "alternative 2 of 2" in stages
    assert any(s.startswith("alternative 2 of 2: sampling") for s in stages)

    cancel = threading.Event()
    ready.clear()

    def first_ready(number: int, result: object) -> None:
        ready.append(number)
        cancel.set()

    with pytest.raises(PlannerCancelled):
        sample_alternatives(
            TASK,
            3,
            MODEL,
            backend=SlowPlanner(),
            plan=plan,
            node_id="s1",
            seed=1,
            style="base",
            cancel=cancel,
            on_result=first_ready,
        )
    assert ready == [1]


def test_a_backend_cancel_not_asked_for_by_the_planner_stays_a_call_cancelled():
    """Only the planner's own event turns a stopped call into ``PlannerCancelled``."""
    backend = SlowPlanner(text="a b c d", delay_s=0.001)
    other = threading.Event()
    other.set()
    controlled = ControlledBackend(backend, PlannerControl(on_text=lambda piece: None))
    with pytest.raises(CallCancelled) as caught:
        controlled.complete([{"role": "user", "content": "x"}], GenerationConfig(), cancel=other)
    assert not isinstance(caught.value, PlannerCancelled)
