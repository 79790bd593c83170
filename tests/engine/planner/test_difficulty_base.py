"""Difficulty ratings from a base model: one few-shot "Difficulty: N; reason" line a step."""

from __future__ import annotations

import pytest

from engine.models.base import Backend, Completion, Usage
from engine.plan import GenerationConfig
from engine.planner.difficulty import parse_base_rating, rate_difficulty
from tests.support.fake_backend import tree


class BaseRater(Backend):
    """A base model's continuations, in order; records what it was sent."""

    declared_kind = "base"

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.label = "base-rater"
        self.sent: list[tuple[str, GenerationConfig, object]] = []

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def complete(self, messages, config, *, json_schema=None, **_):
        self.sent.append((messages[-1]["content"], config, json_schema))
        return Completion(self.texts.pop(0), Usage(100, 8), 0.01, self.label, "stop")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 2; a few facts to look up", (2, "a few facts to look up")),
        ("difficulty: 4; needs careful reasoning.", (4, "needs careful reasoning")),
        (" 6; very hard", (5, "very hard")),  # clamped, with a note
        (" 3", (3, None)),
        ("hard", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_base_rating(text, expected):
    difficulty, reason, _ = parse_base_rating(text, "Step")
    assert (difficulty, reason) == expected


def test_a_reason_copied_from_a_worked_example_is_dropped():
    difficulty, reason, notes = parse_base_rating(" 1; a single well-known fact", "Step")
    assert difficulty == 1 and reason is None and "copies a worked example" in notes[0]


def _plan():
    return tree(
        {
            "id": "root",
            "title": "Report",
            "children": [{"id": "s1", "title": "Collect data", "instruction": "Find rainfall."}],
        },
        task="Write a report on rainfall",
    )


def test_a_base_model_rates_each_step_with_the_few_shot_prompt_and_retries_once():
    backend = BaseRater(" 3; combines the findings", "no idea", " 2; data to look up")
    rated, notes = rate_difficulty(_plan(), backend=backend)
    assert (rated.node("root").difficulty, rated.node("root").difficulty_reason) == (
        3,
        "combines the findings",
    )
    assert rated.node("s1").difficulty == 2
    assert notes[0] == "Rated 2 of 2 node(s) (base-model prompts)."
    prompt, config, schema = backend.sent[1]
    assert prompt.endswith("Step: Collect data: Find rainfall.\nDifficulty:")
    assert schema is None and config.prompt_format == "base" and config.stop == ["\n"]
    assert backend.sent[2][1].temperature > 0  # the retry samples


def test_unrated_steps_are_reported():
    backend = BaseRater("?", "?", " 1; quick")
    rated, notes = rate_difficulty(_plan(), backend=backend)
    assert rated.node("root").difficulty is None and rated.node("s1").difficulty == 1
    assert any("Could not rate 'Report'" in note for note in notes)


def test_an_explicit_chat_style_keeps_the_json_ratings():
    plan = _plan()
    plan.default_generation.prompt_format = "chat"
    backend = BaseRater('{"ratings": [{"difficulty": 2, "reason": "r1"}, {"difficulty": 1,'
                        ' "reason": "r2"}]}')  # fmt: skip
    rated, _ = rate_difficulty(plan, backend=backend)
    assert backend.sent[0][2] is not None  # the ratings schema
    assert rated.node("root").difficulty == 2
