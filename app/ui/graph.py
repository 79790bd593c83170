"""The plan drawn as a node-link chart (Altair), clickable to select a node.

A tidy tree layout: depth runs left to right, leaves are stacked top to bottom and a parent sits
at the middle of its children. Tree edges are solid grey; dependency edges ("uses the output
of") are dashed blue. Nodes are coloured by run status or by difficulty; a finished node whose
output failed the output check is coloured "suspect", with the reason in its tooltip.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
import pandas as pd

from engine.plan import Node, Plan

STATUS_COLOURS = {
    "pending": "#cbd5e1",
    "running": "#facc15",
    "done": "#22c55e",
    "failed": "#ef4444",
    "blocked": "#fb923c",
    "skipped": "#94a3b8",
    #: Finished, but its output failed the output check (an echo, a loop, cut off): the reason
    #: is in the tooltip.
    "suspect": "#a855f7",
}
DIFFICULTY_COLOURS = {
    "1": "#bbf7d0",
    "2": "#86efac",
    "3": "#fde047",
    "4": "#fb923c",
    "5": "#ef4444",
    "unrated": "#e2e8f0",
}
SELECTION = "node_pick"
ROW_PX = 30
COLUMN_PX = 260
LABEL_CHARS = 30


def tree_layout(plan: Plan) -> dict[str, tuple[float, float]]:
    """``node id -> (depth, row)``; rows grow downwards, a parent centred on its children."""
    positions: dict[str, tuple[float, float]] = {}
    next_row = 0.0

    def place(node: Node, depth: int) -> float:
        nonlocal next_row
        if not node.children:
            row = next_row
            next_row += 1
        else:
            rows = [place(child, depth + 1) for child in node.children]
            row = (rows[0] + rows[-1]) / 2
        positions[node.id] = (float(depth), row)
        return row

    place(plan.root, 0)
    return positions


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def plan_frames(
    plan: Plan, status: dict[str, str] | None = None, suspect: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Node rows and edge rows (two rows per edge, grouped by ``edge``) for the chart.

    ``suspect`` maps a node to why its output is suspect; a done node there shows "suspect".
    """
    status = status or {}
    suspect = suspect or {}
    positions = tree_layout(plan)
    nodes = []
    for node, _ in plan.iter_nodes():
        depth, row = positions[node.id]
        node_status = status.get(node.id, "pending")
        if node_status == "done" and suspect.get(node.id):
            node_status = "suspect"
        nodes.append(
            {
                "id": node.id,
                "x": depth,
                "y": row,
                "label": f"{node.id}: {_short(node.title)}",
                "title": node.title,
                "status": node_status,
                "suspect": suspect.get(node.id, ""),
                "difficulty": str(node.difficulty) if node.difficulty else "unrated",
                "reason": node.difficulty_reason or "",
                "model": node.model.label if node.model else "plan default",
            }
        )
    edges = []
    for node, parent in plan.iter_nodes():
        links = [(parent.id, "subtask of")] if parent is not None else []
        links += [(dep, "uses output of") for dep in node.depends_on]
        for source, kind in links:
            edge = f"{source}->{node.id}:{kind}"
            for end in (source, node.id):
                x, y = positions[end]
                edges.append({"edge": edge, "kind": kind, "x": x, "y": y})
    return pd.DataFrame(nodes), pd.DataFrame(edges, columns=["edge", "kind", "x", "y"])


def plan_chart(
    plan: Plan,
    status: dict[str, str] | None = None,
    *,
    colour_by: Literal["status", "difficulty"] = "status",
    selected: str | None = None,
    suspect: dict[str, str] | None = None,
) -> alt.LayerChart:
    """The clickable chart; a click selects a node through the ``node_pick`` parameter."""
    nodes, edges = plan_frames(plan, status, suspect)
    depth = int(nodes["x"].max())
    rows = float(nodes["y"].max()) + 1
    x_scale = alt.Scale(domain=[-0.2, depth + 1.1], nice=False)
    y_scale = alt.Scale(domain=[-0.7, rows - 0.3], nice=False, reverse=True)
    axis_free = {"axis": None}

    edge_layer = (
        alt.Chart(edges)
        .mark_line(strokeWidth=1.6)
        .encode(
            x=alt.X("x:Q", scale=x_scale, **axis_free),
            y=alt.Y("y:Q", scale=y_scale, **axis_free),
            detail="edge:N",
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(
                    domain=["subtask of", "uses output of"], range=["#94a3b8", "#2563eb"]
                ),
                legend=alt.Legend(title="edge", orient="bottom"),
            ),
            strokeDash=alt.StrokeDash(
                "kind:N",
                scale=alt.Scale(domain=["subtask of", "uses output of"], range=[[1, 0], [5, 4]]),
                legend=None,
            ),
        )
    )
    if colour_by == "difficulty":
        colour = alt.Color(
            "difficulty:N",
            scale=alt.Scale(
                domain=list(DIFFICULTY_COLOURS), range=list(DIFFICULTY_COLOURS.values())
            ),
            legend=alt.Legend(title="difficulty", orient="bottom"),
        )
    else:
        colour = alt.Color(
            "status:N",
            scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
            legend=alt.Legend(title="status", orient="bottom"),
        )
    pick = alt.selection_point(name=SELECTION, fields=["id"], on="click", empty=False)
    node_layer = (
        alt.Chart(nodes)
        .mark_point(filled=True, size=360, shape="circle", stroke="#1e293b")
        .encode(
            x=alt.X("x:Q", scale=x_scale, **axis_free),
            y=alt.Y("y:Q", scale=y_scale, **axis_free),
            color=colour,
            strokeWidth=alt.condition(
                alt.datum.id == (selected or ""), alt.value(3.5), alt.value(0.6)
            ),
            tooltip=["id", "title", "status", "suspect", "difficulty", "reason", "model"],
        )
        .add_params(pick)
    )
    label_layer = (
        alt.Chart(nodes)
        .mark_text(align="left", dx=13, fontSize=12)
        .encode(
            x=alt.X("x:Q", scale=x_scale, **axis_free),
            y=alt.Y("y:Q", scale=y_scale, **axis_free),
            text="label:N",
        )
    )
    return (
        alt.layer(edge_layer, node_layer, label_layer)
        # Edges and nodes have their own colour scales and legends ("done" grey is not "subtask
        # of" grey).
        .resolve_scale(color="independent")
        .properties(height=max(160, int(rows * ROW_PX)), width=max(420, (depth + 1) * COLUMN_PX))
        .configure_view(stroke=None)
    )


def picked_node(chart_state: object) -> str | None:
    """The node id a click selected, from ``st.altair_chart``'s selection state."""
    try:
        points = chart_state["selection"][SELECTION]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    if isinstance(points, list) and points and isinstance(points[0], dict):
        return points[0].get("id")
    return None
