"""Task text -> plan, using the chosen model with JSON-schema constrained output.

Small local models produce valid JSON under a grammar but not always sensible content, so the
schema is tightly bounded, the output is repaired (invalid edges dropped, titles deduplicated,
text trimmed) and every repair is reported. One retry at a higher temperature; if that also
fails the caller gets a one-node plan to edit and the reason, never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.backends import Backend, ChatMessage, Completion, backend_for
from engine.errors import ArborError
from engine.plan import GenerationConfig, ModelRef, Node, Plan, single_node_plan
from engine.prompts import PROMPTS_DIR, as_user_turn, fill, load_prompt

MIN_SUBTASKS = 2
MAX_SUBTASKS = 6
MAX_TITLE = 60
MAX_INSTRUCTION = 240
#: Longer tasks are cut before they reach the planner prompt; the plan keeps the full text.
MAX_TASK_CHARS_IN_PROMPT = 6000

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": MIN_SUBTASKS,
            "maxItems": MAX_SUBTASKS,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 3, "maxLength": MAX_TITLE},
                    "instruction": {
                        "type": "string",
                        "minLength": 10,
                        "maxLength": MAX_INSTRUCTION,
                    },
                    "depends_on": {
                        "type": "array",
                        "maxItems": 3,
                        "items": {"type": "integer", "enum": list(range(1, MAX_SUBTASKS + 1))},
                    },
                },
                "required": ["title", "instruction", "depends_on"],
            },
        }
    },
    "required": ["subtasks"],
}


@dataclass
class DecomposeResult:
    """A plan and the story of how it was made."""

    plan: Plan
    #: What was repaired in the model output, or why the fallback plan was used.
    notes: list[str] = field(default_factory=list)
    #: True when the model's output was unusable and ``plan`` is the one-node fallback.
    fallback: bool = False
    calls: list[Completion] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.calls)


class UnusablePlan(ValueError):
    """The model's output cannot become a plan; the message says why."""


def _comparable(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?:;")


def parse_subtasks(text: str, task: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Validate and repair planner output. Returns subtasks and notes about every repair.

    Subtasks that restate ``task`` or repeat an earlier subtask word for word are dropped; a
    repeated title with a different instruction is renamed.

    Raises ``UnusablePlan`` when the text is not JSON, has the wrong shape, or has fewer than
    two usable subtasks after repair.
    """
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        # An unterminated string is reported at its start, so the position alone misses it.
        truncated = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        hint = " (the output looks truncated)" if truncated and text.strip() else ""
        raise UnusablePlan(
            f"the output is not valid JSON{hint}: {exc.msg} at char {exc.pos}"
        ) from exc
    raw = payload.get("subtasks") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise UnusablePlan("the output has no 'subtasks' list")

    notes: list[str] = []
    subtasks: list[dict[str, Any]] = []
    seen_titles: dict[str, int] = {}
    seen_subtasks: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw[:MAX_SUBTASKS], start=1):
        if not isinstance(item, dict):
            notes.append(f"dropped subtask {index}: not an object")
            continue
        title = " ".join(str(item.get("title", "")).split())[:MAX_TITLE]
        instruction = " ".join(str(item.get("instruction", "")).split())[:MAX_INSTRUCTION]
        if not title and not instruction:
            notes.append(f"dropped subtask {index}: empty title and instruction")
            continue
        title = title or instruction[:MAX_TITLE]
        instruction = instruction or title
        if (
            task
            and _comparable(title) == _comparable(task)[: len(_comparable(title))]
            and (len(_comparable(title)) >= min(len(_comparable(task)), MAX_TITLE - 1))
        ):
            notes.append(f"dropped subtask {index}: it restates the whole task")
            continue
        identity = (_comparable(title), _comparable(instruction))
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
        subtasks.append(
            {
                "number": index,
                "title": title,
                "instruction": instruction,
                "deps": item.get("depends_on"),
            }
        )
    if len(raw) > MAX_SUBTASKS:
        notes.append(f"kept the first {MAX_SUBTASKS} of {len(raw)} subtasks")

    # Dependencies refer to the model's own numbering; keep only edges to earlier kept subtasks.
    position = {sub["number"]: i for i, sub in enumerate(subtasks)}
    for i, sub in enumerate(subtasks):
        deps = sub.pop("deps")
        kept: list[int] = []
        for dep in deps if isinstance(deps, list) else []:
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
            f"only {len(subtasks)} usable subtask(s); at least {MIN_SUBTASKS} needed"
        )
    return subtasks, notes


def worked_example() -> dict[str, Any]:
    return json.loads((PROMPTS_DIR / "decompose_example.json").read_text(encoding="utf-8"))


def planner_messages(task: str) -> list[ChatMessage]:
    """Rules, then the worked example as a finished exchange, then the real task.

    The example is a separate turn because, written inline, small models copy it as their answer.
    """
    example = worked_example()
    rules = load_prompt("decompose_system")
    return [
        *as_user_turn(rules, fill("decompose_user", task=example["task"])),
        {"role": "assistant", "content": json.dumps(example["answer"], ensure_ascii=False)},
        {"role": "user", "content": fill("decompose_user", task=task)},
    ]


def _copies_example(subtasks: list[dict[str, Any]]) -> bool:
    example_titles = {s["title"].casefold() for s in worked_example()["answer"]["subtasks"]}
    return sum(s["title"].casefold() in example_titles for s in subtasks) >= 2


def build_plan(task: str, subtasks: list[dict[str, Any]], model: ModelRef) -> Plan:
    children = [
        Node(
            id=f"s{i + 1}",
            title=sub["title"],
            instruction=sub["instruction"],
            depends_on=[f"s{dep + 1}" for dep in sub["deps"]],
        )
        for i, sub in enumerate(subtasks)
    ]
    root_title = " ".join(task.split())[:80]
    root = Node(
        id="root",
        title=root_title,
        instruction="Give the final answer to the overall task, using the sub-steps' results.",
        children=children,
    )
    plan = Plan(task=task, root=root, default_model=model)
    plan.validate_graph()
    return plan


def decompose(
    task: str,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    seed: int | None = 7,
) -> DecomposeResult:
    """Ask ``model`` to split ``task``. Never raises for bad model output; see ``DecomposeResult``.

    Raises ``ValueError`` for an empty task and ``ArborError`` subclasses when the model itself is
    unavailable (missing file, unreachable endpoint): those are the user's to fix, not repairable.
    """
    if not task or not task.strip():
        raise ValueError("The task is empty: type what you want done first.")
    model = model or ModelRef()
    backend = backend or backend_for(model)
    prompt_task = task.strip()
    notes: list[str] = []
    if len(prompt_task) > MAX_TASK_CHARS_IN_PROMPT:
        prompt_task = prompt_task[:MAX_TASK_CHARS_IN_PROMPT] + " [...]"
        notes.append(
            f"the task is {len(task)} characters; the planner saw the first "
            f"{MAX_TASK_CHARS_IN_PROMPT}"
        )
    messages = planner_messages(prompt_task)
    calls: list[Completion] = []
    failures: list[str] = []
    for attempt, temperature in enumerate((0.2, 0.7)):
        config = GenerationConfig(
            temperature=temperature,
            max_tokens=700,
            seed=None if seed is None else seed + attempt,
        )
        completion = backend.complete(messages, config, json_schema=PLAN_SCHEMA)
        calls.append(completion)
        try:
            subtasks, repairs = parse_subtasks(completion.text, task)
            if _copies_example(subtasks):
                raise UnusablePlan("the model copied the prompt's worked example")
            plan = build_plan(task, subtasks, model)
        except (UnusablePlan, ArborError) as exc:
            failures.append(f"attempt {attempt + 1}: {exc}")
            continue
        return DecomposeResult(plan=plan, notes=notes + repairs, calls=calls)
    reason = "; ".join(failures)
    return DecomposeResult(
        plan=single_node_plan(task, model),
        notes=[
            *notes,
            f"The model could not produce a usable plan ({reason}). "
            "Here is a one-node plan to edit instead.",
        ],
        fallback=True,
        calls=calls,
    )
