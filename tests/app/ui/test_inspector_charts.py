"""The Inspector's chart builders, on tables shaped like ``storage.trace_queries`` returns.

The frames are written by hand here because what is under test is how a table becomes a
chart (lanes, ordering, running spans, encodings), not the queries
(tests/storage/test_trace_queries.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from app.ui.inspector_charts import (
    LABEL_CHARS,
    TREND_MEASURES,
    default_cost_measure,
    node_cost_chart,
    timeline_chart,
    timeline_frame,
    trends_chart,
    trends_frame,
)


def _span(kind: str, node: str, lane: str, start: float, end: float | None, **fields) -> dict:
    return {
        "span_kind": kind,
        "span_id": f"{kind}-{node}-{start}",
        "parent_span_id": None,
        "node_id": node,
        "call_id": None,
        "name": kind,
        "lane": lane,
        "role": "node" if kind == "node" else "answer",
        "sample_index": None if kind == "node" else 0,
        "model": "m",
        "status": fields.pop("status", "done" if kind == "node" else "ok"),
        "start_s": start,
        "end_s": end,
        "duration_s": None if end is None else end - start,
        "input_tokens": 5,
        "output_tokens": 3,
        "cost_usd": 0.001,
        "start_time": None,
        "end_time": None,
        **fields,
    }


SPANS = pd.DataFrame(
    [
        _span("node", "s1", "Combine", 0.0, 1.0),
        _span("call", "s1", "Combine", 0.1, 0.9),
        _span("node", "s2", "Combine", 1.0, 2.0, status="failed"),
        _span("call", "s2", "Combine", 1.1, 1.5, status="error"),
        _span("node", "s3", "Slow", 0.5, None, status="running"),
    ]
)


def test_nodes_sharing_a_title_get_their_own_lanes_and_running_spans_reach_the_latest_time():
    frame = timeline_frame(SPANS)
    assert frame["lane_label"].drop_duplicates().tolist() == [
        "s1 · Combine",
        "s2 · Combine",
        "s3 · Slow",
    ]
    running = frame[frame["node_id"] == "s3"].iloc[0]
    assert running["end_s"] == 2.0 and running["duration_s"] == 1.5


def test_the_gantt_outlines_nodes_fills_calls_and_gives_each_lane_a_fixed_step():
    spec = timeline_chart(SPANS, "cost").to_dict()
    outline, bars = spec["layer"]
    assert outline["mark"]["filled"] is False
    assert outline["encoding"]["stroke"]["condition"]["test"] == "datum.status === 'failed'"
    assert bars["encoding"]["color"] == {
        "field": "cost_usd",
        "scale": {"scheme": "orangered"},
        "title": "cost ($)",
        "type": "quantitative",
    }
    assert bars["encoding"]["y"]["sort"] == {"field": "lane_order", "op": "min"}
    assert spec["height"] == {"step": 26}  # the chart grows by 26 px per lane
    with pytest.raises(ValueError, match="colour_by must be one of"):
        timeline_chart(SPANS, "price")  # type: ignore[arg-type]


def test_an_empty_timeline_still_draws():
    spec = timeline_chart(SPANS.iloc[0:0]).to_dict()
    assert len(spec["layer"]) == 2 and spec["datasets"] == {next(iter(spec["datasets"])): []}


def test_node_costs_are_ranked_by_cost_then_tokens():
    costs = pd.DataFrame(
        {
            "node_id": ["a", "b", "c"],
            "title": ["A", "B", "C"],
            "model": ["m", "m", "m"],
            "status": ["done", "done", "failed"],
            "calls": [1, 3, 1],
            "tokens": [10, 90, 50],
            "cost_usd": [0.0, 0.0, 0.0],
            "latency_s": [0.1, 0.2, 0.3],
        }
    )
    chart = node_cost_chart(costs, "tokens")
    ranked = chart.data.sort_values("rank")["node_id"].tolist()
    assert ranked == ["b", "c", "a"]
    assert chart.to_dict()["encoding"]["x"]["field"] == "tokens"
    costs.loc[0, "cost_usd"] = 0.5
    assert node_cost_chart(costs).data.sort_values("rank")["node_id"].tolist()[0] == "a"
    with pytest.raises(ValueError, match="measure must be"):
        node_cost_chart(costs, "latency")  # type: ignore[arg-type]


def test_trends_become_one_panel_per_measure():
    trends = pd.DataFrame(
        {
            "run_number": [1, 2],
            "run_id": ["r1", "r2"],
            "started_at": [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)],
            "status": ["completed", "failed"],
            "tokens": [100, 120],
            "cost_usd": [0.0, 0.0],
            "duration_s": [1.5, 2.5],
            "nodes_failed": [0, 1],
        }
    )
    long = trends_frame(trends)
    assert len(long) == 8 and set(long["measure"]) == {
        "tokens",
        "cost ($)",
        "duration (s)",
        "failed nodes",
    }
    assert long[long["field"] == "nodes_failed"]["value"].tolist() == [0.0, 1.0]
    assert long["started"].iloc[0] == "2026-01-01 00:00:00"
    spec = trends_chart(trends).to_dict()
    panels = [panel for row in spec["vconcat"] for panel in row["hconcat"]]
    assert [panel["title"] for panel in panels] == list(TREND_MEASURES.values())


def _axis_and_scale(spec: dict, title: str) -> tuple[dict, dict]:
    panels = [panel for row in spec["vconcat"] for panel in row["hconcat"]]
    [panel] = [p for p in panels if p["title"] == title]
    y = panel["layer"][0]["encoding"]["y"]
    return y["axis"], y.get("scale", {})


def test_trend_axes_count_in_whole_numbers_and_never_draw_a_degenerate_zero_axis():
    """Issue 19.7: the failed-nodes axis read "0.000000" when no run failed."""
    trends = pd.DataFrame(
        {
            "run_number": [1, 2, 3],
            "run_id": ["r1", "r2", "r3"],
            "started_at": [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)],
            "status": ["completed"] * 3,
            "tokens": [1200, 900, 1500],
            "cost_usd": [0.0, 0.0, 0.0],
            "duration_s": [1.25, 2.5, 0.75],
            "nodes_failed": [0, 0, 0],
        }
    )
    spec = trends_chart(trends).to_dict()
    axis, scale = _axis_and_scale(spec, "failed nodes")
    assert axis["format"] == "d" and axis["tickMinStep"] == 1
    assert scale["domain"] == [0, 1.0]  # all zeros still span 0..1, in whole steps
    axis, scale = _axis_and_scale(spec, "tokens")
    assert axis["format"] == ",d" and scale["domain"] == [0, 1500.0]
    axis, scale = _axis_and_scale(spec, "cost ($)")
    assert axis["format"].startswith("$") and scale["domain"] == [0, 1]
    axis, _ = _axis_and_scale(spec, "duration (s)")
    assert axis["format"] == ".2~f"


def test_the_cost_view_defaults_to_tokens_when_a_run_cost_nothing():
    free = pd.DataFrame({"node_id": ["a"], "tokens": [10], "cost_usd": [0.0]})
    assert default_cost_measure(free) == "tokens"
    assert default_cost_measure(free.assign(cost_usd=[None])) == "tokens"
    assert default_cost_measure(free.assign(cost_usd=[0.002])) == "cost_usd"
    assert default_cost_measure(free.iloc[0:0]) == "tokens"


def test_bar_labels_lead_with_the_node_id_so_long_twin_titles_stay_apart():
    """Issue 19.7: "Why we use this product? (2)" and "(3)" lost their tell-tale ends."""
    title = "Why we use this product, explained at length for the reader"
    costs = pd.DataFrame(
        {
            "node_id": ["s2", "s3"],
            "title": [f"{title} (2)", f"{title} (3)"],
            "model": ["m", "m"],
            "status": ["done", "done"],
            "calls": [1, 1],
            "tokens": [10, 20],
            "cost_usd": [0.0, 0.0],
            "latency_s": [0.1, 0.2],
        }
    )
    chart = node_cost_chart(costs, "tokens")
    labels = chart.data.set_index("node_id")["label"]
    assert labels["s3"].startswith("s3 · Why we use") and labels["s3"].endswith("…")
    assert labels["s2"] != labels["s3"] and len(labels["s3"]) <= LABEL_CHARS + 5
    assert chart.data.set_index("node_id").loc["s3", "title"] == f"{title} (3)"
    tooltip = [t["field"] for t in chart.to_dict()["encoding"]["tooltip"]]
    assert tooltip[:2] == ["node_id", "title"]
