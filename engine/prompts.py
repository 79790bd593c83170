"""Prompt texts live in ``assets/prompts/``; this module loads and fills them.

``string.Template`` (``$name``) rather than ``str.format`` so that braces in worked JSON examples
need no escaping. A node's own instruction may be a Jinja template (``{{ deps.s1 }}``); it is
rendered by ``engine.plan.templates`` before it is put into the prompt.
"""

from __future__ import annotations

import functools
import json
from string import Template
from typing import Any

from assets import asset_path
from engine.models.base import ChatMessage
from engine.plan import Node, Plan
from engine.plan.templates import draft_node, placeholder_outputs, render_instruction

PROMPTS_DIR = asset_path("prompts")
#: Upstream outputs are cut to this many characters so a deep plan still fits the context.
MAX_UPSTREAM_CHARS = 2000


@functools.cache
def load_prompt(name: str) -> str:
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


@functools.cache
def load_json_asset(name: str) -> Any:
    """A JSON file of ``assets/prompts/`` (worked examples), read once."""
    return json.loads((PROMPTS_DIR / name).read_text(encoding="utf-8"))


def fill(name: str, **values: str) -> str:
    return Template(load_prompt(name)).safe_substitute(**values).strip()


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
) -> list[ChatMessage]:
    """The messages a node is run with: its instruction plus what it depends on.

    A leaf sees its dependencies' outputs; a parent also sees its children's outputs and is asked
    to combine them. With the ``completion`` prompt format (base models) the prompt is the
    rendered instruction alone. ``outputs`` maps node id to the output of every finished node. The
    instruction is rendered as a template first (dependency outputs clipped as in the context);
    a broken template raises ``TemplateProblem``. ``nodes`` (``plan.nodes()``) may be passed by
    a caller that renders many nodes, to avoid rebuilding it for each. ``deadline`` (a run's
    time-cap deadline, ``time.monotonic()`` seconds) bounds the rendering besides its own limit.
    """
    nodes = nodes if nodes is not None else plan.nodes()
    if plan.generation_for(node).prompt_format == "completion":
        # A base model continues text: it gets the instruction alone, no chat framing; a
        # dependency's output reaches it only through ``{{ deps.ID }}`` in the instruction.
        clipped = {dep: _clip(outputs[dep]) for dep in node.depends_on if dep in outputs}
        text = render_instruction(plan, node, clipped, deadline=deadline)
        return [{"role": "user", "content": text.strip() or node.title}]
    deps = [(nodes[dep].title, outputs.get(dep, "")) for dep in node.depends_on]
    context = f"\nResults of earlier steps:\n{_sections(deps)}\n" if deps else ""
    clipped = {dep: _clip(outputs[dep]) for dep in node.depends_on if dep in outputs}
    instruction = render_instruction(plan, node, clipped, deadline=deadline)
    values = {
        "task": plan.task.strip(),
        "title": node.title,
        "instruction": instruction.strip() or node.title,
        "context": context,
    }
    if node.children:
        children = [(child.title, outputs.get(child.id, "")) for child in node.children]
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
) -> list[ChatMessage]:
    """The exact messages ``node_id`` will be run with, before the run.

    Dependencies' and children's outputs appear as placeholders (``<output of s1: Title>``);
    ``instruction`` and ``depends_on`` preview a draft instead of the node's current values.
    Raises ``TemplateProblem`` if the instruction's template cannot be rendered.
    """
    node = draft_node(plan, node_id, instruction, depends_on)
    return node_messages(plan, node, placeholder_outputs(plan, node))
