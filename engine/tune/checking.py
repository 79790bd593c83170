"""Checking answers: exact, normalised, numeric, regex, or a judge model's verdict.

The judge's instructions are ``assets/prompts/check_judge.md``, its request
``assets/prompts/check_judge_user.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.checks import CheckError, compile_pattern, extract_number, find_json, normalise_text
from engine.errors import ArborError
from engine.models import Backend, ChatMessage
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.prompts import as_user_turn, fill, load_prompt

#: Longest answer shown to the judge; the verdict is about the final answer, not an essay.
JUDGE_ANSWER_CHARS = 2000
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "correct": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["correct", "reason"],
}
# No sample verdict in the prompt: small models copy it (a "reason" of "one short sentence").
JUDGE_INSTRUCTIONS = load_prompt("check_judge")
JUDGE_GENERATION = GenerationConfig(temperature=0.0, max_tokens=160, seed=0)


#: A dataset scorer's value that counts as right (its scores are floats; 1.0 is full marks).
FULL_MARKS = 0.999

CheckerKind = Literal["exact", "normalised", "numeric", "regex", "judge", "dataset"]


class CheckerConfig(BaseModel):
    """How an output is compared with the expected answer."""

    kind: CheckerKind = Field(
        "normalised",
        description="exact: same text after trimming; normalised: same after normalisation"
        " (whole output or its first line); numeric: last numbers equal within tolerances;"
        " regex: the expected answer is a pattern found in the output; judge: a model decides;"
        " dataset: the dataset's own scorer (generated datasets), right when it gives full marks.",
    )
    abs_tol: float = Field(
        1e-6, ge=0.0, le=1e12, description="numeric: absolute tolerance of the comparison."
    )
    rel_tol: float = Field(
        0.0, ge=0.0, le=1.0, description="numeric: relative tolerance (0.01 is 1%)."
    )
    judge_model: ModelRef | None = Field(
        None, description="judge: the model that decides; None uses the bundled model."
    )


@dataclass(frozen=True)
class CheckResult:
    """A checker's verdict on one output and a short explanation."""

    correct: bool
    detail: str


_CUT_VERDICT = re.compile(
    r'\s*\{\s*"correct"\s*:\s*(true|false)\s*(?:,\s*"reason"\s*:\s*"([^"]*))?', re.DOTALL
)


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def judge_messages(output: str, expected: str) -> list[ChatMessage]:
    """The judge's request: the instructions, the reference answer and the (clipped) answer."""
    answer = output.strip()[:JUDGE_ANSWER_CHARS]
    request = fill("check_judge_user", expected=expected.strip(), answer=answer)
    return as_user_turn(JUDGE_INSTRUCTIONS, request)


def _judge(output: str, expected: str, judge: Backend) -> CheckResult:
    messages = judge_messages(output, expected)
    try:
        completion = judge.complete(messages, JUDGE_GENERATION, json_schema=JUDGE_SCHEMA)
    except ArborError as exc:
        return CheckResult(False, f"the judge call failed: {exc}")
    found, verdict = find_json(completion.text)
    if not found and (cut := _CUT_VERDICT.match(completion.text)) is not None:
        # The schema puts the verdict first; a reason cut off at the token limit loses nothing
        # the check needs (the bundled model's reasons often run to the limit).
        verdict = {"correct": cut.group(1) == "true", "reason": f"{cut.group(2) or ''} [cut off]"}
        found = True
    if not found or not isinstance(verdict, dict) or not isinstance(verdict.get("correct"), bool):
        return CheckResult(
            False, f"the judge's answer could not be read as a verdict: {completion.text[:80]!r}"
        )
    reason = str(verdict.get("reason", "")).strip()[:200]
    return CheckResult(verdict["correct"], f"judge: {reason or 'no reason given'}")


def check_answer(
    output: str | None,
    expected: str,
    checker: CheckerConfig,
    *,
    judge: Backend | None = None,
    score: Callable[[str], float] | None = None,
) -> CheckResult:
    """Whether ``output`` answers ``expected`` by ``checker``'s rule.

    - exact: ``output.strip() == expected.strip()``.
    - normalised: ``normalise_text(output) == normalise_text(expected)``, or the same for the
      output's first non-blank line (so an answer followed by an explanation passes). No
      substring matching: "not Paris" does not pass for "Paris".
    - numeric: the last numbers of both (``extract_number``) agree by ``math.isclose`` with
      ``rel_tol`` and ``abs_tol``.
    - regex: ``expected`` is a pattern found in the output (``regex_passes``: case-insensitive,
      multi-line); an invalid pattern raises ``CheckError``.
    - judge: ``judge`` (required) answers JSON ``{"correct": bool, "reason": str}`` given the
      expected answer and the output; an answer that is not such JSON counts as incorrect.
    - dataset: ``score`` (required: the dataset's own scorer, 0 to 1) gives full marks. A
      generated family's scorer knows what the task accepts (any valid order, a partly sorted
      list's partial credit ...); partial credit counts as wrong and its value is the detail.

    No output (None or blank) is incorrect with detail "no answer".
    """
    if output is None or not output.strip():
        return CheckResult(False, "no answer")
    kind = checker.kind
    if kind == "exact":
        same = output.strip() == expected.strip()
        return CheckResult(same, "identical" if same else "differs from the expected text")
    if kind == "normalised":
        want = normalise_text(expected)
        if normalise_text(output) == want:
            return CheckResult(True, "same after normalisation")
        if normalise_text(_first_line(output)) == want:
            return CheckResult(True, "first line same after normalisation")
        return CheckResult(False, f"normalised answer is not {want!r}")
    if kind == "numeric":
        want_number = extract_number(expected)
        if want_number is None:
            return CheckResult(False, f"the expected answer {expected!r} has no number")
        got = extract_number(output)
        if got is None:
            return CheckResult(False, "no number in the answer")
        if math.isclose(got, want_number, rel_tol=checker.rel_tol, abs_tol=checker.abs_tol):
            return CheckResult(True, f"{got:g} matches {want_number:g}")
        return CheckResult(False, f"got {got:g}, expected {want_number:g}")
    if kind == "regex":
        found = compile_pattern(expected).search(output) is not None
        return CheckResult(found, "pattern found" if found else f"pattern {expected!r} not found")
    if kind == "judge":
        if judge is None:
            raise CheckError("The judge checker needs a judge model; none was given.")
        return _judge(output, expected, judge)
    if kind == "dataset":
        if score is None:
            raise CheckError(
                "The dataset checker needs a dataset with its own scorer (a generated one)."
            )
        value = score(output)
        return CheckResult(value >= FULL_MARKS, f"scored {value:.2f} by the dataset's scorer")
    raise CheckError(f"Unknown checker kind {kind!r}.")


__all__ = [
    "CheckResult",
    "CheckerConfig",
    "CheckerKind",
    "check_answer",
    "judge_messages",
]
