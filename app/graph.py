"""The plan as a Graphviz DOT graph: tree edges solid, dependency edges dashed, nodes by status."""

from __future__ import annotations

import json

from engine.plan import Plan

STATUS_COLOURS = {
    "pending": "#e8eaed",
    "running": "#fde68a",
    "done": "#bbf7d0",
    "failed": "#fecaca",
    "blocked": "#fed7aa",
    "skipped": "#e5e7eb",
}


def _label(text: str, limit: int = 38) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    """A DOT string literal; ``\\n`` inside ``text`` stays a DOT line break."""
    return '"' + text.replace('"', '\\"') + '"'


def plan_to_dot(
    plan: Plan, status: dict[str, str] | None = None, selected: str | None = None
) -> str:
    """DOT source for ``plan``. ``status`` maps node ids to run states for colouring."""
    status = status or {}
    lines = [
        "digraph plan {",
        '  graph [rankdir=LR, nodesep=0.25, ranksep=0.6, fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [color="#6b7280"];',
    ]
    for node, parent in plan.iter_nodes():
        state = status.get(node.id, "pending")
        label = f"{node.id}: {_label(node.title)}".replace("\\", "/")
        if state != "pending":
            label += f"\\n[{state}]"
        pen = ', penwidth=2.5, color="#2563eb"' if node.id == selected else ""
        lines.append(
            f"  {json.dumps(node.id)} [label={_quote(label)}, "
            f'fillcolor="{STATUS_COLOURS.get(state, "#e8eaed")}"{pen}];'
        )
        if parent is not None:
            lines.append(f"  {json.dumps(parent.id)} -> {json.dumps(node.id)};")
        for dep in node.depends_on:
            lines.append(
                f"  {json.dumps(dep)} -> {json.dumps(node.id)} "
                '[style=dashed, color="#2563eb", constraint=false];'
            )
    lines.append("}")
    return "\n".join(lines)
