"""The trace store: every run, node execution and model call, in one DuckDB file.

Schema (version 2), designed to be queried directly::

    runs(run_id, session_id, task, status, stop_reason, answer, input_tokens, output_tokens,
         started_at, finished_at, plan_json, caps_json,
         resumed_from, pid, cost_usd)                                      -- v2 columns
    node_executions(run_id, node_id, title, model, status, output, error, input_tokens,
                    output_tokens, started_at, finished_at,
                    reused_from, cost_usd)                                 -- v2 columns
    model_calls(call_id, run_id, node_id, model, prompt, output, input_tokens, output_tokens,
                latency_s, status, error, started_at, finished_at,
                sample_index, seed, cache_key, cost_usd, finish_reason)    -- v2 columns

``runs.status`` is running | completed | stopped | failed | cancelled | interrupted; a run is
*interrupted* when the process that ran it (``runs.pid``) died while it was ``running``.
``node_executions.status`` is running | done | failed | blocked | skipped | cancelled |
interrupted; ``reused_from`` names the run whose recorded call gave a node its output (no model
was called). ``model_calls.status`` is ok | error | cancelled; ``cache_key`` is the call's
identity (``engine.run.call_cache.call_cache_key``), so the store doubles as the call cache.

DuckDB lets only one process open a file read-write, and a process that holds it blocks every
other. So connections are short-lived: ``TraceStore`` opens one for a write or a query and
closes it, and an open that meets another process's lock is retried for a few seconds.
``TraceWriter`` (the listener a run uses) writes from a background thread in batches, keeps its
connection only while events are flowing and lets go of the file after a short idle period, so
the UI and a command-line run can share the store.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from engine.errors import TraceStoreError
from engine.redaction import REDACT_PATTERNS, redact
from engine.run.call_cache import CachedCall
from engine.run.events import (
    BudgetUpdate,
    Event,
    ModelCallFinished,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)


def _create_v1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            session_id VARCHAR,
            task VARCHAR,
            status VARCHAR NOT NULL,          -- running | completed | stopped | failed | cancelled
            stop_reason VARCHAR,
            answer VARCHAR,
            input_tokens BIGINT DEFAULT 0,
            output_tokens BIGINT DEFAULT 0,
            started_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ,
            plan_json VARCHAR,
            caps_json VARCHAR
        );
        CREATE TABLE node_executions (
            run_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            title VARCHAR,
            model VARCHAR,
            status VARCHAR NOT NULL,          -- running | done | failed | blocked | skipped
            output VARCHAR,
            error VARCHAR,
            input_tokens BIGINT DEFAULT 0,
            output_tokens BIGINT DEFAULT 0,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            PRIMARY KEY (run_id, node_id)
        );
        CREATE TABLE model_calls (
            call_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            node_id VARCHAR NOT NULL,
            model VARCHAR,
            prompt VARCHAR,                   -- the rendered chat messages, as JSON
            output VARCHAR,
            input_tokens BIGINT,
            output_tokens BIGINT,
            latency_s DOUBLE,
            status VARCHAR NOT NULL,          -- ok | error
            error VARCHAR,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ
        );
        """
    )


def _add_v2_columns(con: duckdb.DuckDBPyConnection) -> None:
    # Statuses gain "interrupted" (runs, nodes) and "cancelled" (nodes, calls); they are
    # free-text columns, so only the documentation changes.
    con.execute(
        """
        ALTER TABLE runs ADD COLUMN resumed_from VARCHAR;  -- the interrupted run this continues
        ALTER TABLE runs ADD COLUMN pid INTEGER;           -- process that ran it (same host)
        ALTER TABLE runs ADD COLUMN cost_usd DOUBLE DEFAULT 0;
        ALTER TABLE node_executions ADD COLUMN reused_from VARCHAR;  -- run whose call was reused
        ALTER TABLE node_executions ADD COLUMN cost_usd DOUBLE DEFAULT 0;
        ALTER TABLE model_calls ADD COLUMN sample_index INTEGER DEFAULT 0;
        ALTER TABLE model_calls ADD COLUMN seed BIGINT;
        ALTER TABLE model_calls ADD COLUMN cache_key VARCHAR;  -- engine.run.call_cache key
        ALTER TABLE model_calls ADD COLUMN cost_usd DOUBLE DEFAULT 0;
        ALTER TABLE model_calls ADD COLUMN finish_reason VARCHAR;  -- stop | length | NULL
        CREATE INDEX model_calls_cache_key ON model_calls (cache_key);
        """
    )


def _add_v3_strategies_and_evaluations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- what a call was for: answer (a single call) | sample | judge | critique | revise
        ALTER TABLE model_calls ADD COLUMN role VARCHAR DEFAULT 'answer';
        ALTER TABLE model_calls ADD COLUMN score DOUBLE;       -- selector's or judge's score
        ALTER TABLE model_calls ADD COLUMN vote VARCHAR;       -- normalised answer voted for
        ALTER TABLE model_calls ADD COLUMN selected BOOLEAN;   -- this sample became the output
        ALTER TABLE model_calls ADD COLUMN reused_from VARCHAR;  -- run whose call was replayed
        ALTER TABLE node_executions ADD COLUMN strategy VARCHAR;    -- e.g. 'best-of-N ×5'
        ALTER TABLE node_executions ADD COLUMN samples INTEGER;     -- samples drawn
        ALTER TABLE node_executions ADD COLUMN agreement DOUBLE;    -- leader's share of votes
        ALTER TABLE node_executions ADD COLUMN token_cap BIGINT;    -- tokens the node was allowed
        ALTER TABLE node_executions ADD COLUMN cost_cap_usd DOUBLE; -- dollars it was allowed
        ALTER TABLE node_executions ADD COLUMN note VARCHAR;        -- e.g. why sampling stopped
        CREATE TABLE evaluations (
            evaluation_id VARCHAR PRIMARY KEY,
            session_id VARCHAR,
            kind VARCHAR NOT NULL,            -- evaluation | search
            dataset VARCHAR,
            checker_json VARCHAR,
            status VARCHAR NOT NULL,          -- running | completed | failed | cancelled
            created_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ,
            summary_json VARCHAR              -- per-configuration metrics, search trials
        );
        CREATE TABLE evaluation_results (
            evaluation_id VARCHAR NOT NULL,
            configuration VARCHAR NOT NULL,
            example_id VARCHAR NOT NULL,
            run_id VARCHAR,                   -- the run in this store that answered it
            correct BOOLEAN,
            output VARCHAR,
            expected VARCHAR,
            detail VARCHAR,                   -- the checker's explanation
            tokens BIGINT,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            replayed BOOLEAN,                 -- every call came from recorded outcomes
            PRIMARY KEY (evaluation_id, configuration, example_id)
        );
        """
    )


def _add_v4_spans_and_imports(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- NULL: recorded in this store; else where the run came from ("imported from x.arbor")
        ALTER TABLE runs ADD COLUMN origin VARCHAR;
        -- a call copied in by an import: shown, never replayed as a cache hit
        ALTER TABLE model_calls ADD COLUMN imported BOOLEAN DEFAULT false;
        """
    )
    con.execute(SPANS_VIEW)


#: Columns where a URL with credentials could have been recorded before they were refused.
_REDACTED_COLUMNS = (
    ("runs", "plan_json"),
    ("runs", "stop_reason"),
    ("node_executions", "model"),
    ("node_executions", "error"),
    ("model_calls", "model"),
    ("model_calls", "error"),
)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _redact_url_credentials_v5(con: duckdb.DuckDBPyConnection) -> None:
    """Mask URL credentials in rows written before base URLs with keys were refused.

    The same patterns as ``engine.redaction.redact`` (written in RE2, which both speak).
    """
    for table, column in _REDACTED_COLUMNS:
        masked = column
        for pattern, replacement in REDACT_PATTERNS:
            masked = (
                f"regexp_replace({masked}, {_sql_text(pattern)}, {_sql_text(replacement)}, 'g')"
            )
        where = " OR ".join(f"regexp_matches({column}, {_sql_text(p)})" for p, _ in REDACT_PATTERNS)
        con.execute(f"UPDATE {table} SET {column} = {masked} WHERE {where}")


def _provider(column: str) -> str:
    return (
        f"CASE WHEN {column} LIKE '%.gguf' THEN 'llama_cpp'"
        f" WHEN {column} LIKE '%@http%' THEN 'openai' END"
    )


#: Every run, node, sample and model call as one span, named after OpenTelemetry's GenAI
#: semantic conventions (a ``gen_ai_x_y`` column is the attribute ``gen_ai.x.y``), so a row
#: maps onto an OTLP span without guessing. Ids are derived, not stored: ``trace_id`` is the
#: md5 of the run id (32 hex digits), a ``span_id`` the first 16 hex digits of the md5 of the
#: span's key. Parents: a call belongs to its sample when its node sampled (strategy calls,
#: judges, critiques) and to its node otherwise; a sample to its node; a node to its run.
#: ``gen_ai_provider_name`` comes from the backend's model label: a local GGUF file name ends in
#: ``.gguf`` (llama.cpp), a remote one is ``model@base_url`` (the OpenAI API, whoever serves it).
#: A view costs nothing to write: the rows are the three tables the writer already appends to.
SPANS_VIEW = f"""
CREATE OR REPLACE VIEW spans AS
WITH sample_groups AS (
    SELECT run_id, node_id, sample_index,
           min(started_at) AS start_time, max(finished_at) AS end_time,
           CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
           CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
           sum(cost_usd) AS cost_usd,
           bool_or(status = 'error') AS failed,
           max(score) AS score, any_value(vote) AS vote, bool_or(selected) AS selected,
           bool_and(role = 'revise' OR role = 'critique' OR role = 'answer') AS refine,
           any_value(model) AS model
    FROM model_calls
    GROUP BY run_id, node_id, sample_index
    HAVING bool_or(role <> 'answer')
)
SELECT md5(r.run_id) AS trace_id,
       substr(md5(r.run_id || '/'), 1, 16) AS span_id,
       CAST(NULL AS VARCHAR) AS parent_span_id,
       r.run_id, CAST(NULL AS VARCHAR) AS node_id, CAST(NULL AS VARCHAR) AS call_id,
       CAST(NULL AS INTEGER) AS sample_index,
       'run' AS span_kind,
       'invoke_agent arbor' AS name,
       r.started_at AS start_time, coalesce(r.finished_at, r.started_at) AS end_time,
       r.status,
       CASE WHEN r.status = 'completed' THEN 'OK'
            WHEN r.status IN ('failed', 'interrupted', 'stopped') THEN 'ERROR'
            ELSE 'UNSET' END AS status_code,
       r.stop_reason AS status_message,
       'invoke_agent' AS gen_ai_operation_name,
       CAST(NULL AS VARCHAR) AS gen_ai_provider_name,
       CAST(NULL AS VARCHAR) AS gen_ai_request_model,
       CAST(NULL AS BIGINT) AS gen_ai_request_seed,
       CAST(NULL AS VARCHAR) AS gen_ai_response_finish_reasons,
       r.input_tokens AS gen_ai_usage_input_tokens,
       r.output_tokens AS gen_ai_usage_output_tokens,
       'arbor' AS gen_ai_agent_id, r.task AS gen_ai_agent_name,
       r.session_id AS arbor_session_id,
       CAST(NULL AS VARCHAR) AS arbor_role,
       r.cost_usd AS arbor_cost_usd,
       CAST(NULL AS DOUBLE) AS arbor_score, CAST(NULL AS VARCHAR) AS arbor_vote,
       CAST(NULL AS BOOLEAN) AS arbor_selected, CAST(NULL AS VARCHAR) AS arbor_strategy,
       r.resumed_from AS arbor_reused_from,
       r.task AS input, r.answer AS output
FROM runs r
UNION ALL
SELECT md5(n.run_id), substr(md5(n.run_id || '/' || n.node_id), 1, 16),
       substr(md5(n.run_id || '/'), 1, 16),
       n.run_id, n.node_id, NULL, NULL,
       'node', 'invoke_agent ' || coalesce(n.title, n.node_id),
       coalesce(n.started_at, n.finished_at), coalesce(n.finished_at, n.started_at),
       n.status,
       CASE WHEN n.status = 'done' THEN 'OK'
            WHEN n.status IN ('failed', 'interrupted') THEN 'ERROR' ELSE 'UNSET' END,
       coalesce(n.error, n.note),
       'invoke_agent', {_provider("n.model")}, n.model, NULL, NULL,
       n.input_tokens, n.output_tokens,
       n.node_id, n.title, NULL, NULL, n.cost_usd,
       NULL, NULL, NULL, n.strategy, n.reused_from,
       NULL, n.output
FROM node_executions n
UNION ALL
SELECT md5(g.run_id),
       substr(md5(g.run_id || '/' || g.node_id || '#' || g.sample_index), 1, 16),
       substr(md5(g.run_id || '/' || g.node_id), 1, 16),
       g.run_id, g.node_id, NULL, g.sample_index,
       'sample', CASE WHEN g.refine THEN 'round ' ELSE 'sample ' END || (g.sample_index + 1),
       g.start_time, g.end_time,
       CASE WHEN g.failed THEN 'error' ELSE 'ok' END,
       CASE WHEN g.failed THEN 'ERROR' ELSE 'OK' END, NULL,
       NULL, {_provider("g.model")}, g.model, NULL, NULL,
       g.input_tokens, g.output_tokens,
       g.node_id, NULL, NULL, NULL, g.cost_usd,
       g.score, g.vote, g.selected, NULL, NULL,
       NULL, NULL
FROM sample_groups g
UNION ALL
SELECT md5(c.run_id), substr(md5(c.call_id), 1, 16),
       CASE WHEN g.run_id IS NULL THEN substr(md5(c.run_id || '/' || c.node_id), 1, 16)
            ELSE substr(md5(c.run_id || '/' || c.node_id || '#' || c.sample_index), 1, 16) END,
       c.run_id, c.node_id, c.call_id, c.sample_index,
       'call', 'chat ' || coalesce(c.model, ''),
       c.started_at, coalesce(c.finished_at, c.started_at),
       c.status,
       CASE WHEN c.status = 'ok' THEN 'OK' WHEN c.status = 'error' THEN 'ERROR' ELSE 'UNSET' END,
       c.error,
       'chat', {_provider("c.model")}, c.model, c.seed, c.finish_reason,
       c.input_tokens, c.output_tokens,
       c.node_id, NULL, NULL, c.role, c.cost_usd,
       c.score, c.vote, c.selected, NULL, c.reused_from,
       c.prompt, c.output
FROM model_calls c
LEFT JOIN sample_groups g
       ON g.run_id = c.run_id AND g.node_id = c.node_id AND g.sample_index = c.sample_index
"""


#: Ordered, named migrations; a store records which it has applied. Append, never edit.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("create runs, node_executions, model_calls", _create_v1),
    ("resume and call cache: pid, resumed_from, reused_from, cache_key, cost", _add_v2_columns),
    ("strategies (roles, scores, votes) and evaluations", _add_v3_strategies_and_evaluations),
    ("spans view (OpenTelemetry GenAI names), imported runs", _add_v4_spans_and_imports),
    ("mask credentials left in recorded base URLs", _redact_url_credentials_v5),
]

#: Column order the writers use (explicit, so a later migration may add columns anywhere).
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
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_NODE_SCHEMA = pa.schema(
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
        ("started_at", _TIMESTAMP),
        ("finished_at", _TIMESTAMP),
        ("reused_from", pa.string()),
        ("cost_usd", pa.float64()),
        ("strategy", pa.string()),
        ("samples", pa.int32()),
        ("agreement", pa.float64()),
        ("token_cap", pa.int64()),
        ("cost_cap_usd", pa.float64()),
        ("note", pa.string()),
    ]
)

#: A run's token and cost columns for readers: a running run's totals are written when it
#: finishes, so until then they are the sums over its nodes so far. ``r`` is ``runs``, ``n`` a
#: per-run aggregate of ``node_executions`` with ``tokens_in``, ``tokens_out`` and ``cost``.
LIVE_RUN_TOTALS = (
    "CASE WHEN r.status = 'running' THEN coalesce(n.tokens_in, 0)"
    " ELSE r.input_tokens END AS input_tokens,"
    " CASE WHEN r.status = 'running' THEN coalesce(n.tokens_out, 0)"
    " ELSE r.output_tokens END AS output_tokens,"
    " CASE WHEN r.status = 'running' THEN coalesce(n.cost, 0)"
    " ELSE r.cost_usd END AS cost_usd"
)

#: Cache lookups send at most this many keys per query (a resumed 1000-node run asks for many).
LOOKUP_CHUNK = 500


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


# -- writing: events to rows ---------------------------------------------------------------
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
class _Rows:
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


def _redacted(text: str | None) -> str | None:
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
        _redacted(event.error),
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
        _redacted(event.error),
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


def collapse(events: Iterable[Event], state: WriterState) -> _Rows:
    """Turn a batch of events into rows; a node started and finished in it becomes one row.

    ``state`` is updated in place; a finish whose start came in an earlier batch is still
    written as one complete row (the start's title, model and time, the finish's outcome).
    """
    rows = _Rows()
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
            case RunFinished():
                rows.runs_finished.append(event)
                state.written.pop(event.run_id, None)
                for key in [k for k in state.inflight if k[0] == event.run_id]:
                    del state.inflight[key]
            case _:  # NodeProgress and anything newer: live display only, never traced
                pass
    return rows


# finished_at, reused_from, cost_usd, strategy, samples, agreement, caps, note of a running node
_NO_END = (None, None, 0.0, None, None, None, None, None, None)

_MERGE_NODES = f"""
    INSERT INTO node_executions ({", ".join(NODE_COLUMNS)})
    SELECT {", ".join(NODE_COLUMNS)} FROM arbor_merge_nodes
    ON CONFLICT (run_id, node_id) DO UPDATE SET
        title = coalesce(excluded.title, node_executions.title),
        model = coalesce(excluded.model, node_executions.model),
        status = excluded.status,
        output = excluded.output,
        error = excluded.error,
        input_tokens = excluded.input_tokens,
        output_tokens = excluded.output_tokens,
        started_at = coalesce(node_executions.started_at, excluded.started_at),
        finished_at = excluded.finished_at,
        reused_from = excluded.reused_from,
        cost_usd = excluded.cost_usd,
        strategy = excluded.strategy,
        samples = excluded.samples,
        agreement = excluded.agreement,
        token_cap = excluded.token_cap,
        cost_cap_usd = excluded.cost_cap_usd,
        note = excluded.note
"""


class _Sink:
    """Writes ``_Rows`` on one connection, one transaction per batch.

    Rows go through DuckDB's appender: plain inserts for new rows and calls, a keyed update for
    rows this writer wrote before (an upsert flush costs about 7 times an insert). Only rows the
    writer cannot place go through ``INSERT ... ON CONFLICT`` over an Arrow table. After a failed
    attempt, ``idempotent`` makes inserts upserts, so a batch that did commit after all cannot
    collide with itself. ``executemany`` is avoided: it runs about 830 rows/s on a file.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self._appenders: dict[tuple[str, str], duckdb.Appender] = {}

    def _appender(self, table: str, action: str) -> duckdb.Appender:
        appender = self._appenders.get((table, action))
        if appender is None:
            columns = list(NODE_COLUMNS if table == "node_executions" else CALL_COLUMNS)
            key = ["run_id", "node_id"] if action == "update" else None
            options = {"key": key} if key else {}
            appender = self.con.appender(table, columns=columns, action=action, **options)
            self._appenders[(table, action)] = appender
        return appender

    def _append(self, table: str, action: str, rows: list[Any]) -> None:
        if rows:
            appender = self._appender(table, action)
            appender.append_rows(rows)
            appender.flush()

    def write(self, rows: _Rows, *, idempotent: bool = False) -> None:
        con = self.con
        insert = "upsert" if idempotent else "insert"
        con.execute("BEGIN TRANSACTION")
        try:
            for run in rows.runs_started:
                con.execute(
                    "INSERT INTO runs (run_id, session_id, task, status, started_at, plan_json,"
                    " caps_json, resumed_from, pid) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [
                        run.run_id,
                        run.session_id,
                        run.task,
                        run.started_at,
                        _redacted(run.plan_json),
                        run.caps_json,
                        run.resumed_from,
                        run.pid if run.pid is not None else os.getpid(),
                    ],
                )
            self._append("node_executions", insert, list(rows.nodes_new.values()))
            self._append("node_executions", "update", list(rows.nodes_update.values()))
            if rows.nodes_merge:
                table = pa.Table.from_pylist(
                    [dict(zip(NODE_COLUMNS, r, strict=True)) for r in rows.nodes_merge.values()],
                    schema=_NODE_SCHEMA,
                )
                con.register("arbor_merge_nodes", table)
                try:
                    con.execute(_MERGE_NODES)
                finally:
                    con.unregister("arbor_merge_nodes")
            self._append("model_calls", insert, rows.calls)
            for run in rows.runs_finished:
                con.execute(
                    "UPDATE runs SET status = ?, stop_reason = ?, answer = ?, input_tokens = ?,"
                    " output_tokens = ?, cost_usd = ?, finished_at = ? WHERE run_id = ?",
                    [
                        run.status,
                        _redacted(run.stop_reason),
                        run.answer,
                        run.input_tokens,
                        run.output_tokens,
                        run.cost_usd,
                        run.finished_at,
                        run.run_id,
                    ],
                )
            con.execute("COMMIT")
        except BaseException:
            for appender in self._appenders.values():
                appender.clear()
            # The failed statement may have ended the transaction already.
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise


# -- liveness of the process that ran a run --------------------------------------------------
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_alive(pid: int | None, started_before: datetime | None = None) -> bool:
    """Whether process ``pid`` on *this* host is alive and could be the one that started a run.

    Assumes the store is used from one host (it is a local file). A zombie counts as dead, and
    on Linux a process that started after ``started_before`` is a reused pid, not the runner.
    """
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill()
    if fields[0] in ("Z", "X"):
        return False
    boot = _boot_time()
    if started_before is not None and boot is not None:
        process_start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        # /proc's start time has clock-tick resolution and btime whole seconds: allow slack.
        if process_start > started_before.timestamp() + 2.0:
            return False
    return True


# -- the store -------------------------------------------------------------------------------
#: Live writers by store file, so reads in this process can see what they queued.
_writers_lock = threading.Lock()
_live_writers: dict[Path, weakref.WeakSet[TraceWriter]] = {}


def _newer(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Whether lookup row ``row`` finished after ``other`` (unknown times are oldest; the call
    id breaks ties, so the answer never depends on scan order)."""

    def age(r: tuple[Any, ...]) -> tuple[bool, float, str]:
        return (r[7] is not None, r[7].timestamp() if r[7] is not None else 0.0, r[1])

    return age(row) > age(other)


def _writer_holds(path: Path) -> bool:
    with _writers_lock:
        return any(writer.connected for writer in _live_writers.get(path, ()))


@dataclass
class _Reader:
    lock: threading.Lock = field(default_factory=threading.Lock)
    con: duckdb.DuckDBPyConnection | None = None


class _SharedReaders:
    """One kept-open read connection per store file, only while a writer here holds the file.

    Opening a connection costs about 1 ms while the database is already open in this process
    (about 25 ms when it is not), as much as a cache lookup itself; a run looks up once per
    scheduling round. The writer closes it when it lets go of the file, so other processes are
    never kept out by a reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: dict[Path, _Reader] = {}

    def _reader(self, path: Path) -> _Reader:
        with self._lock:
            return self._readers.setdefault(path, _Reader())

    @contextmanager
    def connection(self, store: TraceStore) -> Iterator[duckdb.DuckDBPyConnection]:
        path = store.file_id
        reader = self._reader(path)
        with reader.lock:
            if reader.con is None and _writer_holds(path):
                reader.con = store.open_connection()
            if reader.con is not None:
                try:
                    yield reader.con
                except duckdb.Error:
                    reader.con.close()
                    reader.con = None
                    raise
                return
        with store.connect() as con:
            yield con

    def release(self, path: Path) -> None:
        reader = self._reader(path)
        with reader.lock:
            if reader.con is not None:
                with suppress(duckdb.Error):
                    reader.con.close()
                reader.con = None


_readers = _SharedReaders()


class TraceStore:
    """Reads and writes traces in the DuckDB file at ``path``; also the run's call cache."""

    def __init__(self, path: Path | str, *, lock_wait_s: float = 15.0):
        self.path = Path(path)
        #: The file's absolute path: stores on one file share writers and readers by it
        #: (resolved once: ``resolve()`` costs about as much as a cache lookup).
        self.file_id = self.path.resolve()
        self.lock_wait_s = lock_wait_s
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def open_connection(self) -> duckdb.DuckDBPyConnection:
        """A migrated connection the caller must close; waits while another process holds
        the file and raises ``TraceStoreError`` (naming the file) when it stays locked or is
        not a DuckDB database."""
        retrying = Retrying(
            retry=retry_if_exception(_is_lock_conflict),
            stop=stop_after_delay(self.lock_wait_s),
            # Short waits: a busy writer elsewhere lets go for ``TraceWriter.yield_s`` at a
            # time, and a failed open costs well under a millisecond.
            wait=wait_random_exponential(multiplier=0.005, max=0.04),
            reraise=True,
        )
        try:
            con = retrying(duckdb.connect, str(self.path))
        except duckdb.Error as exc:
            raise TraceStoreError(f"Cannot open the trace store {self.path}: {exc}") from exc
        try:
            self._ensure_schema(con)
        except BaseException as exc:
            con.close()
            if isinstance(exc, duckdb.Error):
                raise TraceStoreError(f"Cannot migrate the trace store {self.path}: {exc}") from exc
            raise
        return con

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits while another process holds the file."""
        con = self.open_connection()
        try:
            yield con
        finally:
            con.close()

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._migrated:
            return
        with self._migrate_lock:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ DEFAULT now())"
            )
            rows = con.execute("SELECT version FROM schema_migrations").fetchall()
            applied = {row[0] for row in rows}
            for version, (name, migrate) in enumerate(MIGRATIONS, start=1):
                if version in applied:
                    continue
                con.execute("BEGIN")
                try:
                    migrate(con)
                    con.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [version, name],
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")  # a half-applied migration would be re-run
                    raise
            self._migrated = True

    def schema_version(self) -> int:
        with self.connect() as con:
            return con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0

    # -- writing ---------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Write one event now, in its own connection and transaction (slow: about 30 ms).

        Runs use ``TraceWriter``, which batches; this stays for one-off writes and tests.
        """
        if isinstance(event, NodeProgress | BudgetUpdate):
            return
        rows = collapse([event], WriterState())
        with self.connect() as con:
            try:
                _Sink(con).write(rows)
            except duckdb.Error as exc:
                raise TraceStoreError(
                    f"Cannot write to the trace store {self.path}: {exc}"
                ) from exc

    __call__ = record  # a TraceStore is itself a run listener

    def writer(self, **options: Any) -> TraceWriter:
        """A buffered ``TraceWriter`` for this store (see its docstring for ``options``)."""
        return TraceWriter(self, **options)

    def mark_interrupted(self, run_ids: Sequence[str], reason: str | None = None) -> int:
        """Mark runs still ``running`` as ``interrupted`` (their nodes left running too).

        ``finished_at`` becomes the last sign of life: the newest node finish, else the start.
        Returns how many runs changed.
        """
        with self.connect() as con:
            return self._mark_interrupted(con, run_ids, reason)

    @staticmethod
    def _mark_interrupted(
        con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], reason: str | None = None
    ) -> int:
        if not run_ids:
            return 0
        why = reason or "interrupted: the process running it stopped before it finished"
        con.execute("BEGIN")
        try:
            # Totals are normally written by RunFinished, which never came: sum the nodes.
            changed = con.execute(
                "UPDATE runs SET status = 'interrupted', stop_reason = coalesce(stop_reason, $1),"
                " finished_at = coalesce(n.last, runs.started_at),"
                " input_tokens = coalesce(n.tokens_in, 0),"
                " output_tokens = coalesce(n.tokens_out, 0),"
                " cost_usd = coalesce(n.cost, 0)"
                " FROM (SELECT r.run_id, max(x.finished_at) AS last,"
                "   sum(x.input_tokens) AS tokens_in, sum(x.output_tokens) AS tokens_out,"
                "   sum(x.cost_usd) AS cost"
                "   FROM runs r LEFT JOIN node_executions x ON x.run_id = r.run_id"
                "   WHERE r.run_id IN (SELECT unnest($2::VARCHAR[])) GROUP BY r.run_id) n"
                " WHERE runs.run_id = n.run_id AND runs.status = 'running'",
                [why, list(run_ids)],
            ).fetchone()[0]
            con.execute(
                "UPDATE node_executions SET status = 'interrupted', error = coalesce(error, ?)"
                " WHERE status = 'running' AND run_id IN (SELECT unnest(?::VARCHAR[]))",
                [why, list(run_ids)],
            )
            con.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        return changed

    def interrupted_runs(self, *, mark: bool = True) -> list[dict[str, Any]]:
        """Runs left ``running`` by a process that is gone, newest first; marks them
        ``interrupted`` unless ``mark`` is False.

        A run's process is looked up by ``runs.pid`` on this host (the store is a local file,
        so the runner was local too). Rows without a pid (written before schema v2) that are
        still ``running`` count as interrupted.
        """
        self._sync_writers()
        with self.connect() as con:
            dead = self._dead_runs(con)
            if mark:
                self._mark_interrupted(con, dead)
        if not dead:
            return []
        return [r for r in self.runs(sync=False, detect=False) if r["run_id"] in set(dead)]

    @classmethod
    def mark_dead_runs(cls, con: duckdb.DuckDBPyConnection) -> int:
        """On an open connection: mark runs whose process is gone ``interrupted`` (what
        ``runs()`` does first), so every reader shows the same status. Returns how many."""
        return cls._mark_interrupted(con, cls._dead_runs(con))

    @staticmethod
    def _dead_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
        running = con.execute(
            "SELECT run_id, pid, started_at FROM runs WHERE status = 'running'"
        ).fetchall()
        return [run_id for run_id, pid, started in running if not process_alive(pid, started)]

    # -- the call cache ----------------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> dict[str, CachedCall]:
        """The newest successful recorded call for each key that has one (``CallCache``).

        Failed and cancelled calls are never reused. Sees everything committed, by any process;
        a run's own latest calls may still be in its writer's queue (a few ms), but a finished
        run is always visible because ``RunFinished`` is written synchronously. While a writer
        in this process holds the file, lookups share one kept-open connection (opening one
        costs about as much as the query).
        """
        wanted = list(dict.fromkeys(key for key in keys if key))
        if not wanted:
            return {}
        newest: dict[str, tuple[Any, ...]] = {}
        try:
            self._lookup_into(newest, wanted)
        except duckdb.Error as exc:
            raise TraceStoreError(f"Cannot look up cached calls in {self.path}: {exc}") from exc
        return {
            key: CachedCall(
                call_id=call_id,
                run_id=run_id,
                output=output or "",
                input_tokens=tokens_in or 0,
                output_tokens=tokens_out or 0,
                finish_reason=finish,
            )
            for key, (_, call_id, run_id, output, tokens_in, tokens_out, finish, _) in (
                newest.items()
            )
        }

    def _lookup_into(self, newest: dict[str, tuple[Any, ...]], wanted: list[str]) -> None:
        with _readers.connection(self) as con:
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start : start + LOOKUP_CHUNK]
                # A plain IN list: a window function (newest per key) costs more than the rest
                # of the query, so the newest is picked here.
                rows = con.execute(
                    "SELECT cache_key, call_id, run_id, output, input_tokens, output_tokens,"
                    " finish_reason, finished_at FROM model_calls"
                    " WHERE status = 'ok' AND imported IS NOT TRUE"
                    f" AND cache_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for row in rows:
                    best = newest.get(row[0])
                    if best is None or _newer(row, best):
                        newest[row[0]] = row

    # -- reading ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Wait until what this process's writers queued is committed (read-your-writes for
        queries made outside this class, e.g. the Inspector's and the exports)."""
        self._sync_writers()

    def _sync_writers(self) -> None:
        """Read-your-writes inside this process: wait for live writers' queued events."""
        with _writers_lock:
            writers = list(_live_writers.get(self.file_id, ()))
        for writer in writers:
            # A writer reports its own failures to its run; reading goes on without them.
            with suppress(TraceStoreError):
                writer.flush()

    def _rows(
        self, sql: str, params: list[Any] | None = None, *, sync: bool = True
    ) -> list[dict[str, Any]]:
        if sync:
            self._sync_writers()
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def runs(
        self,
        session_id: str | None = None,
        *,
        limit: int | None = None,
        detect: bool = True,
        sync: bool = True,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, optionally only one session's, with node counts.

        With ``detect`` (the default), runs left ``running`` by a process that is gone are
        marked ``interrupted`` first, so every reader sees the same status. Tokens and cost of
        a run still running are the sums over its nodes so far. ``nodes_done``
        counts nodes that finished with an output (``nodes_reused`` of them came from the
        cache); ``nodes_recorded`` counts every node row, whatever its status.
        """
        if sync:
            self._sync_writers()
        where, params = ("WHERE r.session_id = ?", [session_id]) if session_id else ("", [])
        limit_sql = f" LIMIT {int(limit)}" if limit is not None else ""
        with self.connect() as con:
            if detect:
                self._mark_interrupted(con, self._dead_runs(con))
            cursor = con.execute(
                "SELECT r.run_id, r.session_id, r.task, r.status, r.stop_reason,"
                f" {LIVE_RUN_TOTALS}, r.started_at, r.finished_at, r.answer,"
                " r.resumed_from, r.pid, coalesce(n.done, 0) AS nodes_done,"
                " coalesce(n.reused, 0) AS nodes_reused, coalesce(n.total, 0) AS nodes_recorded"
                " FROM runs r LEFT JOIN (SELECT run_id, count(*) AS total,"
                "   count(*) FILTER (WHERE status = 'done') AS done,"
                "   count(*) FILTER (WHERE status = 'done' AND reused_from IS NOT NULL) AS reused,"
                "   sum(input_tokens) AS tokens_in, sum(output_tokens) AS tokens_out,"
                "   sum(cost_usd) AS cost"
                "   FROM node_executions GROUP BY run_id) n ON n.run_id = r.run_id"
                f" {where} ORDER BY r.started_at DESC{limit_sql}",
                params,
            )
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def node_executions(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT node_id, title, model, status, input_tokens, output_tokens, cost_usd,"
            " started_at, finished_at, output, error, reused_from, strategy, samples, agreement,"
            " token_cap, cost_cap_usd, note FROM node_executions"
            " WHERE run_id = ? ORDER BY started_at NULLS LAST, node_id",
            [run_id],
        )

    def model_calls(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT node_id, model, status, input_tokens, output_tokens, latency_s, prompt,"
            " output, error, started_at, call_id, sample_index, seed, cache_key, cost_usd,"
            " finish_reason, finished_at, role, score, vote, selected, reused_from"
            " FROM model_calls WHERE run_id = ? ORDER BY started_at, sample_index",
            [run_id],
        )


# -- the buffered writer ---------------------------------------------------------------------
class TraceWriter:
    """A run listener that writes events from a background thread, in batches.

    ``writer(event)`` only queues the event (microseconds), so a run of many instant nodes does
    not pay a connection or a transaction per event. The thread takes whatever is queued and
    writes it as one transaction (group commit); a node started and finished within one batch
    becomes one row. Events reach the file within milliseconds of being emitted, so a process
    killed mid-run loses at most the last few ms.

    - ``RunFinished`` is written before the call returns (a following run's cache lookup, or
      another process, sees the whole run at once), and the file is released right after.
    - The connection stays open only while events flow and closes after ``idle_close_s``, so
      another process (the UI, a command-line run) can open the store between runs. A writer
      kept busy without a pause lets go of the file for ``yield_s`` every ``max_hold_s``, so a
      reader or another run's writer elsewhere gets in within about a second, not after the
      run; its events wait in memory meanwhile.
    - A failed write keeps its events queued and is retried with back-off; the failure is raised
      from the next ``writer(event)`` (the executor turns it into a run warning), from
      ``flush()`` and from the ``RunFinished`` call. Nothing already in the store is touched.
    - Reads through any ``TraceStore`` on the same file in this process wait for what is queued,
      so code that reads right after an event sees it.
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        idle_close_s: float = 0.3,
        max_hold_s: float = 1.0,
        yield_s: float = 0.1,
        linger_s: float = 0.002,
        max_batch: int = 5000,
        retry_max_s: float = 2.0,
    ):
        """``linger_s``: how long the thread lets a batch grow before writing it; ``max_batch``
        caps the events in one transaction; ``retry_max_s`` is the longest back-off between
        attempts after a failure."""
        self.store = store
        self.idle_close_s = idle_close_s
        self.max_hold_s = max_hold_s
        self.yield_s = yield_s
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.retry_max_s = retry_max_s
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._enqueued = 0  # events queued since creation
        self._written = 0  # events committed (always a prefix of the queued ones)
        self._failures = 0  # failed write attempts
        self._failing_since: float | None = None
        self._last_error: TraceStoreError | None = None
        self._unreported: TraceStoreError | None = None
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._state = WriterState()
        self._connected = False
        #: Counters for tests and benchmarks: batches committed, events written, rows written,
        #: failed write attempts.
        self.stats = {
            "batches": 0,
            "events": 0,
            "node_rows": 0,
            "call_rows": 0,
            "failed_attempts": 0,
            "yields": 0,
        }
        with _writers_lock:
            _live_writers.setdefault(store.file_id, weakref.WeakSet()).add(self)
        _at_exit.add(self)

    # -- the listener side -------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Queue ``event``; raise a background write failure not reported yet (the event is
        still queued). A ``RunFinished`` is written before this returns."""
        if isinstance(event, NodeProgress | BudgetUpdate):
            return
        with self._cond:
            if self._closed or self._closing:
                raise TraceStoreError(f"The trace writer for {self.store.path} is closed.")
            self._pending.append(event)
            self._enqueued += 1
            self._wake()
            error, self._unreported = self._unreported, None
        if isinstance(event, RunFinished):
            self.flush()
        elif error is not None:
            raise error

    record = __call__

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event queued before this call is committed.

        Raises ``TraceStoreError`` when a write attempt fails meanwhile (the events stay
        queued and are retried) or after ``timeout`` seconds (default: the store's lock wait
        plus a margin).
        """
        wait_s = timeout if timeout is not None else self.store.lock_wait_s + 5.0
        deadline = time.monotonic() + wait_s
        with self._cond:
            target = self._enqueued
            if self._written >= target:
                return
            failures = self._failures
            self._flush_wanted = True
            self._wake()
            while self._written < target:
                if self._failures != failures:
                    self._unreported = None
                    raise self._last_error or TraceStoreError("trace write failed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TraceStoreError(
                        f"Traces not written to {self.store.path} within {wait_s:.0f} s;"
                        f" {target - self._written} events are still queued."
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        """Write what is queued, stop the thread and release the file.

        Raises ``TraceStoreError`` if queued events could not be written (they are dropped).
        """
        error: TraceStoreError | None = None
        try:
            self.flush()
        except TraceStoreError as exc:
            error = exc
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            lost = len(self._pending)
            self._pending.clear()
            self._closed = True
        _at_exit.discard(self)
        if error is not None or lost:
            raise TraceStoreError(
                f"{lost} trace events could not be written to {self.store.path}: {error}"
            )

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether the writer holds the file open right now (it lets go when idle)."""
        return self._connected

    # -- the background side -----------------------------------------------------------------
    def _wake(self) -> None:
        """Called with the lock held: make sure a thread will look at the queue."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"arbor-trace-writer:{self.store.path.name}", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

    def _work(self) -> None:
        con: duckdb.DuckDBPyConnection | None = None
        sink: _Sink | None = None
        held_since = time.monotonic()

        def release() -> None:
            nonlocal con, sink
            # Not "connected" first, so no lookup opens a shared reader after it is closed;
            # the file is free only once both are.
            self._connected = False
            _readers.release(self.store.file_id)
            if con is not None:
                with suppress(duckdb.Error):
                    con.close()
            con, sink = None, None

        try:
            while True:
                with self._cond:
                    batch = self._take_batch(con is not None)
                    if batch is None and con is None:
                        self._thread = None
                        return
                if batch is None:  # idle, or closing
                    release()
                    continue
                try:
                    if con is None:
                        con = self.store.open_connection()
                        sink = _Sink(con)
                        self._connected = True
                        held_since = time.monotonic()
                    state = self._state.copy()
                    rows = collapse(batch, state)
                    assert sink is not None
                    sink.write(rows, idempotent=self._failing_since is not None)
                except Exception as exc:  # keep the events; report; retry later
                    release()
                    self._failed(batch, exc)
                    continue
                self._state = state
                with self._cond:
                    finished_run = bool(rows.runs_finished) and not self._pending
                if finished_run:
                    # A finished run releases the file before its RunFinished call returns.
                    release()
                busy_too_long = con is not None and time.monotonic() - held_since > self.max_hold_s
                if busy_too_long:
                    release()
                with self._cond:
                    self._written += len(batch)
                    self._failing_since = None
                    self.stats["batches"] += 1
                    self.stats["events"] += len(batch)
                    self.stats["node_rows"] += rows.node_rows
                    self.stats["call_rows"] += len(rows.calls)
                    self._cond.notify_all()
                    if busy_too_long:
                        # Busy without a pause: let other processes in (see the docstring).
                        self.stats["yields"] += 1
                        self._cond.wait_for(lambda: self._closing, self.yield_s)
        finally:
            release()
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
                self._cond.notify_all()

    def _take_batch(self, connected: bool) -> list[Event] | None:
        """With the lock held: wait for work; None means "release the file" (or stop)."""
        cond = self._cond
        if self._failing_since is not None and self._pending and not self._closing:
            # Back off after a failure; a flush or close asks for an attempt now.
            delay = min(self.retry_max_s, 0.05 * 2 ** min(self._failures, 6))
            cond.wait_for(lambda: self._flush_wanted or self._closing, timeout=delay)
        if self._closing and self._failing_since is not None:
            return None  # close() already tried once more through flush(); give up
        if not self._pending:
            if self._closing or not connected:
                return None
            if not cond.wait_for(lambda: self._pending or self._closing, self.idle_close_s):
                return None  # idle: let another process have the file
            if not self._pending:
                return None
        if not self._flush_wanted and not self._closing and len(self._pending) < self.max_batch:
            # Let a burst of events (many instant nodes) share one transaction.
            cond.wait_for(
                lambda: self._flush_wanted or len(self._pending) >= self.max_batch, self.linger_s
            )
        self._flush_wanted = False
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    def _failed(self, batch: list[Event], exc: Exception) -> None:
        if isinstance(exc, TraceStoreError):
            error = exc
        else:
            error = TraceStoreError(
                f"Cannot write traces to {self.store.path}: {exc}. The events are kept in memory"
                " and retried."
            )
            error.__cause__ = exc
        with self._cond:
            self._pending[:0] = batch
            self._failures += 1
            self.stats["failed_attempts"] += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                self._unreported = error  # once per episode; flush() always raises
            self._last_error = error
            self._cond.notify_all()


class _AtExit:
    """Closes writers still open when the interpreter exits, so queued events are written."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[TraceWriter] = weakref.WeakSet()
        atexit.register(self._close_all)

    def add(self, writer: TraceWriter) -> None:
        self._writers.add(writer)

    def discard(self, writer: TraceWriter) -> None:
        self._writers.discard(writer)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with suppress(TraceStoreError):
                writer.close()


_at_exit = _AtExit()

__all__ = [
    "CALL_COLUMNS",
    "MIGRATIONS",
    "NODE_COLUMNS",
    "TraceStore",
    "TraceWriter",
    "WriterState",
    "collapse",
    "process_alive",
]
