"""Task text -> plan, using the chosen model with JSON-schema constrained output.

Small local models produce valid JSON under a grammar but not always sensible content, so the
schema is tightly bounded, the output is repaired (invalid edges dropped, titles deduplicated,
text trimmed, difficulties clamped, a cut-off answer salvaged) and every repair is reported. One
retry at a higher temperature; if that also fails the caller gets a one-node plan to edit and the
reason, never an exception.

The pieces here (schema, parsing, the call-and-retry loop) are shared by ``expand`` (split one
node), ``alternatives`` (sample several plans) and ``difficulty`` in this package.

Over 500 lines: schema, parsing, repair and the call-and-retry loop are one pipeline that
``expand``, ``alternatives`` and ``difficulty`` reuse piece by piece.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from engine.errors import ArborError
from engine.language import detect_language
from engine.models import Backend, ChatMessage, Completion, backend_for
from engine.models.base import TokenCallback
from engine.plan import GenerationConfig, ModelRef, Node, Plan, single_node_plan
from engine.plan.core import instruction_cut_note
from engine.planner.base_planner import (
    DEFAULT_SAMPLES,
    Progress,
    StepCandidate,
    listed_candidate,
    rank_candidates,
    sampled_candidates,
    skeleton_candidate,
)
from engine.planner.control import PlannerControl
from engine.planner.listed_parts import listed_parts
from engine.planner.patterns import classify
from engine.planner.scoring import comparable, score_steps, total_score
from engine.planner.vague import clarification_for
from engine.prompts import (
    DEFAULT_ROOT_INSTRUCTION,
    as_user_turn,
    fill,
    load_json_asset,
    load_prompt,
)

MIN_SUBTASKS = 2
MAX_SUBTASKS = 6
MAX_TITLE = 60
MAX_INSTRUCTION = 240
MAX_REASON = 120
MIN_DIFFICULTY = 1
MAX_DIFFICULTY = 5
MAX_DEPENDENCIES = 3
#: Longer tasks are cut before they reach the planner prompt; the plan keeps the full text.
MAX_TASK_CHARS_IN_PROMPT = 6000
#: First attempt, then the one retry. Measured on the 12 shipped example tasks with the bundled
#: model: at 0.2 the first answer copied a worked example 12 times out of 12; at 0.7, 6 of 12
#: answers were usable plans. Larger models plan well at either temperature.
PLANNER_TEMPERATURES = (0.7, 1.0)
#: Output tokens per planner call. Under a JSON grammar the bundled model writes about 29
#: tokens/s on 2 cores (bench/grammar_speed.py), so this bounds one attempt to about 20 s; a
#: longer answer is cut and its complete subtasks are kept.
PLANNER_MAX_TOKENS = 560
ROOT_INSTRUCTION = DEFAULT_ROOT_INSTRUCTION

DIFFICULTY_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "enum": list(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1)),
}
REASON_SCHEMA: dict[str, Any] = {"type": "string", "maxLength": MAX_REASON}

SUBTASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": MAX_TITLE},
        "instruction": {"type": "string", "minLength": 10, "maxLength": MAX_INSTRUCTION},
        "depends_on": {
            "type": "array",
            "maxItems": MAX_DEPENDENCIES,
            "items": {"type": "integer", "enum": list(range(1, MAX_SUBTASKS + 1))},
        },
        "difficulty": DIFFICULTY_SCHEMA,
        "reason": REASON_SCHEMA,
    },
    "required": ["title", "instruction", "depends_on", "difficulty", "reason"],
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": MIN_SUBTASKS,
            "maxItems": MAX_SUBTASKS,
            "items": SUBTASK_SCHEMA,
        }
    },
    "required": ["subtasks"],
}


@dataclass
class PlanCandidate:
    """One plan the planner considered, with the scores that ranked it."""

    #: Where it came from: "listed parts", "pattern: <name>", "sample 2", "json".
    source: str
    #: None when the candidate's text could not become a plan (``problem`` says why).
    plan: Plan | None
    #: Each criterion's score in 0..1, higher is better (relevance, coverage, ...).
    scores: dict[str, float] = field(default_factory=dict)
    #: The weighted sum the candidates were ranked by (higher is better).
    total: float = 0.0
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    #: The model's raw text ("" for candidates built without a call).
    text: str = ""
    #: Index into ``DecomposeResult.calls`` of the call that produced it, if any.
    call_index: int | None = None


@dataclass
class Clarification:
    """What to say when a task is too vague to plan."""

    message: str
    examples: list[str] = field(default_factory=list)


@dataclass
class DecomposeResult:
    """A plan and the story of how it was made."""

    plan: Plan
    #: What was repaired in the model output, or why the fallback plan was used.
    notes: list[str] = field(default_factory=list)
    #: True when the model's output was unusable and ``plan`` is the one-node fallback.
    fallback: bool = False
    calls: list[Completion] = field(default_factory=list)
    #: Every plan considered (empty for the JSON planner's single answer), best first is not
    #: implied: ``chosen`` indexes the one ``plan`` came from.
    candidates: list[PlanCandidate] = field(default_factory=list)
    chosen: int | None = None
    #: The decomposition pattern that shaped the prompt (``assets/planner/patterns.json``).
    pattern: str | None = None
    #: Set when the task is too vague to plan; ``plan`` is then the one-node plan.
    clarification: Clarification | None = None
    #: Which planner made it: "base" (few-shot completion, sampled and scored) or "chat" (JSON).
    style: str = "chat"
    #: The task's detected language (ISO 639-1), None when unclear.
    language: str | None = None

    @property
    def needs_detail(self) -> bool:
        return self.clarification is not None

    @property
    def attempts(self) -> int:
        return len(self.calls)


class UnusablePlan(ValueError):
    """The model's output cannot become a plan; the message says why."""


# -- small repairs shared by every planner-like call -------------------------------------------


def _restates(title: str, text: str) -> bool:
    """True when ``title`` is ``text`` (or its start, cut at the title limit), or contains it."""
    title_c, text_c = comparable(title), comparable(text)
    if not title_c or not text_c:
        return False
    if title_c == text_c[: len(title_c)] and len(title_c) >= min(len(text_c), MAX_TITLE - 1):
        return True
    # "Portugal: Plan a trip to Lisbon" for the task "Plan a trip to Lisbon".
    return len(text_c) >= 20 and text_c in title_c


_TEMPLATE_MARKER = re.compile(r"\{(?=[{%#])")


def defuse_template_markers(text: str) -> str:
    """Break ``{{``, ``{%`` and ``{#`` apart so model text is never read as a Jinja template."""
    return _TEMPLATE_MARKER.sub("{ ", text)


def clean_difficulty(value: Any, label: str) -> tuple[int | None, str | None]:
    """A difficulty from model output: ``(1..5 or None, note or None)``.

    Whole numbers in range pass silently; other numbers (``7``, ``2.6``, ``"4"``) are rounded and
    clamped into 1..5; anything else (``"hard"``, ``true``) is dropped. Both repairs are noted.
    """
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        if MIN_DIFFICULTY <= value <= MAX_DIFFICULTY:
            return value, None
        number: float = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    if not math.isfinite(number):
        return None, (
            f"dropped the difficulty of {label}: {value!r} is not a number from "
            f"{MIN_DIFFICULTY} to {MAX_DIFFICULTY}"
        )
    fixed = min(max(round(number), MIN_DIFFICULTY), MAX_DIFFICULTY)
    return fixed, (
        f"set the difficulty of {label} to {fixed} (the model gave {value!r}; difficulty is a "
        f"whole number from {MIN_DIFFICULTY} to {MAX_DIFFICULTY})"
    )


def clean_reason(value: Any, label: str) -> tuple[str | None, str | None]:
    """A one-line reason: whitespace collapsed, cut to ``MAX_REASON``; empty becomes None."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"dropped the difficulty reason of {label}: {value!r} is not text"
    reason = " ".join(value.split())
    if len(reason) > MAX_REASON:
        return reason[:MAX_REASON].rstrip(), (
            f"cut the difficulty reason of {label} to {MAX_REASON} characters"
        )
    return reason or None, None


# -- reading planner output ---------------------------------------------------------------------

_SUBTASKS_OPENING = re.compile(r'\s*\{\s*"subtasks"\s*:\s*\[')


def _salvage_items(text: str) -> list[Any]:
    """The complete items at the start of a broken ``{"subtasks": [...`` answer."""
    match = _SUBTASKS_OPENING.match(text)
    if match is None:
        return []
    decoder = json.JSONDecoder(strict=False)
    position = match.end()
    items: list[Any] = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return items
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return items
        items.append(item)


def _load_subtask_list(text: str) -> tuple[list[Any], list[str], str]:
    """The raw ``subtasks`` list, notes, and a hint for later errors (salvaged output)."""
    try:
        # strict=False: a raw newline or tab inside a string is harmless here, and the JSON
        # grammar lets small models write them.
        payload = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        # An unterminated string is reported at its start, so the position alone misses it.
        truncated = bool(text.strip()) and (
            exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        )
        hint = " (the output looks truncated)" if truncated else ""
        items = _salvage_items(text)
        if len(items) < MIN_SUBTASKS:
            raise UnusablePlan(
                f"the output is not valid JSON{hint}: {exc.msg} at char {exc.pos}"
            ) from exc
        what = "was cut off (truncated)" if truncated else "is not valid JSON"
        note = f"the output {what} after {len(items)} complete subtasks; kept those"
        return items, [note], hint or " (the output is broken JSON)"
    raw = payload.get("subtasks") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise UnusablePlan("the output has no 'subtasks' list")
    return raw, [], ""


def parse_subtasks(
    text: str,
    task: str = "",
    *,
    restated: Sequence[str] = (),
    existing_titles: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate and repair planner output. Returns subtasks and notes about every repair.

    Each subtask is ``{"number", "title", "instruction", "deps", "difficulty", "reason"}`` where
    ``deps`` are indices into the returned list (earlier ones only) and ``difficulty`` is 1..5 or
    None. Subtasks that restate ``task`` (or one of ``restated``, e.g. the node being split),
    repeat an earlier subtask word for word, or repeat one of ``existing_titles`` are dropped; a
    repeated title with a different instruction is renamed. Out-of-range difficulties are
    clamped, unreadable ones dropped; too-long text is cut.

    Raises ``UnusablePlan`` when the text is not JSON (and no complete subtasks can be salvaged
    from its start), has the wrong shape, or has fewer than two usable subtasks after repair.
    """
    raw, notes, hint = _load_subtask_list(text)
    subtasks: list[dict[str, Any]] = []
    seen_titles: dict[str, int] = {}
    seen_subtasks: dict[tuple[str, str], int] = {}
    existing = {comparable(title): title for title in existing_titles}
    for index, item in enumerate(raw[:MAX_SUBTASKS], start=1):
        if not isinstance(item, dict):
            notes.append(f"dropped subtask {index}: not an object")
            continue
        raw_title = " ".join(str(item.get("title") or "").split())
        raw_instruction = " ".join(str(item.get("instruction") or "").split())
        title, instruction = raw_title[:MAX_TITLE].rstrip(), raw_instruction[:MAX_INSTRUCTION]
        if not title and not instruction:
            notes.append(f"dropped subtask {index}: empty title and instruction")
            continue
        if len(raw_title) > MAX_TITLE:
            notes.append(f"cut the title of subtask {index} to {MAX_TITLE} characters")
        if len(raw_instruction) > MAX_INSTRUCTION:
            notes.append(f"cut the instruction of subtask {index} to {MAX_INSTRUCTION} characters")
        if not title:
            title = instruction[:MAX_TITLE].rstrip()
            notes.append(f"subtask {index} had no title; used the start of its instruction")
        instruction = instruction or title
        if task and _restates(title, task):
            notes.append(f"dropped subtask {index}: it restates the whole task")
            continue
        restating = next((text for text in restated if _restates(title, text)), None)
        if restating is not None:
            notes.append(f"dropped subtask {index}: it restates {restating!r}")
            continue
        if comparable(title) in existing:
            notes.append(
                f"dropped subtask {index}: it repeats the existing sub-step "
                f"{existing[comparable(title)]!r}"
            )
            continue
        identity = (comparable(title), comparable(instruction))
        if identity in seen_subtasks:
            notes.append(f"dropped subtask {index}: it repeats subtask {seen_subtasks[identity]}")
            continue
        seen_subtasks[identity] = index
        key = title.casefold()
        if key in seen_titles:
            seen_titles[key] += 1
            new_title = f"{title} ({seen_titles[key]})"
            notes.append(f"renamed duplicate title {title!r} to {new_title!r}")
            title = new_title
        else:
            seen_titles[key] = 1
        safe = defuse_template_markers(instruction)
        if safe != instruction:
            notes.append(
                f"broke up '{{{{', '{{%' or '{{#' in the instruction of {title!r} so it is "
                "not read as a template"
            )
        difficulty, note = clean_difficulty(item.get("difficulty"), repr(title))
        notes.extend([note] if note else [])
        reason, note = clean_reason(item.get("reason"), repr(title))
        notes.extend([note] if note and difficulty is not None else [])
        subtasks.append(
            {
                "number": index,
                "title": title,
                "instruction": safe,
                "deps": item.get("depends_on"),
                "difficulty": difficulty,
                "reason": reason if difficulty is not None else None,
            }
        )
    if len(raw) > MAX_SUBTASKS:
        notes.append(f"kept the first {MAX_SUBTASKS} of {len(raw)} subtasks")

    # Dependencies refer to the model's own numbering; keep only edges to earlier kept subtasks.
    position = {sub["number"]: i for i, sub in enumerate(subtasks)}
    for i, sub in enumerate(subtasks):
        deps = sub.pop("deps")
        kept: list[int] = []
        if deps is not None and not isinstance(deps, list):
            notes.append(f"dropped the dependencies of {sub['title']!r}: {deps!r} is not a list")
            deps = []
        for dep in deps or []:
            target = position.get(dep) if isinstance(dep, int) else None
            if target is None or target >= i:
                notes.append(
                    f"dropped dependency of {sub['title']!r} on step {dep!r} (not earlier)"
                )
            elif target not in kept:
                kept.append(target)
        sub["deps"] = kept
    if len(subtasks) < MIN_SUBTASKS:
        raise UnusablePlan(
            f"only {len(subtasks)} usable subtask(s){hint}; at least {MIN_SUBTASKS} needed"
        )
    return subtasks, notes


# -- prompts ------------------------------------------------------------------------------------


def worked_examples() -> list[dict[str, Any]]:
    """The planner's worked examples: ``[{"task": ..., "answer": {"subtasks": [...]}}]``."""
    return load_json_asset("decompose_examples.json")


def example_exchange(rules: str, request: str, answer: Any) -> list[ChatMessage]:
    """Rules and one worked request as a finished exchange (user turn, assistant answer)."""
    return [
        *as_user_turn(rules, request),
        {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
    ]


def worked_example_turns() -> list[ChatMessage]:
    """The rules and the worked examples as finished exchanges, ready for the real request.

    The examples are separate turns because, written inline, small models copy them as their
    answer; two different ones show the pattern rather than one answer to copy. The rules ride
    in the first user turn (see ``as_user_turn``).
    """
    rules = load_prompt("decompose_system")
    messages: list[ChatMessage] = []
    for number, example in enumerate(worked_examples()):
        request = fill("decompose_user", task=example["task"])
        if number == 0:
            messages.extend(example_exchange(rules, request, example["answer"]))
        else:
            messages.append({"role": "user", "content": request})
            messages.append(
                {"role": "assistant", "content": json.dumps(example["answer"], ensure_ascii=False)}
            )
    return messages


def planner_messages(task: str) -> list[ChatMessage]:
    """Rules and worked examples, then the real task."""
    return [
        *worked_example_turns(),
        {"role": "user", "content": fill("decompose_user", task=task)},
    ]


def copies_example(subtasks: list[dict[str, Any]], examples: Sequence[dict[str, Any]]) -> bool:
    """True when two or more titles come from one worked example's answer."""
    for example in examples:
        titles = {comparable(s["title"]) for s in example["answer"]["subtasks"]}
        if sum(comparable(s["title"]) in titles for s in subtasks) >= 2:
            return True
    return False


def copy_stops(examples: Sequence[dict[str, Any]]) -> list[str]:
    """Stop strings that end an answer as soon as it starts copying a worked example.

    The bundled model, at its first attempt, copies (or nearly copies) an example's answer
    about every time. Each string is an example's first title followed by the first word of its
    instruction, as the JSON grammar writes them; generation stops after a few dozen tokens
    instead of a few hundred, and ``call_planner`` reports the attempt as a copy.
    """
    stops = []
    for example in examples:
        first = example["answer"]["subtasks"][0]
        stops.append(f'{first["title"]}", "instruction": "{first["instruction"].split()[0]}')
    return stops[:4]


_CUT_AT_TITLE = re.compile(r'"title"\s*:\s*"$')


def stopped_at_title(text: str) -> bool:
    """True when ``text`` ends just inside a title: where a ``copy_stops`` string cuts it."""
    return _CUT_AT_TITLE.search(text.rstrip()) is not None


def clip_task(task: str) -> tuple[str, list[str]]:
    """The task as the planner sees it, and a note when it had to be cut."""
    text = task.strip()
    if len(text) <= MAX_TASK_CHARS_IN_PROMPT:
        return text, []
    return text[:MAX_TASK_CHARS_IN_PROMPT] + " [...]", [
        f"the task is {len(task)} characters; the planner saw the first "
        f"{MAX_TASK_CHARS_IN_PROMPT} (the plan keeps the full task)"
    ]


# -- building nodes -----------------------------------------------------------------------------


def make_nodes(subtasks: list[dict[str, Any]], ids: Sequence[str]) -> list[Node]:
    """Nodes for parsed subtasks; ``ids[i]`` names subtask ``i`` and its dependencies."""
    return [
        Node(
            id=ids[i],
            title=sub["title"],
            instruction=sub["instruction"],
            depends_on=[ids[dep] for dep in sub["deps"]],
            difficulty=sub.get("difficulty"),
            difficulty_reason=sub.get("reason") if sub.get("difficulty") is not None else None,
        )
        for i, sub in enumerate(subtasks)
    ]


def root_node(task: str, children: list[Node]) -> Node:
    return Node(
        id="root",
        title=" ".join(task.split())[:80] or "Task",
        instruction=ROOT_INSTRUCTION,
        children=children,
    )


def build_plan(task: str, subtasks: list[dict[str, Any]], model: ModelRef) -> Plan:
    children = make_nodes(subtasks, [f"s{i + 1}" for i in range(len(subtasks))])
    plan = Plan(task=task, root=root_node(task, children), default_model=model)
    plan.validate_graph()
    return plan


# -- the call-and-retry loop ------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class PlannerOutcome(Generic[T]):
    """What ``call_planner`` got: a parsed value (None when every attempt failed) and why."""

    value: T | None
    notes: list[str]
    calls: list[Completion]
    failures: list[str]


def call_planner(
    backend: Backend,
    messages: list[ChatMessage],
    parse: Callable[[str], tuple[T, list[str]]],
    *,
    seed: int | None,
    schema: dict[str, Any] = PLAN_SCHEMA,
    temperatures: Sequence[float] = PLANNER_TEMPERATURES,
    max_tokens: int = PLANNER_MAX_TOKENS,
    stop: Sequence[str] = (),
    control: PlannerControl | None = None,
) -> PlannerOutcome[T]:
    """Ask, parse, and ask again at the next temperature when the answer is unusable.

    ``parse`` returns ``(value, repair notes)`` or raises ``UnusablePlan`` / ``ArborError``.
    Errors of the call itself (model unavailable, call failed) propagate. ``control`` hears
    "retry" before a second attempt and may cancel between attempts.
    """
    calls: list[Completion] = []
    failures: list[str] = []
    for attempt, temperature in enumerate(temperatures):
        if control is not None and attempt:
            control.stage(
                f"retry {attempt} of {len(temperatures) - 1} at temperature {temperature} "
                f"({failures[-1] if failures else 'unusable answer'})"
            )
        config = GenerationConfig(
            temperature=temperature,
            max_tokens=max_tokens,
            seed=None if seed is None else seed + attempt,
            stop=list(stop),
        )
        completion = backend.complete(messages, config, json_schema=schema)
        calls.append(completion)
        if stop and completion.finish_reason != "length" and stopped_at_title(completion.text):
            failures.append(f"attempt {attempt + 1}: the model began copying a worked example")
            continue
        try:
            value, repairs = parse(completion.text)
        except (UnusablePlan, ArborError) as exc:
            cut = " [stopped at the token limit]" if completion.finish_reason == "length" else ""
            failures.append(f"attempt {attempt + 1}: {exc}{cut}")
            continue
        notes = []
        if failures:
            notes.append(
                f"the first answer was unusable ({'; '.join(failures)}); the retry at "
                f"temperature {temperature} worked"
            )
        return PlannerOutcome(value, notes + repairs, calls, failures)
    return PlannerOutcome(None, [], calls, failures)


PlannerStyle = Literal["auto", "chat", "base"]


def planner_style(
    model: ModelRef, style: PlannerStyle = "auto", backend: Backend | None = None
) -> Literal["chat", "base"]:
    """Which planner a model gets: base models the sampled few-shot one, others the JSON one.

    A registry entry's declared kind (carried by its ``backend``) wins over detection.
    """
    if style != "auto":
        return style
    from engine.models.model_kind import kind_of

    declared = backend.declared_kind if backend is not None else "auto"
    return "base" if kind_of(model, declared).kind == "base" else "chat"


def _report(on_progress: Progress | None, stage: str) -> None:
    if on_progress is not None:
        on_progress(stage)


def _fallback(task: str, model: ModelRef, notes: list[str], reason: str) -> Plan:
    notes.extend(instruction_cut_note(task))
    notes.append(
        f"The model could not produce a usable plan ({reason}). "
        "Here is a one-node plan to edit instead."
    )
    return single_node_plan(task, model)


def steps_to_nodes(candidate: StepCandidate, ids: Sequence[str]) -> list[Node]:
    """Plan nodes for a candidate's steps; ``ids[i]`` names step ``i``."""
    nodes = []
    for i, (title, instruction) in enumerate(candidate.steps):
        deps = candidate.deps[i] if i < len(candidate.deps) else []
        nodes.append(
            Node(
                id=ids[i],
                title=title,
                instruction=defuse_template_markers(instruction),
                depends_on=[ids[d] for d in deps if d < i],
            )
        )
    return nodes


def _candidate_plan(task: str, candidate: StepCandidate, model: ModelRef) -> Plan:
    children = steps_to_nodes(candidate, [f"s{i + 1}" for i in range(len(candidate.steps))])
    plan = Plan(task=task, root=root_node(task, children), default_model=model)
    plan.validate_graph()
    return plan


def _decompose_base(
    task: str,
    model: ModelRef,
    backend: Backend | None,
    *,
    seed: int | None,
    samples: int,
    on_progress: Progress | None,
    control: PlannerControl | None = None,
) -> DecomposeResult:
    prompt_task, notes = clip_task(task)
    language = detect_language(prompt_task)
    result = DecomposeResult(
        plan=single_node_plan(task, model), notes=notes, style="base", language=language
    )
    listed = listed_parts(prompt_task)
    pattern = None if listed else classify(prompt_task)
    result.pattern = pattern.name if pattern else None
    step_candidates: list[StepCandidate] = []
    parts: list[str] = []
    if listed is not None:
        # The task names its parts: they are the plan, and no model call can improve on that.
        step_candidates.append(listed_candidate(listed, prompt_task))
        parts = listed.parts
    else:
        if pattern is not None:
            step_candidates.append(skeleton_candidate(pattern, prompt_task, language))
        _report(on_progress, f"sampling {samples} candidate plans")
        backend = backend or backend_for(model)
        if control is not None:
            backend = control.wrap(backend)
        sampled, calls = sampled_candidates(
            backend, prompt_task, language, pattern, samples=samples, seed=seed
        )
        result.calls.extend(calls)
        step_candidates.extend(sampled)
    _report(on_progress, "scoring the candidates")
    best = rank_candidates(step_candidates, prompt_task, language, parts)
    for candidate in step_candidates:
        plan = None
        if candidate.problem is None:
            plan = _candidate_plan(task, candidate, model)
        result.candidates.append(
            PlanCandidate(
                source=candidate.source,
                plan=plan,
                scores=candidate.scores,
                total=candidate.total,
                notes=candidate.notes,
                problem=candidate.problem,
                text=candidate.text,
                call_index=candidate.call_index,
            )
        )
    if best is None:
        reasons = "; ".join(f"{c.source}: {c.problem}" for c in step_candidates)
        result.plan = _fallback(task, model, result.notes, reasons or "no candidate")
        result.fallback = True
        return result
    chosen = result.candidates[best]
    assert chosen.plan is not None
    result.plan, result.chosen = chosen.plan, best
    usable = sum(1 for c in result.candidates if c.plan is not None)
    result.notes.append(
        f"chose {chosen.source} (score {chosen.total:.2f}) of {usable} usable candidate(s)"
        + (f"; pattern {result.pattern}" if result.pattern else "")
    )
    return result


def _decompose(
    task: str,
    model: ModelRef | None,
    *,
    backend: Backend | None,
    seed: int | None,
    temperatures: Sequence[float] = PLANNER_TEMPERATURES,
    style: PlannerStyle = "auto",
    samples: int = DEFAULT_SAMPLES,
    on_progress: Progress | None = None,
    control: PlannerControl | None = None,
) -> DecomposeResult:
    if not task or not task.strip():
        raise ValueError("The task is empty: type what you want done first.")
    model = model or ModelRef()
    clarification = clarification_for(task)
    if clarification is not None:
        message, rewrites = clarification
        return DecomposeResult(
            plan=single_node_plan(task, model),
            notes=[message],
            clarification=Clarification(message, rewrites),
            style="none",
        )
    _report(on_progress, "choosing a planner")
    backend = backend or backend_for(model)
    chosen_style = planner_style(model, style, backend)
    if chosen_style == "base":
        return _decompose_base(
            task,
            model,
            backend,
            seed=seed,
            samples=samples,
            on_progress=on_progress,
            control=control,
        )
    _report(on_progress, "asking the model for a plan (JSON)")
    backend = backend or backend_for(model)
    if control is not None:
        backend = control.wrap(backend)
    prompt_task, notes = clip_task(task)
    examples = worked_examples()

    def parse(text: str) -> tuple[Plan, list[str]]:
        subtasks, repairs = parse_subtasks(text, task)
        if copies_example(subtasks, examples):
            raise UnusablePlan("the model copied the prompt's worked example")
        return build_plan(task, subtasks, model), repairs

    outcome = call_planner(
        backend,
        planner_messages(prompt_task),
        parse,
        seed=seed,
        temperatures=temperatures,
        stop=copy_stops(examples),
        control=control,
    )
    language = detect_language(prompt_task)
    result = DecomposeResult(
        plan=single_node_plan(task, model), calls=outcome.calls, style="chat", language=language
    )
    for index, (call, failure) in enumerate(
        zip(outcome.calls, [*outcome.failures, None], strict=False)
    ):
        is_answer = outcome.value is not None and index == len(outcome.calls) - 1
        plan = outcome.value if is_answer else None
        candidate = PlanCandidate(
            source=f"json attempt {index + 1}",
            plan=plan,
            problem=None if is_answer else (failure or "unusable"),
            text=call.text,
            call_index=index,
        )
        if plan is not None:
            readable = [f"{n.title}. {n.instruction}" for n in plan.root.children]
            candidate.scores = score_steps(readable, prompt_task, language)
            candidate.total = total_score(candidate.scores, len(outcome.notes))
            result.chosen = index
        result.candidates.append(candidate)
    if outcome.value is not None:
        result.plan, result.notes = outcome.value, notes + outcome.notes
        return result
    result.notes = notes
    result.plan = _fallback(task, model, result.notes, "; ".join(outcome.failures))
    result.fallback = True
    return result


def decompose(
    task: str,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    seed: int | None = 7,
    temperatures: Sequence[float] = PLANNER_TEMPERATURES,
    style: PlannerStyle = "auto",
    samples: int = DEFAULT_SAMPLES,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_text: TokenCallback | None = None,
) -> DecomposeResult:
    """Ask ``model`` to split ``task``. Never raises for bad model output; see ``DecomposeResult``.

    ``style`` picks the planner: "base" samples ``samples`` few-shot plans in one batched call
    and keeps the best-scored (``engine.planner.base_planner``), "chat" asks for JSON under a
    grammar with one retry (``temperatures`` are the first attempt's and the retry's), "auto"
    chooses by the model's kind. A task too vague to plan gets ``clarification`` and no model
    call. ``on_progress`` hears each stage ("sampling 4 candidate plans", ...). Raises
    ``ValueError`` for an empty task and ``ArborError`` subclasses when the model itself is
    unavailable (missing file, unreachable endpoint): those are the user's to fix.

    ``cancel`` (set from another thread) stops the action between stages and model calls, and
    between tokens where the backend streams: ``PlannerCancelled`` is raised. ``on_text``
    hears the model's text as it comes (see ``engine.planner.control``).
    """
    control = PlannerControl(cancel, on_progress, on_text)
    return _decompose(
        task,
        model,
        backend=backend,
        seed=seed,
        temperatures=temperatures,
        style=style,
        samples=samples,
        on_progress=control.stage,
        control=control,
    )
