"""The Inspector's tables and output diff, on frames shaped like ``TraceQueries.runs``."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from app.ui.inspector_tables import (
    RUN_COLUMNS,
    human_columns,
    runs_frame,
    with_tags,
)
from storage.trace_queries import output_diff
from storage.traces.labels import RunLabel

STARTED = datetime(2026, 12, 5, 23, 30, 5, 123456, tzinfo=UTC)


def _runs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["run-2", "run-1"],
            "task": ["Plan a\nlaunch", None],
            "status": ["failed", "completed"],
            "stop_reason": ["node c failed: " + "endpoint said no " * 20, None],
            "started_at": [STARTED, STARTED],
            "duration_s": [12.3456, None],
            "nodes": [4, 1],
            "nodes_failed": [1, 0],
            "nodes_suspect": [0, 0],
            "calls": [6, 1],
            "input_tokens": [100, None],
            "output_tokens": [50, 7],
            "cost_usd": [0.0, None],
            "models": ["a, b", None],
            "origin": [None, "colleague.arbor"],
        }
    )


def test_runs_frame_puts_key_facts_first_in_local_time_without_none():
    labels = {"run-2": RunLabel("Baseline", ("baseline", "v2"))}
    frame = runs_frame(_runs(), labels)
    assert list(frame.columns) == RUN_COLUMNS
    first = frame.iloc[0]
    assert first["Name"] == "Baseline" and first["Tags"] == "baseline, v2"
    assert first["Started"] == STARTED.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert first["Duration (s)"] == 12.35 and first["Tokens"] == 150 and first["Calls"] == 6
    assert first["Task"] == "Plan a launch"  # one line
    second = frame.iloc[1]
    assert second["Name"] == "" and second["Task"] == "" and second["Models"] == ""
    assert second["Tokens"] == 7 and second["Source"] == "imported (read-only): colleague.arbor"
    text = frame.select_dtypes(include="object").to_numpy().ravel().tolist()
    assert not any(cell in ("None", "nan") or "+00:00" in cell for cell in text)


def test_with_tags_keeps_runs_having_every_chosen_tag():
    runs = _runs()
    labels = {"run-2": RunLabel("", ("a", "b")), "run-1": RunLabel("", ("a",))}
    assert with_tags(runs, labels, [])["run_id"].tolist() == ["run-2", "run-1"]
    assert with_tags(runs, labels, ["a"])["run_id"].tolist() == ["run-2", "run-1"]
    assert with_tags(runs, labels, ["a", "b"])["run_id"].tolist() == ["run-2"]
    assert with_tags(runs, {}, ["a"]).empty


def test_output_diff_keeps_one_line_per_line_when_the_last_line_has_no_end():
    """Issue 19.7: "-old+new" came out fused on one line."""
    diff = output_diff("same\nold", "same\nnew\nmore", names=("A", "B"))
    lines = diff.splitlines()
    assert lines[:2] == ["--- A", "+++ B"]
    assert "-old" in lines and "+new" in lines and "+more" in lines
    assert all(not (line.startswith("-") and "+" in line[1:]) for line in lines[2:])
    assert output_diff("same", "same") == ""
    assert output_diff(None, "x").splitlines()[-1] == "+x"


def test_human_columns_rename_order_and_blank_missing_text():
    frame = pd.DataFrame({"extra_field": [None], "tokens": [3], "node_id": ["a"]})
    out = human_columns(frame, {"node_id": "Node", "tokens": "Tokens"})
    assert list(out.columns) == ["Node", "Tokens", "Extra field"]
    assert out.iloc[0]["Extra field"] == ""
