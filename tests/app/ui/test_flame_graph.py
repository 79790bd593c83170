"""The flame graph's data shaping on a real recorded run of the bundled model: a plan whose
one node samples three times (self-consistency), so the run nests run → node → sample → call
and run → node → call."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from app.ui.flame_graph import FLAME_COLUMNS, flame_chart, flame_frame
from engine.plan import GenerationConfig, Node, Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from storage.run_spans import flame_spans
from storage.workspace import Workspace

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def spans(tmp_path_factory, bundled_path) -> pd.DataFrame:
    workspace = Workspace(tmp_path_factory.mktemp("flame") / "data")
    plan = Plan(
        task="Name a colour.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Answer in one word.",
            children=[
                Node(
                    id="pick",
                    title="Pick",
                    instruction="Name one colour.",
                    strategy=strategy_from_spec("sc3"),
                )
            ],
        ),
        default_generation=GenerationConfig(temperature=0.7, max_tokens=6, seed=3),
    )
    result = workspace.run_plan(plan, RunCaps(total_tokens=4000, max_parallel=1))
    return flame_spans(workspace.traces, result.run_id)


def _bars(frame: pd.DataFrame, kind: str, node: str | None = None) -> pd.DataFrame:
    chosen = frame[frame["span_kind"] == kind]
    return chosen if node is None else chosen[chosen["node_id"] == node]


def test_nesting_depths_follow_run_node_sample_call(spans: pd.DataFrame) -> None:
    frame = flame_frame(spans)
    assert list(frame.columns) == FLAME_COLUMNS
    assert len(frame) == len(spans)
    assert _bars(frame, "run")["depth"].tolist() == [0]
    assert set(_bars(frame, "node")["depth"]) == {1}
    samples = _bars(frame, "sample", "pick")
    assert len(samples) == 3 and set(samples["depth"]) == {2}
    # the sampling node's calls hang under samples; the single-call node's under the node
    assert set(_bars(frame, "call", "pick")["depth"]) == {3}
    assert set(_bars(frame, "call", "root")["depth"]) == {2}
    by_id = frame.set_index("span_id")
    for bar in frame[frame["parent_span_id"].notna()].itertuples():
        assert by_id.loc[bar.parent_span_id, "depth"] == bar.depth - 1


def test_time_bars_sit_inside_their_parents_and_match_recorded_seconds(spans) -> None:
    frame = flame_frame(spans, "time")
    by_id = frame.set_index("span_id")
    run = _bars(frame, "run").iloc[0]
    assert run["x0"] == pytest.approx(0.0, abs=1e-6)
    for bar in frame[frame["parent_span_id"].notna()].itertuples():
        parent = by_id.loc[bar.parent_span_id]
        assert parent["x0"] - 1e-3 <= bar.x0 <= bar.x1 <= parent["x1"] + 1e-3, bar.name
    recorded = spans.set_index("span_id")
    for bar in frame.itertuples():
        seconds = recorded.loc[bar.span_id, "end_s"] - recorded.loc[bar.span_id, "start_s"]
        assert bar.seconds == pytest.approx(seconds)
        assert bar.x1 - bar.x0 == pytest.approx(seconds)
    # whatever overlapped (a node's samples may run together) got rows of its own
    for _, lane in frame.groupby("row"):
        ordered = lane.sort_values("x0")
        starts, ends = ordered["x0"].to_numpy()[1:], ordered["x1"].to_numpy()[:-1]
        assert (starts >= ends - 1e-9).all()


def test_overlapping_spans_of_one_depth_are_stacked(spans: pd.DataFrame) -> None:
    """Two nodes running at the same time (as with max_parallel > 1) take two rows."""
    nodes = spans[spans["span_kind"] == "node"]
    first = nodes.iloc[0]
    twin: dict[str, Any] = first.to_dict()
    twin.update(span_id="twin", node_id="twin", title="Twin", name="invoke_agent Twin")
    twin["start_s"] = first["start_s"] + (first["end_s"] - first["start_s"]) / 2
    twin["end_s"] = first["end_s"] + 1.0
    frame = flame_frame(pd.concat([spans, pd.DataFrame([twin])], ignore_index=True))
    node_rows = _bars(frame, "node").set_index("node_id")["row"]
    assert node_rows["twin"] != node_rows[first["node_id"]]
    assert "nodes (2)" in set(frame["row_label"])
    for _, lane in frame.groupby("row"):
        ordered = lane.sort_values("x0")
        starts, ends = ordered["x0"].to_numpy()[1:], ordered["x1"].to_numpy()[:-1]
        assert (starts >= ends - 1e-9).all()


def test_token_sizing_shares_each_parents_width_by_tokens(spans: pd.DataFrame) -> None:
    frame = flame_frame(spans, "tokens")
    run = _bars(frame, "run").iloc[0]
    nodes = _bars(frame, "node")
    assert run["x1"] - run["x0"] == pytest.approx(nodes["tokens"].sum())
    widths = nodes["x1"] - nodes["x0"]
    assert widths.to_numpy() == pytest.approx(nodes["tokens"].to_numpy())
    pick = _bars(frame, "node", "pick").iloc[0]
    samples = _bars(frame, "sample", "pick")
    assert (samples["x1"] - samples["x0"]).sum() == pytest.approx(pick["x1"] - pick["x0"])
    assert samples["x0"].min() == pytest.approx(pick["x0"])
    assert frame.groupby("depth")["row"].nunique().max() == 1, "no overlap, no stacking"


def test_badges_mark_nodes_and_the_chart_carries_tooltips(spans: pd.DataFrame) -> None:
    frame = flame_frame(spans, badges={"pick": "bad ×2"})
    assert _bars(frame, "node", "pick")["annotation"].tolist() == ["bad ×2"]
    assert _bars(frame, "node", "root")["annotation"].tolist() == [""]
    assert set(_bars(frame, "call")["annotation"]) == {""}
    spec = flame_chart(frame).to_dict()
    tooltips = {t["field"] for t in spec["layer"][0]["encoding"]["tooltip"]}
    assert {"node_id", "model", "tokens", "seconds", "cost_usd", "annotation"} <= tooltips
    assert flame_frame(spans.iloc[0:0]).empty
