"""Difficulty ratings (1-5, with a one-line reason) for nodes the planner did not rate.

Budget allocation reads ``Node.difficulty`` (harder nodes get more samples or a stronger model),
so every node should have one. The planner rates the subtasks it writes; this module rates the
rest (hand-written nodes, the root, plans from older files) in batches, one call per batch, under
a schema that asks for exactly one rating per step. A batch the model cannot rate stays unrated
and is reported; the analyst's own ratings are never overwritten unless asked.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

from engine.errors import ArborError, PlannerCancelled
from engine.models import Backend, ChatMessage, backend_for
from engine.models.base import TokenCallback
from engine.models.model_kind import kind_of
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.planner.control import PlannerControl, Progress
from engine.planner.decompose import (
    DIFFICULTY_SCHEMA,
    REASON_SCHEMA,
    UnusablePlan,
    call_planner,
    clean_difficulty,
    clean_reason,
    clip_task,
    comparable,
    example_exchange,
)
from engine.prompts import few_shot, fill, load_json_asset, load_prompt

#: Steps rated in one call; more makes the answer long and the small model loses count.
RATE_BATCH = 8
STEP_CHARS = 200


def ratings_schema(count: int) -> dict[str, Any]:
    """Exactly ``count`` ratings, each a difficulty and a reason."""
    return {
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "minItems": count,
                "maxItems": count,
                "items": {
                    "type": "object",
                    "properties": {"difficulty": DIFFICULTY_SCHEMA, "reason": REASON_SCHEMA},
                    "required": ["difficulty", "reason"],
                },
            }
        },
        "required": ["ratings"],
    }


def _example() -> dict[str, Any]:
    return load_json_asset("difficulty_example.json")


def _steps_text(steps: Sequence[tuple[str, str]]) -> str:
    lines = []
    for number, (title, instruction) in enumerate(steps, start=1):
        text = " ".join(instruction.split())
        text = text if len(text) <= STEP_CHARS else text[:STEP_CHARS] + " [...]"
        lines.append(f"{number}. {title}: {text}" if text else f"{number}. {title}")
    return "\n".join(lines)


def rating_messages(task: str, steps: Sequence[tuple[str, str]]) -> list[ChatMessage]:
    """The rules and a worked example as a finished exchange, then the steps to rate."""
    example = _example()
    example_steps = [(s["title"], s["instruction"]) for s in example["steps"]]
    request = fill("difficulty_user", task=example["task"], steps=_steps_text(example_steps))
    messages = example_exchange(load_prompt("difficulty_system"), request, example["answer"])
    clipped, _ = clip_task(task)
    messages.append(
        {"role": "user", "content": fill("difficulty_user", task=clipped, steps=_steps_text(steps))}
    )
    return messages


def parse_ratings(
    text: str, titles: Sequence[str]
) -> tuple[list[tuple[int | None, str | None]], list[str]]:
    """One ``(difficulty, reason)`` per title from the model's answer, with repair notes.

    Raises ``UnusablePlan`` when the text is not JSON, has no ratings list, or rates none.
    """
    try:
        payload = json.loads(text, strict=False)  # raw newlines in strings are harmless
    except json.JSONDecodeError as exc:
        raise UnusablePlan(f"the ratings are not valid JSON: {exc.msg} at char {exc.pos}") from exc
    raw = payload.get("ratings") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise UnusablePlan("the output has no 'ratings' list")
    notes: list[str] = []
    ratings: list[tuple[int | None, str | None]] = []
    copied = {comparable(r["reason"]) for r in _example()["answer"]["ratings"]}
    for index, title in enumerate(titles):
        item = raw[index] if index < len(raw) else None
        if not isinstance(item, dict):
            ratings.append((None, None))
            continue
        difficulty, note = clean_difficulty(item.get("difficulty"), repr(title))
        notes.extend([note] if note else [])
        reason, note = clean_reason(item.get("reason"), repr(title))
        notes.extend([note] if note and difficulty is not None else [])
        if reason is not None and difficulty is not None and comparable(reason) in copied:
            notes.append(f"dropped the reason given for {title!r}: it copies the worked example")
            reason = None
        ratings.append((difficulty, reason if difficulty is not None else None))
    if len(raw) != len(titles):
        notes.append(f"the model gave {len(raw)} ratings for {len(titles)} steps")
    if all(difficulty is None for difficulty, _ in ratings):
        raise UnusablePlan("the output rates none of the steps")
    return ratings, notes


#: Temperatures of a base model's tries at one step's rating (a retry when unparseable).
BASE_RATING_TEMPERATURES = (0.0, 0.5)
_BASE_RATING = re.compile(r"^\s*(?:difficulty\s*[:=]?\s*)?(\d+(?:\.\d+)?)\s*[;:,.)-]?\s*(.*)", re.I)


def parse_base_rating(text: str, title: str) -> tuple[int | None, str | None, list[str]]:
    """``(difficulty, reason, notes)`` from a base model's ``"N; reason"`` continuation
    (``"difficulty: N; reason"`` too); ``(None, None, [])`` when it starts with no number."""
    match = _BASE_RATING.match(text.strip().splitlines()[0] if text.strip() else "")
    if match is None:
        return None, None, []
    notes: list[str] = []
    number = float(match.group(1))
    difficulty, note = clean_difficulty(int(number) if number.is_integer() else number, repr(title))
    notes.extend([note] if note else [])
    reason, note = clean_reason(match.group(2).strip(" ;.") or None, repr(title))
    notes.extend([note] if note else [])
    copied = {comparable(example["output"].partition(";")[2]) for example in _base_examples()}
    if reason is not None and comparable(reason) in copied:
        notes.append(f"dropped the reason given for {title!r}: it copies a worked example")
        reason = None
    return difficulty, reason if difficulty is not None else None, notes


def _base_examples() -> list[dict[str, str]]:
    from engine.prompts import load_base_prompt

    return list(load_base_prompt("difficulty")["examples"])


def uses_base_prompts(plan: Plan, model: ModelRef, backend: Backend) -> bool:
    """Whether ratings go to ``model`` as few-shot completion prompts: the plan's prompt
    format says base, or says auto / completion and the model is a base model."""
    chosen = plan.default_generation.prompt_format
    if chosen in ("base", "chat"):
        return chosen == "base"
    return kind_of(model, backend.declared_kind).kind == "base"


def rate_with_base_prompts(
    backend: Backend, task: str, step: tuple[str, str], *, seed: int | None
) -> tuple[int | None, str | None, list[str]]:
    """One step rated by a base model: the ``difficulty`` few-shot prompt, one line back."""
    title, instruction = step
    text = " ".join(f"{title}: {instruction}".split()) if instruction else title
    del task  # the worked examples rate steps on their own; the task would only confuse it
    prompt, stops = few_shot("difficulty", text[: 2 * STEP_CHARS])
    failures: list[str] = []
    for attempt, temperature in enumerate(BASE_RATING_TEMPERATURES):
        config = GenerationConfig(
            temperature=temperature,
            max_tokens=32,
            seed=None if seed is None else seed + attempt,
            stop=stops,
            prompt_format="base",
        )
        try:
            completion = backend.complete([{"role": "user", "content": prompt}], config)
        except PlannerCancelled:
            raise
        except ArborError as exc:
            return None, None, [f"Could not rate {title!r} ({exc})."]
        difficulty, reason, notes = parse_base_rating(completion.text, title)
        if difficulty is not None:
            return difficulty, reason, notes
        failures.append(f"attempt {attempt + 1}: no rating in {completion.text.strip()[:60]!r}")
    return None, None, [f"Could not rate {title!r} ({'; '.join(failures)})."]


def rate_difficulty(
    plan: Plan,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    only_missing: bool = True,
    seed: int | None = 7,
    cancel: threading.Event | None = None,
    on_progress: Progress | None = None,
    on_text: TokenCallback | None = None,
) -> tuple[Plan, list[str]]:
    """A copy of ``plan`` with difficulties filled in, and notes on what happened.

    ``only_missing`` (the default) keeps every existing rating, the analyst's overrides
    included. ``model`` defaults to the plan's default model. Raises ``ArborError`` when the
    model is unavailable; unusable answers leave those nodes unrated and say so.
    ``cancel``, ``on_progress`` and ``on_text`` as in ``decompose`` (``PlannerCancelled``).
    """
    control = PlannerControl(cancel, on_progress, on_text)
    targets: list[Node] = [
        node for node, _ in plan.iter_nodes() if not only_missing or node.difficulty is None
    ]
    if not targets:
        return plan, ["Every node already has a difficulty; nothing to rate."]
    model = model or plan.default_model
    backend = control.wrap(backend or backend_for(model))
    rated = plan.model_copy(deep=True)
    notes: list[str] = []
    count = 0
    if uses_base_prompts(plan, model, backend):
        # A base model cannot fill the JSON ratings schema sensibly: one few-shot line a step.
        for number, node in enumerate(targets, start=1):
            control.stage(f"rating {node.id} ({number} of {len(targets)})")
            instruction = node.instruction or (
                "Combine the results of its sub-steps." if node.children else ""
            )
            difficulty, reason, step_notes = rate_with_base_prompts(
                backend, plan.task, (node.title, instruction), seed=seed
            )
            notes.extend(step_notes)
            if difficulty is None:
                continue
            target = rated.node(node.id)
            target.difficulty, target.difficulty_reason = difficulty, reason
            count += 1
        notes.insert(0, f"Rated {count} of {len(targets)} node(s) (base-model prompts).")
        rated.validate_graph()
        return rated, notes
    for start in range(0, len(targets), RATE_BATCH):
        batch = targets[start : start + RATE_BATCH]
        control.stage(
            f"rating {', '.join(node.id for node in batch)} "
            f"({start + len(batch)} of {len(targets)})"
        )
        titles = [node.title for node in batch]
        instructions = [
            node.instruction or ("Combine the results of its sub-steps." if node.children else "")
            for node in batch
        ]

        def parse(
            text: str, titles: list[str] = titles
        ) -> tuple[list[tuple[int | None, str | None]], list[str]]:
            return parse_ratings(text, titles)

        outcome = call_planner(
            backend,
            rating_messages(plan.task, list(zip(titles, instructions, strict=True))),
            parse,
            seed=seed,
            schema=ratings_schema(len(batch)),
            max_tokens=48 * len(batch) + 32,
            control=control,
        )
        if outcome.value is None:
            names = ", ".join(repr(title) for title in titles)
            notes.append(f"Could not rate {names} ({'; '.join(outcome.failures)}).")
            continue
        notes.extend(outcome.notes)
        for node, (difficulty, reason) in zip(batch, outcome.value, strict=True):
            if difficulty is None:
                notes.append(f"{node.title!r} got no usable rating; it stays unrated")
                continue
            target = rated.node(node.id)
            target.difficulty, target.difficulty_reason = difficulty, reason
            count += 1
    notes.insert(0, f"Rated {count} of {len(targets)} node(s).")
    rated.validate_graph()
    return rated, notes
