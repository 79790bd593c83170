"""The Inspector's tables as people read them, and its output diff: plain functions from the
frames ``storage.trace_queries`` returns, with no Streamlit in them, so tests can check what a
table would show without running a page.

Key facts first (name, status, start, duration, calls, tokens, cost, nodes), human column
names, empty cells instead of "None", times in the server's local zone without "+00:00"
(``app.ui.tables.local_time``: the UI listens on localhost, so the server's zone is the
analyst's), long text (task, error) last where it may wrap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from app.ui.tables import local_time
from storage.traces.labels import RunLabel

IMPORTED = "imported (read-only)"

#: The runs table's columns, in order (the long ones last: they wrap).
RUN_COLUMNS = [
    "Name",
    "Status",
    "Started",
    "Duration (s)",
    "Calls",
    "Tokens",
    "Cost ($)",
    "Nodes",
    "Failed",
    "Suspect",
    "Tags",
    "Models",
    "Source",
    "Run id",
    "Task",
    "Stop reason",
]
#: Columns whose text may be long: given room and wrapped.
RUN_LONG_TEXT = ("Task", "Stop reason")


def _text(value: Any) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value)


def _is_imported(origin: Any) -> bool:
    return _text(origin) != ""


def runs_frame(runs: pd.DataFrame, labels: Mapping[str, RunLabel]) -> pd.DataFrame:
    """``TraceQueries.runs`` as the Inspector's runs table (``RUN_COLUMNS``), one row a run in
    the same order, with each run's name and tags from ``labels``."""
    empty = RunLabel()
    ids = runs["run_id"].astype(str).tolist()
    tokens = runs["input_tokens"].fillna(0) + runs["output_tokens"].fillna(0)
    frame = pd.DataFrame(
        {
            "Name": [labels.get(run_id, empty).name for run_id in ids],
            "Status": runs["status"].map(_text),
            "Started": [local_time(pd.Timestamp(t).to_pydatetime()) for t in runs["started_at"]],
            "Duration (s)": pd.to_numeric(runs["duration_s"], errors="coerce").round(2),
            "Calls": runs["calls"].fillna(0).astype("int64"),
            "Tokens": tokens.astype("int64"),
            "Cost ($)": pd.to_numeric(runs["cost_usd"], errors="coerce"),
            "Nodes": runs["nodes"].fillna(0).astype("int64"),
            "Failed": runs["nodes_failed"].fillna(0).astype("int64"),
            "Suspect": runs["nodes_suspect"].fillna(0).astype("int64"),
            "Tags": [", ".join(labels.get(run_id, empty).tags) for run_id in ids],
            "Models": runs["models"].map(_text),
            "Source": [
                f"{IMPORTED}: {origin}" if _is_imported(origin) else "recorded here"
                for origin in runs["origin"]
            ],
            "Run id": ids,
            "Task": runs["task"].map(lambda t: " ".join(_text(t).split())),
            "Stop reason": runs["stop_reason"].map(_text),
        }
    )
    return frame[RUN_COLUMNS].reset_index(drop=True)


def with_tags(
    runs: pd.DataFrame, labels: Mapping[str, RunLabel], tags: Sequence[str]
) -> pd.DataFrame:
    """The runs that carry every one of ``tags`` (all runs when none are asked for)."""
    if not tags:
        return runs
    wanted = set(tags)
    keep = [run_id in labels and wanted <= set(labels[run_id].tags) for run_id in runs["run_id"]]
    return runs[keep]


#: The per-node cost table's human column names, in order.
NODE_COST_COLUMNS = {
    "node_id": "Node",
    "title": "Title",
    "status": "Status",
    "tokens": "Tokens",
    "cost_usd": "Cost ($)",
    "calls": "Calls",
    "latency_s": "Latency (s)",
    "call_latency_s": "Call latency (s)",
    "model": "Model",
    "strategy": "Strategy",
    "samples": "Samples",
    "agreement": "Agreement",
}


#: The node's model-call table: what each call was and cost first.
CALL_COLUMNS = {
    "role": "Role",
    "sample_index": "Sample index",
    "status": "Status",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "latency_s": "Latency (s)",
    "cost_usd": "Cost ($)",
    "model": "Model",
}


def human_columns(frame: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with the ``names`` columns first, renamed, then the others (their names made
    readable: "input_tokens" -> "Input tokens"); text cells empty instead of None."""
    first = [column for column in names if column in frame.columns]
    rest = [column for column in frame.columns if column not in names]
    out = frame[first + rest].rename(
        columns={
            **{c: names[c] for c in first},
            **{c: c.replace("_", " ").capitalize() for c in rest},
        }
    )
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(
                lambda v: "" if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)) else v
            )
    return out
