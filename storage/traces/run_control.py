"""Run control in exports: pinned nodes marked on their spans (``arbor.pinned``).

``node_executions.pinned`` (migration 10) says a node's output was the analyst's pinned or
edited text; ``.arbor`` files carry the column with the rows. An OTLP export marks the node's
span with ``arbor.pinned = true`` (``otlp_pins``), so a tracing backend shows which outputs were
held fixed rather than produced by a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.traces.store import TraceStore

PINNED_ATTRIBUTE = "arbor.pinned"


def pinned_nodes(store: TraceStore, run_id: str) -> set[str]:
    """The nodes of ``run_id`` whose output was pinned (or edited) by the analyst."""
    return {row["node_id"] for row in store.node_executions(run_id) if row.get("pinned")}


def otlp_pins(
    store: TraceStore,
    run_id: str,
    span_rows: Sequence[dict[str, Any]],
    spans: list[dict[str, Any]],
) -> None:
    """Add ``arbor.pinned = true`` to the spans of the run's pinned nodes (in place);
    ``span_rows`` are the ``spans`` view's rows, ``spans`` the OTLP spans built from them."""
    pinned = pinned_nodes(store, run_id)
    if not pinned:
        return
    for row, span in zip(span_rows, spans, strict=True):
        if row.get("span_kind") == "node" and row.get("node_id") in pinned:
            span["attributes"].append({"key": PINNED_ATTRIBUTE, "value": {"boolValue": True}})


def close_paused(store: TraceStore, run_id: str) -> bool:
    """End a paused run nobody will continue: status ``cancelled``. False if it is not paused."""
    with store.connect() as con:
        row = con.execute(
            "UPDATE runs SET status = 'cancelled', stop_reason = ?, paused_node = NULL"
            " WHERE run_id = ? AND status = 'paused' RETURNING run_id",
            ["cancelled by the user while paused", run_id],
        ).fetchone()
    return row is not None


__all__ = ["PINNED_ATTRIBUTE", "close_paused", "otlp_pins", "pinned_nodes"]
