"""Annotations: an analyst's label on a run, a node's output or one model call.

A row of ``annotations`` (migration 11 in ``schema``) says *good* or *bad*, optionally with a
score in ``SCORE_RANGE``, a note and the output that would have been right
(``corrected_output``, what "Add to dataset" turns into an example's expected answer). A run may
carry any number of them; nothing is overwritten, so a second opinion is a second row and a
mistaken one is deleted by its id.

Annotations are rows of the trace store like the rest of a run: readable in the SQL console,
carried in ``.arbor`` files (``storage.bundles``), written into OTLP exports
(``otlp_annotations``: attributes ``arbor.annotation.*`` and one ``arbor.annotation`` event per
row on the node's or call's span) and listed beside each node in run comparisons
(``with_labels``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:  # pandas is imported by the one function that needs it (it costs 0.2 s)
    import pandas as pd

from engine.errors import TraceStoreError

LABELS = ("good", "bad")
#: Scores an annotation may carry: a fraction, like the selectors' and judges' scores.
SCORE_RANGE = (0.0, 1.0)
COLUMNS = (
    "annotation_id",
    "run_id",
    "node_id",
    "call_id",
    "label",
    "score",
    "note",
    "corrected_output",
    "created_at",
)

CREATE_SQL = """
CREATE TABLE annotations (
    annotation_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    node_id VARCHAR,                  -- NULL: the whole run (its answer)
    call_id VARCHAR,                  -- NULL: the node's output, not one call
    label VARCHAR NOT NULL,           -- good | bad
    score DOUBLE,                     -- optional, 0..1
    note VARCHAR,
    corrected_output VARCHAR,         -- what the output should have been
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX annotations_run ON annotations (run_id);
"""


def check_annotation(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    node_id: str | None,
    call_id: str | None,
    label: str,
    score: float | None,
) -> str | None:
    """Raise ``TraceStoreError`` (one line) for an unknown run, node or call, a label that is
    not good or bad, or a score out of range; returns the node id (a call's own when only the
    call was named)."""
    if label not in LABELS:
        raise TraceStoreError(f"The label must be good or bad, not {label!r}.")
    low, high = SCORE_RANGE
    if score is not None and not (low <= score <= high):  # also refuses NaN
        raise TraceStoreError(f"The score must be between {low:g} and {high:g}, not {score!r}.")
    if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
        raise TraceStoreError(f"No run {run_id!r} in the trace store; `run.py runs` lists them.")
    if call_id is not None:
        row = con.execute(
            "SELECT node_id FROM model_calls WHERE run_id = ? AND call_id = ?", [run_id, call_id]
        ).fetchone()
        if row is None:
            raise TraceStoreError(f"Run {run_id!r} has no model call {call_id!r}.")
        if node_id is not None and row[0] != node_id:
            raise TraceStoreError(
                f"Call {call_id!r} belongs to node {row[0]!r}, not to {node_id!r}."
            )
        node_id = row[0]
    if node_id is not None:
        found = con.execute(
            "SELECT 1 FROM node_executions WHERE run_id = ? AND node_id = ?", [run_id, node_id]
        ).fetchone()
        if found is None:
            known = [
                r[0]
                for r in con.execute(
                    "SELECT node_id FROM node_executions WHERE run_id = ? ORDER BY node_id",
                    [run_id],
                ).fetchall()
            ]
            raise TraceStoreError(
                f"Run {run_id!r} has no node {node_id!r} (its nodes: {', '.join(known) or 'none'})."
            )
    return node_id


def insert_annotation(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    node_id: str | None,
    *,
    label: str,
    call_id: str | None = None,
    score: float | None = None,
    note: str | None = None,
    corrected_output: str | None = None,
) -> dict[str, Any]:
    """Check and add one annotation; returns its row."""
    node_id = check_annotation(con, run_id, node_id, call_id, label, score)
    row = {
        "annotation_id": uuid.uuid4().hex[:12],
        "run_id": run_id,
        "node_id": node_id,
        "call_id": call_id,
        "label": label,
        "score": None if score is None else float(score),
        "note": (note or "").strip() or None,
        "corrected_output": corrected_output if corrected_output else None,
        "created_at": datetime.now(UTC),
    }
    con.execute(
        f"INSERT INTO annotations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [row[column] for column in COLUMNS],
    )
    return row


def select_annotations(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """The run's annotations, oldest first."""
    cursor = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM annotations WHERE run_id = ?"
        " ORDER BY created_at, annotation_id",
        [run_id],
    )
    return [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def badge(labels: Sequence[str]) -> str:
    """A short summary of labels for a graph or a table: "good", "bad ×2", "bad ×2 · good"."""
    counts = Counter(labels)
    parts = []
    for label in ("bad", "good"):  # bad first: it is what an analyst looks for
        if counts[label]:
            parts.append(label if counts[label] == 1 else f"{label} ×{counts[label]}")
    return " · ".join(parts)


def node_badges(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per node id, the badge of every annotation on it or on one of its calls."""
    by_node: dict[str, list[str]] = {}
    for row in rows:
        if row.get("node_id"):
            by_node.setdefault(row["node_id"], []).append(row["label"])
    return {node_id: badge(labels) for node_id, labels in by_node.items()}


# -- run comparisons -------------------------------------------------------------------------
#: Every annotation label of two runs, per run and node (``TraceQueries.compare``).
LABELS_OF_RUNS_SQL = (
    "SELECT run_id, node_id, label FROM annotations"
    " WHERE run_id IN ($1, $2) AND node_id IS NOT NULL ORDER BY created_at"
)


def with_labels(nodes: pd.DataFrame, labels: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """The compare rows with ``annotations_a`` and ``annotations_b``: each node's badge in
    each run ("" when it has none)."""
    import pandas as pd

    nodes = nodes.copy()
    for suffix, run_id in (("a", run_a), ("b", run_b)):
        mine = labels[labels["run_id"] == run_id] if not labels.empty else labels
        badges = node_badges(mine.to_dict("records")) if not mine.empty else {}
        column = nodes["node_id"] if "node_id" in nodes else pd.Series(dtype=object)
        nodes[f"annotations_{suffix}"] = [badges.get(node_id, "") for node_id in column]
    return nodes


# -- OTLP ------------------------------------------------------------------------------------
def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _attributes(row: dict[str, Any]) -> list[dict[str, Any]]:
    pairs = [("label", row["label"]), ("score", row["score"]), ("note", row["note"])]
    pairs.append(("corrected_output", row["corrected_output"]))
    pairs.append(("id", row["annotation_id"]))
    return [
        {"key": f"arbor.annotation.{name}", "value": _value(value)}
        for name, value in pairs
        if value is not None
    ]


def otlp_annotations(
    annotations: Sequence[dict[str, Any]],
    span_rows: Sequence[dict[str, Any]],
    spans: list[dict[str, Any]],
) -> None:
    """Put each annotation on its span in an OTLP/JSON export (in place).

    ``span_rows`` are the ``spans`` view's rows and ``spans`` the OTLP spans built from them,
    in the same order. An annotation of a call goes on the call's span, one of a node on the
    node's span, one of the whole run on the run's span: one ``arbor.annotation`` event per
    annotation (timed when it was made) with its label, score, note and correction, and the
    newest annotation's values as the span's own ``arbor.annotation.*`` attributes, so a
    backend that only filters on attributes finds the verdict.
    """
    if not annotations:
        return
    index: dict[tuple[str, str | None], int] = {}
    for position, row in enumerate(span_rows):
        kind = row.get("span_kind")
        if kind == "call" and row.get("call_id"):
            index[("call", row["call_id"])] = position
        elif kind == "node" and row.get("node_id"):
            index[("node", row["node_id"])] = position
        elif kind == "run":
            index[("run", None)] = position
    newest: dict[int, dict[str, Any]] = {}
    for annotation in annotations:
        if annotation.get("call_id"):
            key: tuple[str, str | None] = ("call", annotation["call_id"])
        elif annotation.get("node_id"):
            key = ("node", annotation["node_id"])
        else:
            key = ("run", None)
        found = index.get(key)
        if found is None:
            continue
        position = found
        created = annotation["created_at"]
        event = {
            "name": "arbor.annotation",
            "timeUnixNano": str(int(created.timestamp() * 1e9)) if created else "0",
            "attributes": _attributes(annotation),
        }
        spans[position].setdefault("events", []).append(event)
        newest[position] = annotation  # rows come oldest first
    for position, annotation in newest.items():
        spans[position]["attributes"].extend(_attributes(annotation))


__all__ = [
    "COLUMNS",
    "CREATE_SQL",
    "LABELS",
    "LABELS_OF_RUNS_SQL",
    "SCORE_RANGE",
    "badge",
    "check_annotation",
    "insert_annotation",
    "node_badges",
    "otlp_annotations",
    "select_annotations",
    "with_labels",
]
