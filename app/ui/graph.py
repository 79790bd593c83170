"""The plan drawn as a layered node-link chart (Altair), clickable to select a node.

Layers come from networkx: a node's layer is its distance from the root in the tree, so depth
runs left to right; within a layer nodes follow the tree's depth-first order, leaves take one
row each and a parent sits at the middle of its children, so no two nodes share a place and
subtrees stay together. Tree edges are solid grey lines; dependency edges ("uses the output
of") are dashed blue arcs that bow to the left (labels sit on the right), so an edge between
two nodes of one layer does not run over the nodes between them. Nodes are coloured by run
status or by difficulty; a finished node whose output failed the output check is "suspect",
with the reason in its tooltip. With a run's figures, nodes are sized by tokens, cost or
seconds, and marks (pinned, paused, annotated) are written under the label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import altair as alt
import networkx as nx
import pandas as pd

from engine.plan import Plan

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
    #: Stopped at a breakpoint: waiting for the analyst.
    "paused": "#38bdf8",
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


#: What node size can show once a run has figures.
SizeBy = Literal["none", "tokens", "cost", "seconds"]
#: How far (in layers) a dependency arc bows to the left of its two ends.
ARC_BOW = 0.35


def tree_graph(plan: Plan) -> nx.DiGraph:
    """The plan's tree as a directed graph, parent -> child, children in plan order."""
    graph = nx.DiGraph()
    for node, parent in plan.iter_nodes():
        graph.add_node(node.id)
        if parent is not None:
            graph.add_edge(parent.id, node.id)
    return graph


def tree_layout(plan: Plan) -> dict[str, tuple[float, float]]:
    """``node id -> (layer, row)``: the layer is the distance from the root; rows grow
    downwards, one per leaf in depth-first order, a parent centred on its children."""
    graph = tree_graph(plan)
    layers = nx.single_source_shortest_path_length(graph, plan.root.id)
    rows: dict[str, float] = {}
    next_row = 0.0
    # Post-order: every child has its row before its parent is centred on them.
    for node_id in nx.dfs_postorder_nodes(graph, plan.root.id):
        children = list(graph.successors(node_id))
        if children:
            rows[node_id] = (rows[children[0]] + rows[children[-1]]) / 2
        else:
            rows[node_id] = next_row
            next_row += 1
    return {node_id: (float(layers[node_id]), rows[node_id]) for node_id in graph}


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def plan_frames(
    plan: Plan,
    status: Mapping[str, str] | None = None,
    suspect: Mapping[str, str] | None = None,
    *,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    marks: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Node rows and edge rows (points of each edge in ``order``, grouped by ``edge``).

    ``suspect`` maps a node to why its output is suspect; a done node there shows "suspect".
    ``metrics`` maps a node to its run figures (``tokens``, ``cost``, ``seconds``); ``marks``
    to short words drawn under its label ("pinned", "pause before", "bad").
    """
    status = status or {}
    suspect = suspect or {}
    metrics = metrics or {}
    marks = marks or {}
    positions = tree_layout(plan)
    nodes = []
    for node, _ in plan.iter_nodes():
        layer, row = positions[node.id]
        node_status = status.get(node.id, "pending")
        if node_status == "done" and suspect.get(node.id):
            node_status = "suspect"
        figures = metrics.get(node.id, {})
        nodes.append(
            {
                "id": node.id,
                "x": layer,
                "y": row,
                "label": f"{node.id}: {_short(node.title)}",
                "title": node.title,
                "status": node_status,
                "suspect": suspect.get(node.id, ""),
                "difficulty": str(node.difficulty) if node.difficulty else "unrated",
                "reason": node.difficulty_reason or "",
                "model": node.model.label if node.model else "plan default",
                "tokens": float(figures.get("tokens", 0.0)),
                "cost": float(figures.get("cost", 0.0)),
                "seconds": float(figures.get("seconds", 0.0)),
                "marks": " · ".join(marks.get(node.id, ())),
            }
        )
    edges = []
    for node, parent in plan.iter_nodes():
        if parent is not None:
            edge = f"{parent.id}->{node.id}:subtask of"
            for order, end in enumerate((parent.id, node.id)):
                x, y = positions[end]
                edges.append({"edge": edge, "kind": "subtask of", "order": order, "x": x, "y": y})
        for dep in node.depends_on:
            edge = f"{dep}->{node.id}:uses output of"
            (x0, y0), (x1, y1) = positions[dep], positions[node.id]
            # Through a point bowed to the left (labels sit on the right): a smooth arc, not a
            # line over the nodes between its ends.
            middle = (min(x0, x1) - ARC_BOW, (y0 + y1) / 2)
            for order, (x, y) in enumerate(((x0, y0), middle, (x1, y1))):
                edges.append(
                    {"edge": edge, "kind": "uses output of", "order": order, "x": x, "y": y}
                )
    columns = ["edge", "kind", "order", "x", "y"]
    return pd.DataFrame(nodes), pd.DataFrame(edges, columns=columns)


#: Node area in square pixels: the default, and the range a size encoding spans.
NODE_AREA = 360
NODE_AREA_RANGE = (120, 900)
SIZE_FIELDS = {"tokens": "tokens", "cost": "cost", "seconds": "seconds"}
#: Height kept for the legends above the plot (edge kinds, two rows of statuses, node size).
LEGEND_PX = 120


def chart_size(plan: Plan) -> tuple[int, int]:
    """Natural (width, height) in pixels: a column per layer, a row per leaf."""
    positions = tree_layout(plan)
    layers = max(x for x, _ in positions.values()) + 1
    rows = max(y for _, y in positions.values()) + 1
    # Streamlit fits the legends (drawn on top) into the chart's height, so they get room of
    # their own: without it a small plan's rows were squeezed into a few pixels.
    return max(420, int(layers * COLUMN_PX)), max(160, int(rows * ROW_PX)) + LEGEND_PX


def plan_chart(
    plan: Plan,
    status: Mapping[str, str] | None = None,
    *,
    colour_by: Literal["status", "difficulty"] = "status",
    selected: str | None = None,
    suspect: Mapping[str, str] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    marks: Mapping[str, Sequence[str]] | None = None,
    size_by: SizeBy = "none",
) -> alt.LayerChart:
    """The clickable chart; a click selects a node through the ``node_pick`` parameter."""
    nodes, edges = plan_frames(plan, status, suspect, metrics=metrics, marks=marks)
    layers = int(nodes["x"].max())
    rows = float(nodes["y"].max()) + 1
    x_scale = alt.Scale(domain=[-0.2 - ARC_BOW, layers + 1.1], nice=False)
    y_scale = alt.Scale(domain=[-0.7, rows - 0.3], nice=False, reverse=True)
    axis_free = {"axis": None}
    x = alt.X("x:Q", scale=x_scale, **axis_free)
    y = alt.Y("y:Q", scale=y_scale, **axis_free)

    edge_layer = (
        alt.Chart(edges)
        .mark_line(strokeWidth=1.6, interpolate="basis")
        .encode(
            x=x,
            y=y,
            order="order:Q",
            detail="edge:N",
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(
                    domain=["subtask of", "uses output of"], range=["#94a3b8", "#2563eb"]
                ),
                legend=alt.Legend(title="edge", orient="top"),
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
            legend=alt.Legend(title="difficulty", orient="top", columns=6),
        )
    else:
        colour = alt.Color(
            "status:N",
            scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
            legend=alt.Legend(title="status", orient="top", columns=4),
        )
    field = SIZE_FIELDS.get(size_by)
    if field is not None and nodes[field].max() > 0:
        size: alt.Size | alt.SizeValue = alt.Size(
            f"{field}:Q",
            scale=alt.Scale(range=list(NODE_AREA_RANGE), zero=True),
            legend=alt.Legend(title=size_by, orient="top"),
        )
    else:
        size = alt.value(NODE_AREA)
    pick = alt.selection_point(name=SELECTION, fields=["id"], on="click", empty=False)
    tooltip = ["id", "title", "status", "suspect", "difficulty", "reason", "model"]
    if metrics:
        tooltip += [
            alt.Tooltip("tokens:Q", format=",.0f"),
            alt.Tooltip("cost:Q", format="$,.4f"),
            alt.Tooltip("seconds:Q", format=",.1f"),
        ]
    if marks:
        tooltip.append("marks")
    node_layer = (
        alt.Chart(nodes)
        .mark_point(filled=True, shape="circle", stroke="#1e293b")
        .encode(
            x=x,
            y=y,
            color=colour,
            size=size,
            strokeWidth=alt.condition(
                alt.datum.id == (selected or ""), alt.value(3.5), alt.value(0.6)
            ),
            tooltip=tooltip,
        )
        .add_params(pick)
    )
    label_layer = (
        alt.Chart(nodes)
        .mark_text(align="left", dx=14, fontSize=12)
        .encode(
            x=x,
            y=y,
            text="label:N",
            tooltip=tooltip,
        )
    )
    layers_drawn = [edge_layer, node_layer, label_layer]
    if marks:
        layers_drawn.append(
            alt.Chart(nodes)
            .mark_text(align="left", dx=14, dy=12, fontSize=10, color="#7c3aed")
            .encode(x=x, y=y, text="marks:N")
        )
    width, height = chart_size(plan)
    return (
        alt.layer(*layers_drawn)
        # Edges and nodes have their own colour scales and legends ("done" grey is not "subtask
        # of" grey).
        .resolve_scale(color="independent")
        .properties(height=height, width=width)
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
