"""Events to rows: the column orders the writers use, and ``collapse``, which turns a batch of
run events into one row per node (a node started and finished in one batch is one row) and one
per model call, sorted by how each row must reach the store (insert, keyed update or merge).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.redaction import redact
from engine.run.events import (
    Event,
    ModelCallFinished,
    NodeFinished,
    NodeStarted,
    RunContinued,
    RunEdited,
    RunFinished,
    RunPaused,
    RunStarted,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: Column order the writers use (explicit, so a later migration may add columns anywhere).
RUN_COLUMNS = (
    "run_id",
    "session_id",
    "task",
    "status",
    "started_at",
    "plan_json",
    "caps_json",
    "resumed_from",
    "pid",
    "forked_from",
    "forked_at_node",
    "stop_reason",
    "answer",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "finished_at",
)
#: The run row of a run recorded whole (a planner action, playground variants).
RECORDED_RUN_COLUMNS = (
    "run_id", "session_id", "task", "status", "stop_reason", "answer", "input_tokens",
    "output_tokens", "started_at", "finished_at", "plan_json", "cost_usd", "kind",
)  # fmt: skip
NODE_COLUMNS = (
    "run_id",
    "node_id",
    "title",
    "model",
    "status",
    "output",
    "error",
    "input_tokens",
    "output_tokens",
    "started_at",
    "finished_at",
    "reused_from",
    "cost_usd",
    "strategy",
    "samples",
    "agreement",
    "token_cap",
    "cost_cap_usd",
    "note",
    "suspect",
    "pinned",
)
CALL_COLUMNS = (
    "call_id",
    "run_id",
    "node_id",
    "model",
    "prompt",
    "output",
    "input_tokens",
    "output_tokens",
    "latency_s",
    "status",
    "error",
    "started_at",
    "finished_at",
    "sample_index",
    "seed",
    "cache_key",
    "cost_usd",
    "finish_reason",
    "role",
    "score",
    "vote",
    "selected",
    "reused_from",
)


@functools.cache
def node_arrow_schema() -> pa.Schema:
    """The Arrow schema of a ``node_executions`` row, for the writer's rare merge of rows it
    cannot place by append. Built on first use: pyarrow takes about 0.12 s to import, which
    every command that touches the trace store paid for this one path."""
    import pyarrow as pa

    timestamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("run_id", pa.string()),
            ("node_id", pa.string()),
            ("title", pa.string()),
            ("model", pa.string()),
            ("status", pa.string()),
            ("output", pa.string()),
            ("error", pa.string()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("started_at", timestamp),
            ("finished_at", timestamp),
            ("reused_from", pa.string()),
            ("cost_usd", pa.float64()),
            ("strategy", pa.string()),
            ("samples", pa.int32()),
            ("agreement", pa.float64()),
            ("token_cap", pa.int64()),
            ("cost_cap_usd", pa.float64()),
            ("note", pa.string()),
            ("suspect", pa.string()),
            ("pinned", pa.bool_()),
        ]
    )


NodeKey = tuple[str, str]  # (run_id, node_id)


@dataclass(frozen=True)
class _Started:
    title: str
    model: str | None
    started_at: datetime


@dataclass
class WriterState:
    """What a writer knows about the store, so it can insert instead of merging.

    ``inflight``: nodes started and not finished yet (their title, model, start time).
    ``written``: for each run whose ``RunStarted`` this writer wrote, the nodes that have a row
    in the store. A node of such a run without a row is new: a plain insert, the fast path.
    """

    inflight: dict[NodeKey, _Started] = field(default_factory=dict)
    written: dict[str, set[str]] = field(default_factory=dict)

    def copy(self) -> WriterState:
        """A copy to collapse a batch into; it replaces the original once the batch commits."""
        return WriterState(dict(self.inflight), {r: set(n) for r, n in self.written.items()})


@dataclass
class Rows:
    """One batch of events as rows, ready for one transaction. A node is in one dict at most."""

    runs_started: list[RunStarted] = field(default_factory=list)
    #: Nodes with no row in the store yet: inserted.
    nodes_new: dict[NodeKey, list[Any]] = field(default_factory=dict)
    #: Nodes whose row this writer wrote earlier: updated by key, every column known.
    nodes_update: dict[NodeKey, list[Any]] = field(default_factory=dict)
    #: Nodes of runs this writer did not see start: merged with whatever row the store has.
    nodes_merge: dict[NodeKey, list[Any]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    runs_finished: list[RunFinished] = field(default_factory=list)
    #: Run control: pauses, continues and edits, in order (run status and edits updates).
    run_control: list[RunPaused | RunContinued | RunEdited] = field(default_factory=list)

    @property
    def node_rows(self) -> int:
        return len(self.nodes_new) + len(self.nodes_update) + len(self.nodes_merge)

    def put_node(self, key: NodeKey, row: list[Any], state: WriterState) -> None:
        for bucket in (self.nodes_new, self.nodes_update, self.nodes_merge):
            if key in bucket:  # a second event for the node in this batch: one row
                bucket[key] = row
                return
        run_id, node_id = key
        written = state.written.get(run_id)
        if written is None:
            self.nodes_merge[key] = row
        elif node_id in written:
            self.nodes_update[key] = row
        else:
            self.nodes_new[key] = row
            written.add(node_id)


def redacted(text: str | None) -> str | None:
    """Text a run recorded, without URL credentials an older session or registry left in it."""
    return redact(text) if text else text


def _node_row(event: NodeFinished, title: str, model: str | None, started: datetime | None):
    return [
        event.run_id,
        event.node_id,
        title,
        model,
        event.status,
        event.output,
        redacted(event.error),
        event.input_tokens,
        event.output_tokens,
        started,
        event.finished_at,
        event.reused_from,
        event.cost_usd,
        event.strategy,
        event.samples,
        event.agreement,
        event.token_cap,
        event.cost_cap_usd,
        event.note,
        event.suspect,
        event.pinned,
    ]


def _call_row(event: ModelCallFinished) -> tuple[Any, ...]:
    return (
        event.call_id,
        event.run_id,
        event.node_id,
        event.model,
        event.prompt,
        event.output,
        event.input_tokens,
        event.output_tokens,
        event.latency_s,
        event.status,
        redacted(event.error),
        event.started_at,
        event.finished_at,
        event.sample_index,
        event.seed,
        event.cache_key,
        event.cost_usd,
        event.finish_reason,
        event.role,
        event.score,
        event.vote,
        event.selected,
        event.reused_from,
    )


def collapse(events: Iterable[Event], state: WriterState) -> Rows:
    """Turn a batch of events into rows; a node started and finished in it becomes one row.

    ``state`` is updated in place; a finish whose start came in an earlier batch is still
    written as one complete row (the start's title, model and time, the finish's outcome).
    """
    rows = Rows()
    for event in events:
        match event:
            case RunStarted():
                rows.runs_started.append(event)
                state.written.setdefault(event.run_id, set())
            case NodeStarted():
                key = (event.run_id, event.node_id)
                state.inflight[key] = _Started(event.title, event.model, event.started_at)
                running = [event.run_id, event.node_id, event.title, event.model, "running"]
                rows.put_node(key, [*running, None, None, 0, 0, event.started_at, *_NO_END], state)
            case NodeFinished():
                key = (event.run_id, event.node_id)
                started = state.inflight.pop(key, None)
                if started is not None:
                    model = event.model or started.model
                    row = _node_row(event, started.title, model, started.started_at)
                else:  # never started (blocked, skipped, reused), or started before we knew
                    row = _node_row(event, event.title, event.model, event.started_at)
                rows.put_node(key, row, state)
            case ModelCallFinished():
                rows.calls.append(_call_row(event))
            case RunPaused() | RunContinued() | RunEdited():
                rows.run_control.append(event)
            case RunFinished():
                rows.runs_finished.append(event)
                state.written.pop(event.run_id, None)
                for key in [k for k in state.inflight if k[0] == event.run_id]:
                    del state.inflight[key]
            case _:  # NodeProgress and anything newer: live display only, never traced
                pass
    return rows


# finished_at, reused_from, cost_usd, strategy, samples, agreement, caps, note, suspect, pinned
# of a running node
_NO_END = (None, None, 0.0, None, None, None, None, None, None, None, False)

__all__ = [
    "CALL_COLUMNS",
    "NODE_COLUMNS",
    "RECORDED_RUN_COLUMNS",
    "RUN_COLUMNS",
    "Rows",
    "WriterState",
    "collapse",
]
