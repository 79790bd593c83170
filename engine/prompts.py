"""Prompt texts live in ``assets/prompts/``; this module loads and fills them.

``string.Template`` (``$name``) rather than ``str.format`` so that braces in worked JSON examples
need no escaping. A node's own instruction may be a Jinja template (``{{ deps.s1 }}``); it is
rendered by ``engine.plan.templates`` before it is put into the prompt.
"""

from __future__ import annotations

import functools
import json
import re
from string import Template
from typing import Any, Literal

from assets import asset_path
from engine.models.base import ChatMessage
from engine.models.model_kind import kind_of
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.templates import draft_node, placeholder_outputs, render_instruction

PROMPTS_DIR = asset_path("prompts")
#: Upstream outputs are cut to this many characters so a deep plan still fits the context.
MAX_UPSTREAM_CHARS = 2000
#: In a base prompt (a small context, about 2.5 ms a prompt token on the bundled model) each
#: upstream output is cut shorter.
MAX_BASE_UPSTREAM_CHARS = 600
#: The root's instruction in a decomposed plan. A base prompt, which has no room for the
#: chat prompt's "Overall task" section, asks the root the task itself instead.
DEFAULT_ROOT_INSTRUCTION = (
    "Give the final answer to the overall task, using the sub-steps' results."
)
#: A task quoted as the root's question in a base prompt is cut to this many characters.
MAX_BASE_TASK_CHARS = 1000
#: ``GenerationConfig.stop`` holds at most this many strings.
MAX_STOPS = 4

#: How a call's prompt is written: the model's chat format, Arbor's few-shot completion prompt
#: (``assets/prompts/base/``), or the node's instruction alone as raw text.
PromptStyle = Literal["chat", "base", "completion"]


@functools.cache
def load_prompt(name: str) -> str:
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


@functools.cache
def load_json_asset(name: str) -> Any:
    """A JSON file of ``assets/prompts/`` (worked examples), read once."""
    return json.loads((PROMPTS_DIR / name).read_text(encoding="utf-8"))


def fill(name: str, **values: str) -> str:
    return Template(load_prompt(name)).safe_substitute(**values).strip()


@functools.cache
def load_base_prompt(name: str) -> dict[str, Any]:
    """A few-shot prompt of ``assets/prompts/base/`` (``answer``, ``judge``, ...), read once."""
    spec = json.loads((PROMPTS_DIR / "base" / f"{name}.json").read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not isinstance(spec.get("examples"), list):
        raise ValueError(f"assets/prompts/base/{name}.json has no examples list")
    return spec


def _one_block(text: str) -> str:
    """``text`` without blank lines: in a few-shot prompt a blank line separates examples."""
    return re.sub(r"\n\s*\n", "\n", text.strip())


def few_shot(name: str, input_text: str) -> tuple[str, list[str]]:
    """A base (completion) prompt and its stop strings, from ``assets/prompts/base/NAME.json``.

    The header, then each worked example as ``<input_label>: input`` / ``<output_label>:
    output``, blank lines between, then the real input and the output label for the model to
    continue. Blank lines inside ``input_text`` are removed (they would end the example).
    """
    spec = load_base_prompt(name)
    in_label = spec.get("input_label", "Question")
    out_label = spec.get("output_label", "Answer")
    blocks = [spec["header"].strip()] if spec.get("header") else []
    for example in spec["examples"]:
        blocks.append(f"{in_label}: {example['input']}\n{out_label}: {example['output']}")
    blocks.append(f"{in_label}: {_one_block(input_text)}\n{out_label}:")
    return "\n\n".join(blocks), [str(stop) for stop in spec.get("stop", []) if stop]


def merge_stops(own: list[str], extra: list[str]) -> list[str]:
    """``own`` stop strings first, then ``extra``'s new ones, at most ``MAX_STOPS``."""
    merged: list[str] = []
    for stop in [*own, *extra]:
        if stop and stop not in merged:
            merged.append(stop)
    return merged[:MAX_STOPS]


def prompt_style(
    ref: ModelRef, generation: GenerationConfig, declared: str = "auto"
) -> PromptStyle:
    """The style a call to ``ref`` is written in: ``auto`` asks the model's kind.

    ``declared`` is the model's registry ``model_kind`` (``Backend.declared_kind``).
    """
    chosen = generation.prompt_format
    if chosen != "auto":
        return chosen
    return "base" if kind_of(ref, declared).kind == "base" else "chat"


def base_prompt_stops(style: PromptStyle, node: Node) -> list[str]:
    """The stop strings of the few-shot prompt a node gets in ``style`` (none unless base)."""
    if style != "base":
        return []
    return few_shot("synthesis" if node.children else "answer", "")[1]


def _quote(text: str, limit: int = MAX_BASE_UPSTREAM_CHARS) -> str:
    """An upstream output inside a base prompt: verbatim (so checks can still find it in the
    prompt) but without blank lines, which would end the example, and clipped."""
    text = _one_block(text)
    return text if len(text) <= limit else text[:limit] + " [...]"


def base_node_prompt(
    node: Node, instruction: str, deps: list[tuple[str, str]], children: list[tuple[str, str]]
) -> tuple[str, list[str]]:
    """A node's few-shot prompt: ``answer`` for a leaf (upstream outputs as "Given" lines),
    ``synthesis`` for a parent (its sub-steps' results as a list)."""
    question = instruction.strip() or node.title
    if deps:
        question += "".join(f"\nGiven ({title}): {_quote(output)}" for title, output in deps)
    if not node.children:
        return few_shot("answer", question)
    results = "".join(f"\n- {title}: {_quote(output)}" for title, output in children)
    return few_shot("synthesis", f"{question}\nStep results:{results}")


def as_user_turn(instructions: str, request: str) -> list[ChatMessage]:
    """One user message carrying both the standing instructions and the request.

    Not every chat format has a system role: llama-cpp-python's Gemma format silently drops
    system messages, and so does any server using it. A single user turn works everywhere.
    """
    return [{"role": "user", "content": f"{instructions.strip()}\n\n{request.strip()}"}]


def _clip(text: str) -> str:
    text = text.strip()
    if len(text) <= MAX_UPSTREAM_CHARS:
        return text
    return text[:MAX_UPSTREAM_CHARS] + " [...]"


def _sections(pairs: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"### {title}\n{_clip(output)}" for title, output in pairs)


def node_messages(
    plan: Plan,
    node: Node,
    outputs: dict[str, str],
    nodes: dict[str, Node] | None = None,
    *,
    deadline: float | None = None,
    style: PromptStyle | None = None,
) -> list[ChatMessage]:
    """The messages a node is run with: its instruction plus what it depends on.

    A leaf sees its dependencies' outputs; a parent also sees its children's outputs and is asked
    to combine them. ``style`` is how the prompt is written (``prompt_style``; None resolves it
    from the node's model and ``prompt_format``): ``chat`` fills the chat prompts; ``base`` a
    few-shot completion prompt (``assets/prompts/base/answer.json`` for a leaf,
    ``synthesis.json`` for a parent), as one user message the backend sends as raw text;
    ``completion`` the rendered instruction alone. ``outputs`` maps node id to the output of
    every finished node. The instruction is rendered as a template first (dependency outputs
    clipped as in the context); a broken template raises ``TemplateProblem``. ``nodes``
    (``plan.nodes()``) may be passed by a caller that renders many nodes, to avoid rebuilding
    it for each. ``deadline`` (a run's time-cap deadline, ``time.monotonic()`` seconds) bounds
    the rendering besides its own limit.
    """
    nodes = nodes if nodes is not None else plan.nodes()
    if style is None:
        style = prompt_style(plan.model_for(node), plan.generation_for(node))
    clipped = {dep: _clip(outputs[dep]) for dep in node.depends_on if dep in outputs}
    if style == "completion":
        # A base model continues text: it gets the instruction alone, no chat framing; a
        # dependency's output reaches it only through ``{{ deps.ID }}`` in the instruction.
        text = render_instruction(plan, node, clipped, deadline=deadline)
        return [{"role": "user", "content": text.strip() or node.title}]
    deps = [(nodes[dep].title, outputs.get(dep, "")) for dep in node.depends_on]
    instruction = render_instruction(plan, node, clipped, deadline=deadline)
    children = [(child.title, outputs.get(child.id, "")) for child in node.children]
    if style == "base":
        # An output the instruction already quotes ({{ deps.ID }}) is not repeated.
        given = [
            (nodes[dep].title, outputs.get(dep, ""))
            for dep in node.depends_on
            if not re.search(rf"deps\s*(\.\s*{re.escape(dep)}\b|\[)", node.instruction)
        ]
        if node.id == plan.root.id and instruction.strip() == DEFAULT_ROOT_INSTRUCTION:
            instruction = _quote(plan.task, MAX_BASE_TASK_CHARS)
        text, _ = base_node_prompt(node, instruction, given, children)
        return [{"role": "user", "content": text}]
    context = f"\nResults of earlier steps:\n{_sections(deps)}\n" if deps else ""
    values = {
        "task": plan.task.strip(),
        "title": node.title,
        "instruction": instruction.strip() or node.title,
        "context": context,
    }
    if node.children:
        user = fill("parent_user", children=_sections(children), **values)
    else:
        user = fill("leaf_user", **values)
    return as_user_turn(load_prompt("node_system"), user)


def preview_messages(
    plan: Plan,
    node_id: str,
    instruction: str | None = None,
    *,
    depends_on: list[str] | None = None,
    style: PromptStyle | None = None,
) -> list[ChatMessage]:
    """The exact messages ``node_id`` will be run with, before the run.

    ``style`` as in ``node_messages`` (None: the node's model and ``prompt_format`` decide;
    a base prompt shows as one message holding the raw text the model continues).

    Dependencies' and children's outputs appear as placeholders (``<output of s1: Title>``);
    ``instruction`` and ``depends_on`` preview a draft instead of the node's current values.
    Raises ``TemplateProblem`` if the instruction's template cannot be rendered.
    """
    node = draft_node(plan, node_id, instruction, depends_on)
    return node_messages(plan, node, placeholder_outputs(plan, node), style=style)
