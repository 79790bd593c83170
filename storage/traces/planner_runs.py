"""Planner actions (decompose, expand, re-plan, rate, alternatives) recorded as runs.

A planner action is one ``runs`` row whose ``kind`` names the action (``schema.RUN_KINDS``),
one ``node_executions`` row for what it worked on (``planner`` for a whole task, else the node
it split), so the spans view and the Inspector's node detail read it like any run, and one
``model_calls`` row per planner call or candidate plan: ``role`` says what the call was for
(``candidate``, ``attempt``, ``rate``, ``planner``...), ``score`` is a candidate's total,
``selected`` marks the chosen one and ``detail`` holds the candidate's source, per-criterion
scores, problem and notes as JSON.

This module receives plain data (``PlannerCall``, ``PlannerRunData``); turning the planner's
own results into it is the service layer's job (``app.services.planning``), since storage
does not know the planner. Calls are never cache keys: a planner call is not replayed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.errors import TraceStoreError
from storage.otlp_hook import export_when_configured
from storage.traces.rows import RECORDED_RUN_COLUMNS, redacted
from storage.traces.schema import PLANNER_KINDS
from storage.traces.store import TraceStore

#: ``node_executions.node_id`` of a planner run that worked on the whole task.
PLANNER_NODE = "planner"


@dataclass(frozen=True)
class PlannerCall:
    """One planner call, or one candidate plan made without a call (``made_by_call`` False)."""

    role: str
    output: str = ""
    #: The chat messages sent, as ``[{"role", "content"}]``; None when not known.
    messages: Sequence[dict[str, str]] | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    started_at: datetime | None = None
    seed: int | None = None
    cost_usd: float = 0.0
    status: str = "ok"
    error: str | None = None
    score: float | None = None
    selected: bool | None = None
    #: JSON-able: a candidate's source, scores, problem, notes; an attempt's number.
    detail: dict[str, Any] | None = None
    made_by_call: bool = True


@dataclass(frozen=True)
class PlannerRunData:
    """What one planner action produced, as the trace store keeps it."""

    #: completed | fallback | needs_detail | failed
    status: str
    calls: Sequence[PlannerCall] = ()
    #: The chosen plan's outline ("1. ...") or the action's summary.
    answer: str | None = None
    plan_json: str | None = None
    notes: Sequence[str] = ()
    #: Why the action did not give a plan (fallback reason, clarification, error).
    stop_reason: str | None = None
    #: The node the action worked on (expand, re-plan); None for the whole task.
    node_id: str | None = None
    #: What the node row is titled, e.g. "decompose (pattern: sequence, en)".
    title: str | None = None


#: The columns each row below fills, in order.
NODE_COLUMNS = (
    "run_id", "node_id", "title", "model", "status", "output", "error", "input_tokens",
    "output_tokens", "started_at", "finished_at", "cost_usd", "strategy", "samples", "note",
)  # fmt: skip
CALL_COLUMNS = (
    "call_id", "run_id", "node_id", "model", "prompt", "output", "input_tokens", "output_tokens",
    "latency_s", "status", "error", "started_at", "finished_at", "sample_index", "seed",
    "cost_usd", "finish_reason", "role", "score", "selected", "detail",
)  # fmt: skip


def new_planner_run_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def record_planner_run(
    store: TraceStore,
    kind: str,
    task: str,
    model_label: str | None,
    data: PlannerRunData,
    started_at: datetime,
    finished_at: datetime,
    session_id: str | None = None,
    *,
    run_id: str | None = None,
) -> str:
    """Write one planner action in one transaction and return its run id.

    Calls without ``started_at`` are laid end to end from ``started_at`` by their latency.
    Raises ``TraceStoreError`` for an unknown ``kind`` or when the store cannot be written.
    """
    if kind not in PLANNER_KINDS:
        raise TraceStoreError(f"{kind!r} is not a planner run kind ({', '.join(PLANNER_KINDS)}).")
    run_id = run_id or new_planner_run_id(kind)
    started_at, finished_at = _as_utc(started_at), _as_utc(finished_at)
    input_tokens = sum(c.input_tokens for c in data.calls)
    output_tokens = sum(c.output_tokens for c in data.calls)
    cost = sum(c.cost_usd for c in data.calls)
    node_id = data.node_id or PLANNER_NODE
    notes = "; ".join(data.notes) or None
    call_rows: list[list[Any]] = []
    cursor = started_at
    for index, call in enumerate(data.calls):
        begin = _as_utc(call.started_at) if call.started_at is not None else cursor
        end = begin + timedelta(seconds=max(0.0, call.latency_s))
        cursor = max(cursor, end)
        call_rows.append(
            [
                f"{run_id}/{index}",
                run_id,
                node_id,
                redacted(call.model or model_label),
                json.dumps(list(call.messages)) if call.messages is not None else None,
                call.output,
                call.input_tokens,
                call.output_tokens,
                call.latency_s,
                call.status,
                redacted(call.error),
                begin,
                end,
                index,
                call.seed,
                call.cost_usd,
                call.finish_reason,
                call.role,
                call.score,
                call.selected,
                json.dumps(call.detail, default=str) if call.detail is not None else None,
            ]
        )
    node_status = "done" if data.status == "completed" else "failed"
    run_row = [
        run_id, session_id, task, data.status, redacted(data.stop_reason), data.answer,
        input_tokens, output_tokens, started_at, finished_at, redacted(data.plan_json), cost,
        kind,
    ]  # fmt: skip
    node_row = [
        run_id, node_id, data.title or kind, redacted(model_label), node_status, data.answer,
        redacted(data.stop_reason) if node_status == "failed" else None, input_tokens,
        output_tokens, started_at, finished_at, cost, f"planner: {kind}",
        sum(1 for c in data.calls if c.role == "candidate") or None, notes,
    ]  # fmt: skip
    store.insert_whole(
        kind,
        [
            ("runs", RECORDED_RUN_COLUMNS, [run_row]),
            ("node_executions", NODE_COLUMNS, [node_row]),
            ("model_calls", CALL_COLUMNS, call_rows),
        ],
    )
    export_when_configured(store, run_id)  # live OTLP export, when configured
    return run_id


def planner_calls(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    """A planner run's calls and candidates in order, ``detail`` parsed from JSON."""
    rows = store._rows(
        "SELECT call_id, node_id, role, sample_index, model, status, prompt, output,"
        " input_tokens, output_tokens, latency_s, finish_reason, score, selected, detail"
        " FROM model_calls WHERE run_id = ? ORDER BY sample_index",
        [run_id],
    )
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return rows


__all__ = [
    "PLANNER_NODE",
    "PlannerCall",
    "PlannerRunData",
    "new_planner_run_id",
    "planner_calls",
    "record_planner_run",
]
