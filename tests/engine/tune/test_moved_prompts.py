"""Prompts moved from code to ``assets/prompts/`` render byte for byte as the code wrote them.

The expected texts were produced by the code before the move (``engine/tune/search.py``'s
``SEARCH_INSTRUCTIONS`` and ``proposal_prompt``, ``engine/tune/evaluation.py``'s judge
request) for the fixed inputs below.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.models.base import Backend, ChatMessage, Completion, Usage
from engine.plan.compute_config import SINGLE_CALL, StrategyConfig
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.prompts import as_user_turn
from engine.tune.evaluation import CheckerConfig, check_answer, judge_messages
from engine.tune.search import (
    SEARCH_INSTRUCTIONS,
    NodeOption,
    SearchSpace,
    TrialResult,
    llm_guided_search,
    proposal_messages,
    proposal_prompt,
)


def space() -> SearchSpace:
    def ref(model: str) -> ModelRef:
        return ModelRef(kind="remote", base_url="http://test.invalid/v1", model=model)

    options = [
        NodeOption(
            label="small · single · 64",
            model=ref("small"),
            strategy=SINGLE_CALL,
            max_tokens=64,
            cost_hint=1.0,
        ),
        NodeOption(
            label="big · self-consistency ×3 · 128",
            model=ref("big"),
            strategy=StrategyConfig(kind="self_consistency", samples=3),
            max_tokens=128,
        ),
    ]
    return SearchSpace(options={node: [o.model_copy() for o in options] for node in ("s1", "root")})


HISTORY = [
    TrialResult({"s1": 0, "root": 0}, 0.5, 0.12, 300.0, 1.0, 4),
    TrialResult({"s1": 1, "root": 0}, 0.75, 0.61, 900.0, 2.0, 4),
    TrialResult({"s1": 0, "root": 1}, 0.625, 0.3333333, 700.0, 1.5, 4),
]


PROPOSAL_FULL = (
    "You tune a multi-step LLM pipeline. Each step (node) must get one "
    "option: a model, a strategy and a token budget. Goal: the highest "
    "accuracy on the dev set while the mean cost per example stays at or "
    "below the budget.\n"
    "\n"
    "What is known about such pipelines:\n"
    "1. Different steps prefer different models: the largest model is not "
    "best everywhere.\n"
    "2. Extra compute (more samples, more tokens) has diminishing returns: "
    "spend it where it helps.\n"
    "3. Early steps' budgets change what later steps need: a stronger "
    "early step can let a later step be cheaper.\n"
    "\n"
    "Propose ONE new assignment that has not been tried yet. Answer with "
    'JSON only: an "assignment" object that maps every node to an option '
    'index, and a "reason" of a few words.\n'
    "\n"
    "Budget: mean cost per example <= 0.5.\n"
    "Options per node (index = option):\n"
    "- s1: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "- root: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "\n"
    "Trials so far, best first (assignment -> accuracy, mean cost per "
    "example):\n"
    '{"s1":0,"root":1} -> accuracy 0.625, cost 0.333333 (within budget)\n'
    '{"s1":0,"root":0} -> accuracy 0.500, cost 0.12 (within budget)\n'
    '{"s1":1,"root":0} -> accuracy 0.750, cost 0.61 (OVER budget)\n'
    "\n"
    "Propose the next assignment as JSON."
)


PROPOSAL_CUT = (
    "You tune a multi-step LLM pipeline. Each step (node) must get one "
    "option: a model, a strategy and a token budget. Goal: the highest "
    "accuracy on the dev set while the mean cost per example stays at or "
    "below the budget.\n"
    "\n"
    "What is known about such pipelines:\n"
    "1. Different steps prefer different models: the largest model is not "
    "best everywhere.\n"
    "2. Extra compute (more samples, more tokens) has diminishing returns: "
    "spend it where it helps.\n"
    "3. Early steps' budgets change what later steps need: a stronger "
    "early step can let a later step be cheaper.\n"
    "\n"
    "Propose ONE new assignment that has not been tried yet. Answer with "
    'JSON only: an "assignment" object that maps every node to an option '
    'index, and a "reason" of a few words.\n'
    "\n"
    "Budget: mean cost per example <= 0.5.\n"
    "Options per node (index = option):\n"
    "- s1: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "- root: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "\n"
    "Trials so far, best first (assignment -> accuracy, mean cost per "
    "example):\n"
    '{"s1":0,"root":1} -> accuracy 0.625, cost 0.333333 (within budget)\n'
    "(2 worse trials not shown)\n"
    "\n"
    "Propose the next assignment as JSON."
)


PROPOSAL_EMPTY = (
    "You tune a multi-step LLM pipeline. Each step (node) must get one "
    "option: a model, a strategy and a token budget. Goal: the highest "
    "accuracy on the dev set while the mean cost per example stays at or "
    "below the budget.\n"
    "\n"
    "What is known about such pipelines:\n"
    "1. Different steps prefer different models: the largest model is not "
    "best everywhere.\n"
    "2. Extra compute (more samples, more tokens) has diminishing returns: "
    "spend it where it helps.\n"
    "3. Early steps' budgets change what later steps need: a stronger "
    "early step can let a later step be cheaper.\n"
    "\n"
    "Propose ONE new assignment that has not been tried yet. Answer with "
    'JSON only: an "assignment" object that maps every node to an option '
    'index, and a "reason" of a few words.\n'
    "\n"
    "Budget: mean cost per example <= 0.5.\n"
    "Options per node (index = option):\n"
    "- s1: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "- root: 0 = small · single · 64; 1 = big · self-consistency ×3 · 128\n"
    "\n"
    "Trials so far, best first (assignment -> accuracy, mean cost per "
    "example):\n"
    "(none yet)\n"
    "\n"
    "Propose the next assignment as JSON."
)


JUDGE_SHORT = (
    "You grade an answer against a reference answer. The answer is correct "
    "if it gives the same final answer as the reference; wording, extra "
    "explanation and formatting do not matter. Reply with a JSON object "
    'with two fields: "correct" (true or false) and "reason" (why, in a '
    "few words).\n"
    "\n"
    "Reference answer: 42\n"
    "Answer to grade: The answer is\n"
    " 42."
)


JUDGE_LONG = (
    "You grade an answer against a reference answer. The answer is correct "
    "if it gives the same final answer as the reference; wording, extra "
    "explanation and formatting do not matter. Reply with a JSON object "
    'with two fields: "correct" (true or false) and "reason" (why, in a '
    "few words).\n"
    "\n"
    "Reference answer: forty-two\n"
    "Answer to grade: "
)


@pytest.mark.parametrize(
    ("history", "token_budget", "expected"),
    [(HISTORY, 1500, PROPOSAL_FULL), (HISTORY, 150, PROPOSAL_CUT), ([], 1500, PROPOSAL_EMPTY)],
    ids=["full", "cut", "empty"],
)
def test_the_proposal_prompt_is_unchanged(history, token_budget, expected):
    prompt = proposal_prompt(space(), history, 0.5, token_budget=token_budget)
    messages = as_user_turn(SEARCH_INSTRUCTIONS, prompt)
    assert messages == [{"role": "user", "content": expected}]
    if token_budget == 1500:
        assert proposal_messages(space(), history, 0.5) == messages


class Recording(Backend):
    """Answers every call with ``reply`` and keeps the messages it was sent."""

    label = "recording"

    def __init__(self, reply: str):
        self.reply = reply
        self.seen: list[list[ChatMessage]] = []

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: Any = None,
        cancel: Any = None,
    ) -> Completion:
        self.seen.append(messages)
        return Completion(self.reply, Usage(1, 1), 0.0, self.label)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)


def test_the_search_sends_the_proposal_prompt():
    backend = Recording('{"assignment": {"s1": 1, "root": 1}, "reason": "try"}')

    def evaluator(assignment, examples=None):
        return TrialResult(dict(assignment), 0.5, 0.12, 300.0, 1.0, 4)

    evaluator.n_examples = 4  # type: ignore[attr-defined]  # a function as an Evaluator
    llm_guided_search(space(), evaluator, budget=0.5, max_trials=2, backend=backend)
    history = [TrialResult({"s1": 0, "root": 0}, 0.5, 0.12, 300.0, 1.0, 4, note="start: cheapest")]
    assert backend.seen == [proposal_messages(space(), history, 0.5)]


@pytest.mark.parametrize(
    ("output", "expected", "text"),
    [
        ("  The answer is\n 42.  ", " 42 ", JUDGE_SHORT),
        ("x" * 1999 + "   tail", "forty-two", JUDGE_LONG + "x" * 1999),
    ],
    ids=["short", "clipped"],
)
def test_the_judge_prompt_is_unchanged(output, expected, text):
    judge = Recording('{"correct": true, "reason": "same"}')
    check_answer(output, expected, CheckerConfig(kind="judge"), judge=judge)
    assert judge.seen == [[{"role": "user", "content": text}]]
    assert judge_messages(output, expected) == judge.seen[0]
