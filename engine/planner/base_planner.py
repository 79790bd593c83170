"""Planning with a base (pretrained, not instruction-tuned) model: sample, score, choose.

A base model continues text, so it is shown a few worked "Task: ... / Steps: 1. ..." examples
(``assets/prompts/base/plan_examples.json``) in the task's language, then the task and "1.".
That is fast (about a second per plan on the bundled model against 10-20 s under a JSON grammar)
but unreliable: a plan can drift off-topic, repeat itself or copy an example. So the planner
spends test-time compute on itself: it samples several candidates in one batched decode (the
prompt is read once), adds the chosen pattern's skeleton as one more candidate, scores each with
``engine.planner.scoring`` and keeps the best. When the task lists its own parts, those parts are
the plan and no model is called at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.models import Backend, Completion
from engine.plan import GenerationConfig
from engine.planner.listed_parts import ListedParts
from engine.planner.patterns import Pattern, skeleton_steps
from engine.planner.scoring import comparable, off_topic_steps, score_steps, total_score
from engine.prompts import load_json_asset

#: Candidate plans sampled per planning call (one batched decode).
DEFAULT_SAMPLES = 4
#: Worked examples in each prompt: enough to show the format, few enough to read fast.
EXAMPLES_PER_PROMPT = 3
#: Warm enough that the samples differ; measured on the bundled model, 0.3 gave 4 near-equal
#: samples and 1.0 drifted off-topic in about half of them.
SAMPLE_TEMPERATURE = 0.8
#: A plan of six short steps is about 80 tokens.
STEPS_MAX_TOKENS = 110
PLAN_STOPS = ["\n\n", "\nTask:"]
MAX_STEPS = 6
MAX_TITLE = 60
MAX_INSTRUCTION = 240

_NUMBERED = re.compile(r"^\s*(\d{1,2})[.)]\s*(.*\S)?\s*$")

Progress = Callable[[str], None]


@dataclass
class StepCandidate:
    """One candidate list of steps, before it becomes plan nodes."""

    source: str
    #: (title, instruction) per step.
    steps: list[tuple[str, str]]
    #: For each step, the indices of earlier steps it depends on.
    deps: list[list[int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text: str = ""
    call_index: int | None = None
    problem: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0

    def readable(self) -> list[str]:
        return [
            instruction if instruction.startswith(title) else f"{title}. {instruction}"
            for title, instruction in self.steps
        ]


def plan_examples() -> list[dict[str, Any]]:
    return list(load_json_asset("base/plan_examples.json")["examples"])


def pick_examples(language: str | None, pattern: Pattern | None) -> list[dict[str, Any]]:
    """Worked examples for the prompt: the task's language first, then the pattern's.

    Examples in another language pull a base model into that language, so when the task's
    language has enough examples no other language is shown; an unknown language gets English.
    """
    examples = plan_examples()
    language = language if any(e["language"] == language for e in examples) else "en"
    same = [e for e in examples if e["language"] == language]
    name = pattern.name if pattern else None
    same.sort(key=lambda e: e["pattern"] != name)  # stable: the pattern's examples first
    picked = same[:EXAMPLES_PER_PROMPT]
    if len(picked) < EXAMPLES_PER_PROMPT:
        english = [e for e in examples if e["language"] == "en" and e not in picked]
        english.sort(key=lambda e: e["pattern"] != name)
        picked += english[: EXAMPLES_PER_PROMPT - len(picked)]
    return picked


def _example_block(task: str, steps: Sequence[str]) -> str:
    lines = "\n".join(f"{number}. {step}" for number, step in enumerate(steps, start=1))
    return f"Task: {task}\nSteps:\n{lines}"


def planning_prompt(task: str, examples: Sequence[dict[str, Any]]) -> str:
    """Worked examples, then the task, ending where the model writes the first step."""
    blocks = [_example_block(e["task"], e["steps"]) for e in examples]
    task_line = " ".join(task.split())
    return "\n\n".join([*blocks, f"Task: {task_line}\nSteps:\n1."])


def _title(step: str) -> str:
    if len(step) <= MAX_TITLE:
        return step
    cut = step[:MAX_TITLE].rsplit(" ", 1)[0]
    return cut if len(cut) >= 20 else step[:MAX_TITLE]


def parse_numbered_steps(
    text: str, *, truncated: bool, restated: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """The steps of a "1. ... / 2. ..." continuation (its "1." was in the prompt), and notes.

    Steps that restate ``restated`` (the task, the node being split) or repeat an earlier step
    are dropped; a step cut off at the token limit is dropped; at most ``MAX_STEPS`` are kept.
    """
    lines = ("1." + text).splitlines()
    steps: list[str] = []
    notes: list[str] = []
    for line in lines:
        match = _NUMBERED.match(line)
        if match is None:
            if line.strip() and steps:  # a wrapped line continues the step before it
                steps[-1] = f"{steps[-1]} {line.strip()}"
            continue
        if match.group(2):
            steps.append(" ".join(match.group(2).split()).rstrip(" ."))
    if truncated and steps:
        notes.append(f"dropped step {len(steps)}: cut off at the token limit")
        steps.pop()
    kept: list[str] = []
    seen: set[str] = set()
    restating = {comparable(r) for r in restated if r.strip()}
    for number, step in enumerate(steps, start=1):
        key = comparable(step)
        if not key:
            continue
        if key in restating:
            notes.append(f"dropped step {number}: it restates the task")
        elif key in seen:
            notes.append(f"dropped step {number}: it repeats an earlier step")
        else:
            seen.add(key)
            kept.append(step[:MAX_INSTRUCTION])
    if len(kept) > MAX_STEPS:
        notes.append(f"kept the first {MAX_STEPS} of {len(kept)} steps")
        kept = kept[:MAX_STEPS]
    return kept, notes


def listed_candidate(listed: ListedParts, task: str) -> StepCandidate:
    """The task's own parts as steps; each instruction names what the part belongs to."""
    head = listed.head if len(listed.head.split()) >= 3 else task.strip()
    steps = []
    for part in listed.parts:
        title = _title(part[:1].upper() + part[1:])
        steps.append((title, f"{title} ({head.rstrip(' .:')})"[:MAX_INSTRUCTION]))
    return StepCandidate("listed parts", steps, deps=[[] for _ in steps])


def skeleton_candidate(pattern: Pattern, task: str, language: str | None) -> StepCandidate:
    """The pattern's steps filled with the task's subject; the last step uses all the others."""
    steps = [
        (title, text[:MAX_INSTRUCTION]) for title, text in skeleton_steps(pattern, task, language)
    ]
    deps: list[list[int]] = [[] for _ in steps]
    if len(steps) > 1:
        deps[-1] = list(range(len(steps) - 1))
    return StepCandidate(f"pattern: {pattern.name}", steps, deps=deps)


def sampled_candidates(
    backend: Backend,
    task: str,
    language: str | None,
    pattern: Pattern | None,
    *,
    samples: int,
    seed: int | None,
    restated: Sequence[str] = (),
    call_offset: int = 0,
) -> tuple[list[StepCandidate], list[Completion]]:
    """``samples`` candidates from one batched call; unusable ones carry a ``problem``."""
    prompt = planning_prompt(task, pick_examples(language, pattern))
    config = GenerationConfig(
        temperature=SAMPLE_TEMPERATURE,
        max_tokens=STEPS_MAX_TOKENS,
        stop=PLAN_STOPS,
        prompt_format="completion",
    )
    seeds: list[int | None] = [None if seed is None else seed + index for index in range(samples)]
    calls = backend.complete_samples([{"role": "user", "content": prompt}], config, seeds)
    candidates = []
    for index, call in enumerate(calls):
        steps, notes = parse_numbered_steps(
            call.text, truncated=call.finish_reason == "length", restated=[task, *restated]
        )
        candidate = StepCandidate(
            f"sample {index + 1}",
            [(_title(step), step) for step in steps],
            deps=[[] for _ in steps],
            notes=notes,
            text=call.text,
            call_index=call_offset + index,
        )
        if len(steps) < 2:
            candidate.problem = f"only {len(steps)} usable step(s); at least 2 needed"
        candidates.append(candidate)
    return candidates, calls


def rank_candidates(
    candidates: list[StepCandidate],
    task: str,
    language: str | None,
    parts: Sequence[str] = (),
) -> int | None:
    """Score every usable candidate in place; the index of the best one (None if none)."""
    best: int | None = None
    for index, candidate in enumerate(candidates):
        if candidate.problem is not None:
            continue
        readable = candidate.readable()
        candidate.scores = score_steps(readable, task, language, parts=parts)
        repairs = len(candidate.notes)
        candidate.total = total_score(candidate.scores, repairs)
        off = off_topic_steps(readable, task, language)
        if off:
            candidate.notes.append(
                f"{len(off)} step(s) share no word with the task: "
                + ", ".join(repr(candidate.steps[i][0]) for i in off)
            )
        if best is None or candidate.total > candidates[best].total:
            best = index
    return best
