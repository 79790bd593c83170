"""Playground sessions recorded as runs of kind ``playground``.

One ``runs`` row per "run variants" (``kind = 'playground'``, so run lists that show plan
executions leave it out), one ``node_executions`` row per variant (``node_id`` is
``NODE@vK``: ``@`` cannot occur in a plan's node ids) and one ``model_calls`` row per call a
variant made, with its tokens, latency and cost. ``detail`` of each call says which variant it
belongs to, the variant's settings, and the run and node the playground started from, so the
Inspector and SQL read a playground like any run. Calls keep their cache key: a later plan run
whose node renders the same prompt with the same settings may reuse a playground call.

This module receives plain data (``PlaygroundVariantRow``); turning the engine's results into
it is ``app.services.playground``'s job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.traces.rows import RECORDED_RUN_COLUMNS, redacted
from storage.traces.store import TraceStore

#: ``runs.kind`` of a playground run.
PLAYGROUND_KIND = "playground"


@dataclass(frozen=True)
class PlaygroundCallRow:
    call_id: str
    role: str
    sample_index: int
    model: str
    messages: Sequence[dict[str, str]]
    output: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime
    seed: int | None = None
    cache_key: str | None = None
    cost_usd: float = 0.0
    finish_reason: str | None = None
    score: float | None = None
    vote: str | None = None
    selected: bool | None = None


@dataclass(frozen=True)
class PlaygroundVariantRow:
    """One variant as the store keeps it."""

    index: int
    title: str
    model: str
    status: str  # done | failed | cancelled
    output: str
    error: str | None
    started_at: datetime
    finished_at: datetime
    strategy: str
    settings: dict[str, Any]
    suspect: str | None = None
    calls: Sequence[PlaygroundCallRow] = field(default_factory=tuple)


#: The columns each row below fills, in order.
NODE_COLUMNS = (
    "run_id", "node_id", "title", "model", "status", "output", "error", "input_tokens",
    "output_tokens", "started_at", "finished_at", "cost_usd", "strategy", "samples", "note",
    "suspect",
)  # fmt: skip
CALL_COLUMNS = (
    "call_id", "run_id", "node_id", "model", "prompt", "output", "input_tokens", "output_tokens",
    "latency_s", "status", "error", "started_at", "finished_at", "sample_index", "seed",
    "cache_key", "cost_usd", "finish_reason", "role", "score", "vote", "selected", "detail",
)  # fmt: skip


def variant_node_id(node_id: str, index: int) -> str:
    """The ``node_executions.node_id`` of variant ``index`` (0-based) of ``node_id``."""
    return f"{node_id}@v{index + 1}"


def new_playground_run_id() -> str:
    return f"playground-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def record_playground_run(
    store: TraceStore,
    *,
    source_run_id: str,
    node_id: str,
    task: str,
    variants: Sequence[PlaygroundVariantRow],
    started_at: datetime,
    finished_at: datetime,
    session_id: str | None = None,
    plan_json: str | None = None,
    run_id: str | None = None,
) -> str:
    """Write one playground run in one transaction and return its id.

    Raises ``TraceStoreError`` when the store cannot be written.
    """
    run_id = run_id or new_playground_run_id()
    calls = [call for variant in variants for call in variant.calls]
    input_tokens = sum(call.input_tokens for call in calls)
    output_tokens = sum(call.output_tokens for call in calls)
    cost = sum(call.cost_usd for call in calls)
    statuses = {variant.status for variant in variants}
    status = (
        "completed"
        if statuses == {"done"}
        else "cancelled"
        if "cancelled" in statuses
        else "failed"
    )
    failed = [v for v in variants if v.status != "done"]
    stop_reason = "; ".join(f"variant {v.index + 1}: {v.error or v.status}" for v in failed) or None
    answers = [f"variant {v.index + 1}: {v.output}" for v in variants if v.status == "done"]
    node_rows: list[list[Any]] = []
    call_rows: list[list[Any]] = []
    for variant in variants:
        vid = variant_node_id(node_id, variant.index)
        node_rows.append(
            [
                run_id,
                vid,
                variant.title,
                redacted(variant.model),
                variant.status,
                variant.output,
                redacted(variant.error),
                sum(c.input_tokens for c in variant.calls),
                sum(c.output_tokens for c in variant.calls),
                variant.started_at,
                variant.finished_at,
                sum(c.cost_usd for c in variant.calls),
                variant.strategy,
                len(variant.calls) or None,
                f"playground of node {node_id} from run {source_run_id}",
                variant.suspect,
            ]
        )
        detail = {
            "playground": {
                "variant": variant.index + 1,
                "source_run": source_run_id,
                "node": node_id,
                "settings": variant.settings,
            }
        }
        for call in variant.calls:
            call_rows.append(
                [
                    call.call_id,
                    run_id,
                    vid,
                    redacted(call.model),
                    json.dumps(list(call.messages), ensure_ascii=False),
                    call.output,
                    call.input_tokens,
                    call.output_tokens,
                    call.latency_s,
                    call.status,
                    redacted(call.error),
                    call.started_at,
                    call.finished_at,
                    call.sample_index,
                    call.seed,
                    call.cache_key,
                    call.cost_usd,
                    call.finish_reason,
                    call.role,
                    call.score,
                    call.vote,
                    call.selected,
                    json.dumps(detail, default=str),
                ]
            )
    run_row = [
        run_id, session_id, task, status, redacted(stop_reason), "\n\n".join(answers) or None,
        input_tokens, output_tokens, started_at, finished_at, redacted(plan_json), cost,
        PLAYGROUND_KIND,
    ]  # fmt: skip
    store.insert_whole(
        "playground run",
        [
            ("runs", RECORDED_RUN_COLUMNS, [run_row]),
            ("node_executions", NODE_COLUMNS, node_rows),
            ("model_calls", CALL_COLUMNS, call_rows),
        ],
    )
    return run_id


__all__ = [
    "PLAYGROUND_KIND",
    "PlaygroundCallRow",
    "PlaygroundVariantRow",
    "new_playground_run_id",
    "record_playground_run",
    "variant_node_id",
]
