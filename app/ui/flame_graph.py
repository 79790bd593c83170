"""A run's flame graph: run → node → sample → call, nested, drawn with Altair.

``flame_frame`` shapes the spans (``storage.run_spans.flame_spans``) into bars and is pure, so
tests read exactly what would be drawn; ``flame_chart`` draws them; ``render_flame_graph`` is
the Streamlit part (a size toggle and the chart).

Two ways to size a bar:

- **time** (the default): x is seconds from the run's start, so a bar is as wide as the span
  lasted. Spans of one depth that overlap in time (parallel nodes, concurrent samples) are
  stacked on extra rows of that depth instead of being drawn over each other.
- **tokens** or **cost**: the classic flame graph. The run takes the whole width; each span's
  children share its width in proportion to their tokens (or cost), in the order they started,
  so nothing overlaps and every depth is one row. Children without any tokens or cost share
  their parent's width equally, so a cached (free) node is still visible.

Depth is the nesting: the run 0, nodes 1, samples 2, a call 2 under a node that made single
calls and 3 under a sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import altair as alt
import pandas as pd
import streamlit as st

from app.services.annotations import annotation_badges
from storage.run_spans import flame_spans

SizeBy = Literal["time", "tokens", "cost"]
SIZE_BY: tuple[SizeBy, ...] = ("time", "tokens", "cost")
KIND_COLOURS = {"run": "#5f6b7a", "node": "#4c78a8", "sample": "#2f8f89", "call": "#e07b12"}
ANNOTATION_STROKES = {"bad": "#d62728", "good": "#2ca02c"}
ROW_HEIGHT_PX = 28
#: The width labels are cut for (Streamlit stretches the chart; about this wide on a laptop).
CHART_WIDTH_PX = 900
CHAR_PX = 7
FLAME_COLUMNS = [
    "span_id",
    "parent_span_id",
    "span_kind",
    "depth",
    "row",
    "row_label",
    "x0",
    "x1",
    "name",
    "node_id",
    "title",
    "model",
    "status",
    "tokens",
    "seconds",
    "cost_usd",
    "annotation",
    "label",
]


def _depths(spans: pd.DataFrame) -> dict[str, int]:
    """Per span id, how deep it nests: 0 for a span without a known parent (the run)."""
    parents = dict(zip(spans["span_id"], spans["parent_span_id"], strict=True))
    depths: dict[str, int] = {}

    def depth(span_id: str, seen: frozenset[str]) -> int:
        if span_id not in depths:
            parent = parents.get(span_id)
            if isinstance(parent, str) and parent in parents and parent not in seen:
                depths[span_id] = depth(parent, seen | {span_id}) + 1
            else:
                depths[span_id] = 0
        return depths[span_id]

    for span_id in spans["span_id"]:
        depth(span_id, frozenset())
    return depths


def _stack_rows(frame: pd.DataFrame) -> pd.Series:
    """Per bar, its lane inside its depth: the first lane free at its start (greedy interval
    colouring, so overlapping bars never share a lane)."""
    lanes = pd.Series(0, index=frame.index)
    for _, group in frame.groupby("depth"):
        ends: list[float] = []
        for index, bar in group.sort_values(["x0", "x1"]).iterrows():
            lane = next((i for i, end in enumerate(ends) if end <= bar["x0"] + 1e-9), None)
            if lane is None:
                ends.append(bar["x1"])
                lane = len(ends) - 1
            else:
                ends[lane] = bar["x1"]
            lanes[index] = lane
    return lanes


def _proportional(frame: pd.DataFrame, measure: pd.Series) -> tuple[pd.Series, pd.Series]:
    """x0, x1 when each span's children share its width by ``measure`` (see the module)."""
    x0 = pd.Series(0.0, index=frame.index)
    x1 = pd.Series(0.0, index=frame.index)
    children: dict[Any, list[Any]] = {}
    by_id = {span_id: index for index, span_id in frame["span_id"].items()}
    roots = []
    for index, bar in frame.sort_values(["x0", "depth"]).iterrows():
        parent = bar["parent_span_id"]
        if isinstance(parent, str) and parent in by_id:
            children.setdefault(by_id[parent], []).append(index)
        else:
            roots.append(index)
    total = float(measure[roots].sum()) or float(len(roots))

    def place(indices: list[Any], start: float, width: float) -> None:
        weights = measure[indices].astype(float)
        if weights.sum() <= 0:
            weights = pd.Series(1.0, index=indices)
        cursor = start
        for index in indices:
            share = width * float(weights[index]) / float(weights.sum())
            x0[index], x1[index] = cursor, cursor + share
            cursor += share
            if index in children:
                place(children[index], x0[index], share)

    place(roots, 0.0, total)
    return x0, x1


def flame_frame(
    spans: pd.DataFrame,
    size_by: SizeBy = "time",
    badges: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The bars of the flame graph (``FLAME_COLUMNS``), one per span, ordered by row then x.

    ``badges``: annotation badges by node id (``app.services.annotations.annotation_badges``),
    shown in node bars' tooltips and as their outline colour (red when any label is bad).
    """
    if spans.empty:
        return pd.DataFrame(columns=FLAME_COLUMNS)
    frame = spans.reset_index(drop=True).copy()
    depths = _depths(frame)
    frame["depth"] = frame["span_id"].map(depths).astype(int)
    frame["tokens"] = (frame["input_tokens"].fillna(0) + frame["output_tokens"].fillna(0)).astype(
        int
    )
    frame["cost_usd"] = frame["cost_usd"].fillna(0.0).astype(float)
    start = frame["start_s"].astype(float).fillna(0.0)
    end = frame["end_s"].astype(float).fillna(start)
    frame["seconds"] = (end - start).clip(lower=0.0)
    frame["x0"], frame["x1"] = start, end.where(end > start, start)
    if size_by == "time":
        frame["lane"] = _stack_rows(frame)
    else:
        measure = frame["tokens"] if size_by == "tokens" else frame["cost_usd"]
        frame["x0"], frame["x1"] = _proportional(frame, measure)
        frame["lane"] = 0
    # rows: depth by depth, each depth's lanes in turn (row 0 at the top: the run)
    keys = sorted(set(zip(frame["depth"], frame["lane"], strict=True)))
    row_of = {key: position for position, key in enumerate(keys)}
    frame["row"] = [row_of[k] for k in zip(frame["depth"], frame["lane"], strict=True)]
    names = {0: "run", 1: "nodes", 2: "samples / calls", 3: "calls"}
    frame["row_label"] = [
        names.get(depth, f"depth {depth}") + (f" ({lane + 1})" if lane else "")
        for depth, lane in zip(frame["depth"], frame["lane"], strict=True)
    ]
    badges = badges or {}
    frame["annotation"] = [
        badges.get(node, "") if kind == "node" and isinstance(node, str) else ""
        for kind, node in zip(frame["span_kind"], frame["node_id"], strict=True)
    ]
    frame["title"] = frame["title"].where(frame["title"].notna(), frame["node_id"])
    frame["label"] = _labels(frame)
    return frame.sort_values(["row", "x0"]).reset_index(drop=True)[FLAME_COLUMNS]


def _labels(frame: pd.DataFrame) -> list[str]:
    """The text drawn inside each bar, cut to what fits at ``CHART_WIDTH_PX`` (the tooltip has
    the whole name)."""
    extent = float(frame["x1"].max() - frame["x0"].min()) or 1.0
    labels = []
    for bar in frame.itertuples():
        if bar.span_kind == "node":
            text = f"{bar.node_id} · {bar.title}" if bar.title != bar.node_id else str(bar.node_id)
        elif bar.span_kind == "run":
            text = f"run · {bar.title or ''}"
        else:
            text = str(bar.name)
        fits = int((bar.x1 - bar.x0) / extent * CHART_WIDTH_PX / CHAR_PX) - 1
        labels.append("" if fits < 3 else (text if len(text) <= fits else text[: fits - 1] + "…"))
    return labels


def flame_chart(frame: pd.DataFrame, size_by: SizeBy = "time") -> alt.LayerChart:
    """Bars by row and x, coloured by span kind, outlined by annotation; labels inside."""
    axis_title = {"time": "seconds from the run's start", "tokens": "tokens", "cost": "cost ($)"}
    data = frame.assign(
        stroke=[
            ANNOTATION_STROKES["bad"]
            if "bad" in badge
            else ANNOTATION_STROKES["good"]
            if badge
            else "white"
            for badge in frame["annotation"]
        ]
    )
    y = alt.Y(
        "row:O",
        axis=alt.Axis(title=None, labelExpr="''", ticks=False, domain=False),
        scale=alt.Scale(paddingInner=0.08),
    )
    base = alt.Chart(data).encode(
        x=alt.X("x0:Q", title=axis_title[size_by]),
        x2="x1:Q",
        y=y,
    )
    tooltip = [
        alt.Tooltip("name:N", title="span"),
        alt.Tooltip("node_id:N", title="node"),
        alt.Tooltip("title:N"),
        alt.Tooltip("model:N"),
        alt.Tooltip("status:N"),
        alt.Tooltip("tokens:Q", format=","),
        alt.Tooltip("seconds:Q", format=".2f"),
        alt.Tooltip("cost_usd:Q", title="cost ($)", format=".6f"),
        alt.Tooltip("annotation:N"),
    ]
    bars = base.mark_bar(cornerRadius=2, strokeWidth=2).encode(
        color=alt.Color(
            "span_kind:N",
            title="span",
            scale=alt.Scale(domain=list(KIND_COLOURS), range=list(KIND_COLOURS.values())),
            legend=alt.Legend(orient="top"),
        ),
        stroke=alt.Stroke("stroke:N", scale=None),
        tooltip=tooltip,
    )
    labels = base.mark_text(align="left", dx=3, color="white", fontSize=11, limit=0).encode(
        x="x0:Q", text="label:N", tooltip=tooltip
    )
    # a fixed step per row: the chart grows with the run instead of squeezing its rows
    return (bars + labels).properties(height=alt.Step(ROW_HEIGHT_PX))


def render_flame_graph(ws: Any, run_id: str) -> None:
    """The Inspector's flame graph of run ``run_id`` (a size toggle and the chart)."""
    st.markdown("**Flame graph**")
    size_by = st.radio(
        "Size bars by",
        SIZE_BY,
        key="flame_size_by",
        horizontal=True,
        help="time: x is seconds from the run's start (overlaps stacked); tokens or cost: "
        "each span's children share its width by their share.",
    )
    spans = flame_spans(ws.traces, run_id)
    if spans.empty:
        st.info("Nothing of this run has been recorded with a start time yet.")
        return
    frame = flame_frame(spans, size_by, annotation_badges(ws, run_id))
    st.altair_chart(flame_chart(frame, size_by), width="stretch", key="flame_chart")
    st.caption(
        "Rows from the top: the run, its nodes, their samples, their model calls. A red "
        "outline marks a node annotated bad, green good. Hover a bar for node, model, tokens, "
        "seconds and cost."
    )


__all__ = [
    "FLAME_COLUMNS",
    "SIZE_BY",
    "flame_chart",
    "flame_frame",
    "render_flame_graph",
]
