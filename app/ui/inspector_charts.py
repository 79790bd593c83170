"""Altair charts for the Inspector, built from the tables ``storage.trace_queries`` returns.

Plain functions from DataFrames to charts, with no Streamlit in them, so tests can read the
data and encodings a chart would draw without running a page.
"""

from __future__ import annotations

from typing import Literal

import altair as alt
import pandas as pd

ColourBy = Literal["model", "cost", "status", "role"]
COLOUR_BY: tuple[ColourBy, ...] = ("model", "cost", "status", "role")

#: One colour per status, shared by node and call statuses, so "red" means failed everywhere.
STATUS_COLOURS = {
    "ok": "#4c9a2a",
    "done": "#4c9a2a",
    "completed": "#4c9a2a",
    # finished with an answer, but some output failed the output check (an echo, a loop)
    "suspect": "#a855f7",
    "running": "#1f77b4",
    "error": "#d62728",
    "failed": "#d62728",
    "interrupted": "#ff7f0e",
    "stopped": "#ff7f0e",
    "cancelled": "#8c8c8c",
    "blocked": "#bcbd22",
    "skipped": "#c7c7c7",
}
LANE_HEIGHT_PX = 26
LABEL_CHARS = 40

_TIMELINE_COLUMNS = [
    "span_kind",
    "node_id",
    "lane",
    "lane_label",
    "title",
    "role",
    "sample_index",
    "model",
    "status",
    "start_s",
    "end_s",
    "duration_s",
    "input_tokens",
    "output_tokens",
    "cost_usd",
]


def lane_labels(spans: pd.DataFrame) -> pd.Series:
    """One label per node, its id first ("s3 · Why we use this pro…"): an axis cuts a long
    label at its end, and the id is what tells "Why we use this product? (2)" from "(3)". The
    title is shortened to ``LABEL_CHARS``; charts show the whole title in their tooltip."""
    lane = spans["lane"].fillna(spans["node_id"]).astype(str)
    node = spans["node_id"].astype(str)
    short = lane.where(lane.str.len() <= LABEL_CHARS, lane.str.slice(0, LABEL_CHARS - 1) + "…")
    return node.where(lane == node, node + " · " + short)


def timeline_frame(spans: pd.DataFrame) -> pd.DataFrame:
    """The Gantt rows: ``TraceQueries.timeline`` with unique lane labels, and spans still
    running drawn up to the latest time seen (their stored end is their start)."""
    if spans.empty:
        return pd.DataFrame(columns=_TIMELINE_COLUMNS)
    frame = spans.copy()
    frame["lane_label"] = lane_labels(frame)
    frame["title"] = frame["lane"].fillna(frame["node_id"]).astype(str)
    latest = pd.concat([frame["start_s"], frame["end_s"]]).max()
    frame["end_s"] = frame["end_s"].fillna(frame["start_s"])
    running = frame["status"].eq("running")
    frame.loc[running, "end_s"] = latest
    frame["duration_s"] = frame["end_s"] - frame["start_s"]
    for column in ("input_tokens", "output_tokens"):
        frame[column] = frame[column].fillna(0).astype("int64")
    frame["cost_usd"] = frame["cost_usd"].fillna(0.0).astype(float)
    frame["sample_index"] = frame["sample_index"].astype("Int64")
    return frame[_TIMELINE_COLUMNS]


def _colour(colour_by: ColourBy) -> alt.Color:
    if colour_by == "cost":
        return alt.Color("cost_usd:Q", title="cost ($)", scale=alt.Scale(scheme="orangered"))
    if colour_by == "status":
        return alt.Color(
            "status:N",
            title="status",
            scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
        )
    return alt.Color(f"{colour_by}:N", title=colour_by)


def timeline_chart(spans: pd.DataFrame, colour_by: ColourBy = "model") -> alt.LayerChart:
    """A Gantt chart of one run: a lane per node in order of start, the node's span as an
    outline (red when it failed) and its model calls as filled bars inside it, coloured by
    ``colour_by``. The height grows with the number of lanes so labels never overlap."""
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {', '.join(COLOUR_BY)}, not {colour_by!r}")
    frame = timeline_frame(spans)
    # Lanes in order of their first start. A sort *field*, not a list of labels: Altair
    # validates a list item by item, which cost more than the rest of the chart at 50 lanes.
    frame["lane_order"] = frame.groupby("lane_label")["start_s"].transform("min")
    y = alt.Y(
        "lane_label:N",
        sort=alt.EncodingSortField("lane_order", op="min"),
        title=None,
        axis=alt.Axis(labelLimit=320),
    )
    x = alt.X("start_s:Q", title="seconds from the start of the run")
    tooltip = [
        alt.Tooltip("node_id:N", title="node"),
        alt.Tooltip("title:N"),
        alt.Tooltip("role:N"),
        alt.Tooltip("sample_index:Q", title="sample"),
        alt.Tooltip("model:N"),
        alt.Tooltip("status:N"),
        alt.Tooltip("input_tokens:Q", title="input tokens"),
        alt.Tooltip("output_tokens:Q", title="output tokens"),
        alt.Tooltip("cost_usd:Q", title="cost ($)", format=".6f"),
        alt.Tooltip("duration_s:Q", title="latency (s)", format=".3f"),
    ]
    # One data set and one set of shared encodings for both layers: Altair and Streamlit
    # validate every encoding they are given, which is most of what drawing this chart costs.
    base = alt.Chart(frame).encode(x=x, x2="end_s:Q", y=y, tooltip=tooltip)
    nodes = (
        base.transform_filter("datum.span_kind === 'node'")
        .mark_bar(filled=False, strokeWidth=1.5, height=alt.RelativeBandSize(0.9))
        .encode(
            stroke=alt.condition(
                "datum.status === 'failed'", alt.value("#d62728"), alt.value("#7f7f7f")
            )
        )
    )
    calls = (
        base.transform_filter("datum.span_kind === 'call'")
        .mark_bar(height=alt.RelativeBandSize(0.55), cornerRadius=2)
        .encode(color=_colour(colour_by))
    )
    # A step per lane, not a height in pixels: Streamlit ignores a layered chart's fixed height
    # (seen in Chromium: the lanes collapsed into one line), but honours a step.
    return alt.layer(nodes, calls).properties(height=alt.Step(LANE_HEIGHT_PX))


CostMeasure = Literal["cost_usd", "tokens"]


def default_cost_measure(costs: pd.DataFrame) -> CostMeasure:
    """Dollars when the run cost anything, else tokens: local models are free, and bars of
    $0 for every node tell nothing."""
    if "cost_usd" not in costs or costs.empty:
        return "tokens"
    total = pd.to_numeric(costs["cost_usd"], errors="coerce").fillna(0).sum()
    return "cost_usd" if total > 0 else "tokens"


def node_cost_chart(costs: pd.DataFrame, measure: CostMeasure = "cost_usd") -> alt.Chart:
    """Tokens or dollars per node, the most expensive first (by cost, then tokens: local
    models cost nothing, so tokens break the tie), coloured by status."""
    if measure not in ("cost_usd", "tokens"):
        raise ValueError(f"measure must be 'cost_usd' or 'tokens', not {measure!r}")
    frame = costs.copy()
    frame["label"] = lane_labels(frame.assign(lane=frame["title"]))
    frame["title"] = frame["title"].fillna(frame["node_id"]).astype(str)
    frame = frame.sort_values(["cost_usd", "tokens"], ascending=False, na_position="last")
    frame["rank"] = range(len(frame))
    frame = frame[
        [
            "node_id",
            "title",
            "label",
            "rank",
            "model",
            "status",
            "calls",
            "tokens",
            "cost_usd",
            "latency_s",
        ]
    ]
    title = "cost ($)" if measure == "cost_usd" else "tokens"
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(f"{measure}:Q", title=title),
            y=alt.Y(
                "label:N",
                sort=alt.EncodingSortField("rank", op="min"),
                title=None,
                axis=alt.Axis(labelLimit=320),
            ),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
            ),
            tooltip=[
                alt.Tooltip("node_id:N", title="node"),
                alt.Tooltip("title:N"),
                alt.Tooltip("model:N"),
                alt.Tooltip("status:N"),
                alt.Tooltip("calls:Q"),
                alt.Tooltip("tokens:Q"),
                alt.Tooltip("cost_usd:Q", title="cost ($)", format=".6f"),
                alt.Tooltip("latency_s:Q", title="latency (s)", format=".3f"),
            ],
        )
        .properties(height=alt.Step(22))
    )


#: The measures the Trends view draws, with their axis titles.
TREND_MEASURES = {
    "tokens": "tokens",
    "cost_usd": "cost ($)",
    "duration_s": "duration (s)",
    "nodes_failed": "failed nodes",
}
#: Each measure's number format (d3): whole numbers for counts, dollars with the digits a
#: tiny cost needs but no trailing zeros, seconds to two places; "~" drops trailing zeros.
TREND_FORMATS = {
    "tokens": ",d",
    "cost_usd": "$.2~r",
    "duration_s": ".2~f",
    "nodes_failed": "d",
}
#: Measures that count things: their axis starts at 0, steps by whole numbers and reaches at
#: least 1 (an axis over only zeros would otherwise draw 0.000000-style ticks of nothing).
TREND_COUNTS = {"tokens", "nodes_failed"}


def trends_frame(trends: pd.DataFrame) -> pd.DataFrame:
    """``TraceQueries.trends`` in long form: one row per run and measure (titled as on the
    chart), the run's start as text for the tooltip."""
    frame = trends[["run_number", "run_id", "started_at", "status", *TREND_MEASURES]].copy()
    frame["started"] = frame["started_at"].map(
        lambda t: "" if pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    )
    long = frame.drop(columns=["started_at"]).melt(
        id_vars=["run_number", "run_id", "started", "status"],
        value_vars=list(TREND_MEASURES),
        var_name="field",
        value_name="value",
    )
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype(float)
    long["measure"] = long["field"].map(TREND_MEASURES)
    return long


def _trend_panel(long: pd.DataFrame, field: str) -> alt.LayerChart:
    data = long[long["field"] == field]
    number = TREND_FORMATS[field]
    axis = alt.Axis(format=number, title=TREND_MEASURES[field])
    scale = alt.Scale(zero=True)
    if field in TREND_COUNTS:
        axis = alt.Axis(format=number, title=TREND_MEASURES[field], tickMinStep=1)
        top = data["value"].max()
        scale = alt.Scale(domain=[0, max(1.0, 0.0 if pd.isna(top) else float(top))], nice=True)
    elif not (data["value"].fillna(0) > 0).any():
        # Nothing but zeros (a local model costs $0): a unit domain, not a degenerate one.
        scale = alt.Scale(domain=[0, 1])
    base = alt.Chart(data).encode(
        x=alt.X("run_number:Q", title="run", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("value:Q", axis=axis, scale=scale),
    )
    points = base.mark_point(filled=True, size=60).encode(
        color=alt.Color(
            "status:N",
            scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
        ),
        tooltip=[
            alt.Tooltip("run_number:Q", title="run", format="d"),
            "run_id:N",
            "started:N",
            "status:N",
            alt.Tooltip("value:Q", title=TREND_MEASURES[field], format=number),
        ],
    )
    return alt.layer(base.mark_line(color="#9e9e9e"), points).properties(
        height=160, width=320, title=TREND_MEASURES[field]
    )


def trends_chart(trends: pd.DataFrame) -> alt.VConcatChart:
    """Tokens, cost, duration and failed nodes over a scope's runs, two small panels a row,
    each with its own y axis and number format (a faceted chart shares one format, which drew
    "0.000000" on the failed-nodes axis): a line by run number and a point per run coloured by
    its status, so a failed or stopped run stands out."""
    long = trends_frame(trends)
    panels = [_trend_panel(long, field) for field in TREND_MEASURES]
    rows = [alt.hconcat(*panels[i : i + 2]) for i in range(0, len(panels), 2)]
    return alt.vconcat(*rows)
