"""The trace store's schema: its tables, the ``spans`` and ``run_totals`` views, and the
numbered migrations that build them (``MIGRATIONS``; a store records which it has applied).

Tables (each column's meaning is in the migration that adds it)::

    runs(run_id, session_id, task, status, stop_reason, answer, input_tokens, output_tokens,
         started_at, finished_at, plan_json, caps_json,
         resumed_from, pid, cost_usd,                                      -- v2 columns
         origin,                                                           -- v4
         kind)                                                             -- v8
    node_executions(run_id, node_id, title, model, status, output, error, input_tokens,
                    output_tokens, started_at, finished_at,
                    reused_from, cost_usd,                                 -- v2 columns
                    strategy, samples, agreement, token_cap, cost_cap_usd, note,   -- v3
                    suspect)                                               -- v7
    model_calls(call_id, run_id, node_id, model, prompt, output, input_tokens, output_tokens,
                latency_s, status, error, started_at, finished_at,
                sample_index, seed, cache_key, cost_usd, finish_reason,    -- v2 columns
                role, score, vote, selected, reused_from,                  -- v3
                imported,                                                  -- v4
                detail)                                                    -- v8
    evaluations(...), evaluation_results(...)                              -- v3
    run_labels(run_id, name, tags, updated_at)                             -- v9
    runs.forked_from, forked_at_node, paused_node, edits;
    node_executions.pinned                                                 -- v10
    annotations(annotation_id, run_id, node_id, call_id, label, score, note,
                corrected_output, created_at)                              -- v11

``runs.status`` is running | completed | suspect | stopped | failed | cancelled | interrupted; a
run is *interrupted* when the process that ran it (``runs.pid``) died while it was ``running``,
*suspect* when its root finished but some node's output failed the output check
(``node_executions.suspect`` holds each such node's reason, ``stop_reason`` the summary).
``node_executions.status`` is running | done | failed | blocked | skipped | cancelled |
interrupted; ``reused_from`` names the run whose recorded call gave a node its output (no model
was called). ``model_calls.status`` is ok | error | cancelled; ``cache_key`` is the call's
identity (``engine.run.call_cache.call_cache_key``), so the store doubles as the call cache.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from engine.redaction import REDACT_PATTERNS
from storage.traces.annotations import CREATE_SQL as ANNOTATIONS_SQL


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
    con.execute(_spans_view(suspect=False))


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
def _spans_view(*, suspect: bool) -> str:
    """The spans view; ``suspect``: with ``arbor_suspect`` (migration 7 adds its column)."""
    run_extra = ", CASE WHEN r.status = 'suspect' THEN r.stop_reason END AS arbor_suspect"
    run_extra = run_extra if suspect else ""
    node_extra = ", n.suspect" if suspect else ""
    none_extra = ", NULL" if suspect else ""
    node_message = (
        "coalesce(n.error, 'suspect: ' || n.suspect, n.note)"
        if suspect
        else "coalesce(n.error, n.note)"
    )
    run_ok = "('completed', 'suspect')" if suspect else "('completed')"
    return f"""
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
       CASE WHEN r.status IN {run_ok} THEN 'OK'
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
       r.task AS input, r.answer AS output{run_extra}
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
       {node_message},
       'invoke_agent', {_provider("n.model")}, n.model, NULL, NULL,
       n.input_tokens, n.output_tokens,
       n.node_id, n.title, NULL, NULL, n.cost_usd,
       NULL, NULL, NULL, n.strategy, n.reused_from,
       NULL, n.output{node_extra}
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
       NULL, NULL{none_extra}
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
       c.prompt, c.output{none_extra}
FROM model_calls c
LEFT JOIN sample_groups g
       ON g.run_id = c.run_id AND g.node_id = c.node_id AND g.sample_index = c.sample_index
"""


#: The current spans view (``arbor_suspect``: why a node's output, or a run's, is suspect; a
#: suspect run is finished with an answer, so its ``status_code`` is OK).
SPANS_VIEW = _spans_view(suspect=True)


#: A run's token and cost totals as readers show them: a running run's totals are written when
#: it finishes, so until then they are the sums over its nodes so far; any other run's are its
#: own columns. One row per run. Only running runs' nodes are summed (a handful), so joining the
#: view costs a scan of ``node_executions.run_id`` and no aggregate over the whole table.
RUN_TOTALS_VIEW = """
CREATE OR REPLACE VIEW run_totals AS
SELECT r.run_id,
       CASE WHEN r.status = 'running' THEN coalesce(n.tokens_in, 0)
            ELSE r.input_tokens END AS input_tokens,
       CASE WHEN r.status = 'running' THEN coalesce(n.tokens_out, 0)
            ELSE r.output_tokens END AS output_tokens,
       CASE WHEN r.status = 'running' THEN coalesce(n.cost, 0)
            ELSE r.cost_usd END AS cost_usd
FROM runs r
LEFT JOIN (SELECT run_id, sum(input_tokens) AS tokens_in, sum(output_tokens) AS tokens_out,
                  sum(cost_usd) AS cost
           FROM node_executions
           WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'running')
           GROUP BY run_id) n ON n.run_id = r.run_id
"""


def _add_v6_run_totals(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RUN_TOTALS_VIEW)


def _add_v7_suspect(con: duckdb.DuckDBPyConnection) -> None:
    """Outputs that are not answers (``engine.output_check``): why, per node."""
    con.execute(
        """
        -- why the output does not look like an answer (an echo, a loop, cut off); NULL: fine
        ALTER TABLE node_executions ADD COLUMN suspect VARCHAR;
        """
    )
    con.execute(SPANS_VIEW)


#: What ``runs.kind`` may hold: an execution of a plan, or one planner action.
#: The planner's kinds: one planner action each.
PLANNER_KINDS = ("decompose", "expand", "replan", "rate", "alternatives")
#: Every kind of ``runs`` row: plan runs, planner actions, and playground variants.
RUN_KINDS = ("execution", *PLANNER_KINDS, "playground")


def _add_v8_planner_runs(con: duckdb.DuckDBPyConnection) -> None:
    """Planner actions become runs: ``runs.kind`` tells them from executions, and each planner
    call keeps what ranked it in ``model_calls.detail``."""
    con.execute(
        """
        -- execution | decompose | expand | replan | rate | alternatives (RUN_KINDS)
        ALTER TABLE runs ADD COLUMN kind VARCHAR DEFAULT 'execution';
        -- JSON: a planner candidate's source, per-criterion scores, problem and notes
        ALTER TABLE model_calls ADD COLUMN detail VARCHAR;
        """
    )
    con.execute("UPDATE runs SET kind = 'execution' WHERE kind IS NULL")


def _add_v9_run_labels(con: duckdb.DuckDBPyConnection) -> None:
    """An analyst's name and tags for a run. A table of their own rather than columns of
    ``runs``: a writer that records a run again (resume, re-import) never wipes them."""
    con.execute(
        """
        CREATE TABLE run_labels (
            run_id VARCHAR PRIMARY KEY,
            name VARCHAR,                     -- a short human name; NULL: none
            tags VARCHAR[] DEFAULT [],        -- free-form, lower-case, sorted, no duplicates
            updated_at TIMESTAMPTZ
        );
        """
    )


def _add_v10_run_control(con: duckdb.DuckDBPyConnection) -> None:
    """Run control (``engine.run.control``): pinned outputs, paused runs, edits, forks."""
    con.execute(
        """
        -- the output is the analyst's pinned (or edited) text; no model was called for it
        ALTER TABLE node_executions ADD COLUMN pinned BOOLEAN DEFAULT false;
        -- the run this one was forked from, and the node the fork ran anew from
        ALTER TABLE runs ADD COLUMN forked_from VARCHAR;
        ALTER TABLE runs ADD COLUMN forked_at_node VARCHAR;
        -- status 'paused': the node the run waits at (stop_reason says before/after and why)
        ALTER TABLE runs ADD COLUMN paused_node VARCHAR;
        -- JSON list of the analyst's edits: {node_id, field, old, new, source}
        ALTER TABLE runs ADD COLUMN edits VARCHAR;
        """
    )


def _add_v11_annotations(con: duckdb.DuckDBPyConnection) -> None:
    """An analyst's good/bad labels on runs, nodes and calls (``storage.traces.annotations``)."""
    con.execute(ANNOTATIONS_SQL)


#: Ordered, named migrations; a store records which it has applied. Append, never edit.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("create runs, node_executions, model_calls", _create_v1),
    ("resume and call cache: pid, resumed_from, reused_from, cache_key, cost", _add_v2_columns),
    ("strategies (roles, scores, votes) and evaluations", _add_v3_strategies_and_evaluations),
    ("spans view (OpenTelemetry GenAI names), imported runs", _add_v4_spans_and_imports),
    ("mask credentials left in recorded base URLs", _redact_url_credentials_v5),
    ("run_totals view: a running run's tokens and cost are its nodes' sums", _add_v6_run_totals),
    ("suspect outputs: node_executions.suspect, spans.arbor_suspect", _add_v7_suspect),
    ("planner runs: runs.kind, model_calls.detail (candidate scores)", _add_v8_planner_runs),
    ("run names and tags: run_labels", _add_v9_run_labels),
    ("run control: pinned nodes, paused runs, edits, forks", _add_v10_run_control),
    ("annotations: good/bad labels, scores, notes, corrections", _add_v11_annotations),
]


__all__ = ["MIGRATIONS", "PLANNER_KINDS", "RUN_KINDS", "RUN_TOTALS_VIEW", "SPANS_VIEW"]
