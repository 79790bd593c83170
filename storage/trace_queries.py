"""The questions the Inspector asks of the trace store, as functions that return tables.

Every query reads the three trace tables or the ``spans`` and ``run_totals`` views
(storage/traces/schema.py) through a short-lived connection, so the page never holds the file
another process may want. Results are pandas DataFrames because that is what the page draws
from (Altair and ``st.dataframe``), and what a notebook user wants too. None of this knows
about Streamlit.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from engine.errors import ArborError, TraceStoreError
from engine.plan import Plan
from engine.plan.diff import PlanDiff, diff_plans
from storage.traces import TraceStore
from storage.traces import annotations as annotation_rows

#: ``runs.kind`` of a plan execution (the other kinds are planner actions).
EXECUTION = "execution"


@dataclass(frozen=True)
class RunFilter:
    """Which runs the Inspector lists. Empty fields do not filter.

    ``run_ids`` and ``session_id`` together mean "runs of this session": a run belongs to it
    when it was recorded under its id or is listed in the session (an imported session keeps the
    run ids it came with). ``kinds`` defaults to plan executions: planner actions (decompose,
    expand, ...: ``storage.traces.schema.RUN_KINDS``) are runs too but are listed only when
    asked for; an empty tuple lists every kind.
    """

    session_id: str | None = None
    run_ids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = (EXECUTION,)

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.kinds:
            clauses.append("coalesce(r.kind, 'execution') IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(self.kinds))
        if self.session_id is not None or self.run_ids:
            scope = []
            if self.session_id is not None:
                scope.append("r.session_id = ?")
                params.append(self.session_id)
            if self.run_ids:
                scope.append("r.run_id IN (SELECT unnest(?::VARCHAR[]))")
                params.append(list(self.run_ids))
            clauses.append("(" + " OR ".join(scope) + ")")
        if self.statuses:
            clauses.append("r.status IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(self.statuses))
        if self.models:
            clauses.append(
                "r.run_id IN (SELECT run_id FROM node_executions"
                " WHERE model IN (SELECT unnest(?::VARCHAR[])))"
            )
            params.append(list(self.models))
        if self.since is not None:
            clauses.append("r.started_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("r.started_at < ?")
            params.append(self.until)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class NodeDetail:
    """One node of one run: its row, every model call (prompt, output, score, vote) and the
    tally of votes when it sampled."""

    node: dict[str, Any]
    calls: pd.DataFrame
    votes: pd.DataFrame

    def messages(self, call_index: int) -> list[dict[str, str]]:
        """The rendered prompt of call ``call_index`` as chat messages (stored as JSON)."""
        return parse_prompt(self.calls.iloc[call_index]["prompt"])


@dataclass
class RunComparison:
    """Two runs side by side: plan differences, per-node outcomes and deltas, totals."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    plan_diff: PlanDiff | None
    plan_diff_problem: str | None
    nodes: pd.DataFrame
    totals: pd.DataFrame
    notes: list[str] = field(default_factory=list)


class TraceQueries:
    """Read-only questions over one trace store.

    Each question opens a short-lived connection, which costs tens of milliseconds, more than
    most of these queries. A caller that asks several (a page render) wraps them in ``held()``
    to share one connection, and lets go of the file as soon as it is done.
    """

    def __init__(self, store: TraceStore):
        self.store = store
        self._local = threading.local()

    @contextmanager
    def held(self) -> Iterator[TraceQueries]:
        """Share one connection among the questions asked inside (per thread, re-entrant)."""
        if getattr(self._local, "con", None) is not None:
            yield self
            return
        self.store.sync()
        with self.store.connect() as con:
            self._local.con = con
            try:
                yield self
            finally:
                self._local.con = None

    def _frame(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        try:
            with self.held():
                cursor = self._local.con.execute(sql, params or [])
                columns = [d[0] for d in cursor.description]
                # Built from rows: duckdb's own .df() warns under pandas 3.1 (inplace drop).
                return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
        except ArborError:
            raise
        except Exception as exc:  # duckdb errors carry the query's problem; name the store
            raise TraceStoreError(
                f"Query on the trace store {self.store.path} failed: {exc}"
            ) from exc

    # -- runs ------------------------------------------------------------------------------
    def runs(self, run_filter: RunFilter | None = None, *, limit: int = 500) -> pd.DataFrame:
        """Runs matching ``run_filter``, newest first, with what the list shows: duration,
        node and call counts, tokens, cost, the models used and where the run came from."""
        where, params = (run_filter or RunFilter()).where()
        with self.held():
            # A run left "running" by a process that died is interrupted, as every reader says.
            self.store.mark_dead_runs(self._local.con)
            return self._runs(where, params, limit)

    def _runs(self, where: str, params: list[Any], limit: int) -> pd.DataFrame:
        return self._frame(
            "SELECT r.run_id, r.session_id, r.task, r.status, r.stop_reason, r.started_at,"
            " r.finished_at,"
            " epoch(coalesce(r.finished_at, now()) - r.started_at) AS duration_s,"
            " coalesce(n.nodes, 0) AS nodes, coalesce(n.failed, 0) AS nodes_failed,"
            " coalesce(n.suspect, 0) AS nodes_suspect,"
            " coalesce(c.calls, 0) AS calls, t.input_tokens, t.output_tokens, t.cost_usd,"
            " coalesce(n.models, '') AS models, r.origin, r.resumed_from,"
            " coalesce(r.kind, 'execution') AS kind"
            " FROM runs r"
            " JOIN run_totals t ON t.run_id = r.run_id"
            " LEFT JOIN (SELECT run_id, count(*) AS nodes,"
            "   count(*) FILTER (WHERE status = 'failed') AS failed,"
            "   count(suspect) AS suspect,"
            "   string_agg(DISTINCT model, ', ' ORDER BY model) AS models"
            "   FROM node_executions GROUP BY run_id) n ON n.run_id = r.run_id"
            " LEFT JOIN (SELECT run_id, count(*) AS calls FROM model_calls GROUP BY run_id) c"
            "   ON c.run_id = r.run_id"
            f" {where} ORDER BY r.started_at DESC LIMIT {int(limit)}",
            params,
        )

    def models(self, run_filter: RunFilter | None = None) -> list[str]:
        """The models that ran nodes in the filtered runs (the filter's own model list aside)."""
        base = run_filter or RunFilter()
        scope = RunFilter(session_id=base.session_id, run_ids=base.run_ids, kinds=base.kinds)
        where, params = scope.where()
        frame = self._frame(
            "SELECT DISTINCT x.model FROM node_executions x JOIN runs r ON r.run_id = x.run_id"
            f" {where}{' AND' if where else ' WHERE'} x.model IS NOT NULL ORDER BY 1",
            params,
        )
        return frame["model"].tolist()

    def run(self, run_id: str) -> dict[str, Any]:
        frame = self._frame("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if frame.empty:
            raise TraceStoreError(f"No run {run_id!r} in the trace store {self.store.path}.")
        return frame.iloc[0].to_dict()

    # -- one run ---------------------------------------------------------------------------
    def timeline(self, run_id: str) -> pd.DataFrame:
        """Node and call spans of a run for a Gantt chart: seconds from the run's start,
        duration, lane (the node), model, tokens and cost. Sample spans are left out: their
        calls show the same time."""
        return self._frame(
            "WITH origin AS (SELECT started_at FROM runs WHERE run_id = $1)"
            " SELECT s.span_kind, s.span_id, s.parent_span_id, s.node_id, s.call_id,"
            " s.name, coalesce(x.title, s.node_id) AS lane,"
            " CASE WHEN s.span_kind = 'node' THEN 'node' ELSE coalesce(s.arbor_role, 'answer')"
            "   END AS role, s.sample_index,"
            " s.gen_ai_request_model AS model, s.status,"
            " epoch(s.start_time - o.started_at) AS start_s,"
            " epoch(s.end_time - o.started_at) AS end_s,"
            " epoch(s.end_time - s.start_time) AS duration_s,"
            " s.gen_ai_usage_input_tokens AS input_tokens,"
            " s.gen_ai_usage_output_tokens AS output_tokens,"
            " s.arbor_cost_usd AS cost_usd, s.start_time, s.end_time"
            " FROM spans s CROSS JOIN origin o"
            " LEFT JOIN node_executions x ON x.run_id = s.run_id AND x.node_id = s.node_id"
            " WHERE s.run_id = $1 AND s.span_kind IN ('node', 'call')"
            "   AND s.start_time IS NOT NULL"
            " ORDER BY s.start_time, s.span_kind DESC",
            [run_id],
        )

    def node_costs(self, run_id: str) -> pd.DataFrame:
        """Per node: status, strategy, calls, samples, tokens, cost, wall latency and the
        summed latency of its model calls (more than the wall time when calls overlapped)."""
        return self._frame(
            "SELECT x.node_id, x.title, x.model, x.status, x.strategy,"
            " coalesce(c.calls, 0) AS calls, x.samples,"
            " x.input_tokens, x.output_tokens, x.input_tokens + x.output_tokens AS tokens,"
            " x.cost_usd, epoch(x.finished_at - x.started_at) AS latency_s,"
            " coalesce(c.call_latency_s, 0) AS call_latency_s, x.agreement,"
            " x.reused_from IS NOT NULL AS reused, x.error, x.suspect"
            " FROM node_executions x LEFT JOIN (SELECT node_id, count(*) AS calls,"
            "   sum(latency_s) AS call_latency_s FROM model_calls WHERE run_id = $1"
            "   GROUP BY node_id) c ON c.node_id = x.node_id"
            " WHERE x.run_id = $1 ORDER BY x.started_at NULLS LAST, x.node_id",
            [run_id],
        )

    def node_detail(self, run_id: str, node_id: str) -> NodeDetail:
        """Everything recorded about one node of one run; unknown ids raise TraceStoreError."""
        with self.held():
            return self._node_detail(run_id, node_id)

    def _node_detail(self, run_id: str, node_id: str) -> NodeDetail:
        node = self._frame(
            "SELECT * FROM node_executions WHERE run_id = ? AND node_id = ?", [run_id, node_id]
        )
        if node.empty:
            raise TraceStoreError(f"Run {run_id!r} has no node {node_id!r} in the trace store.")
        calls = self._frame(
            "SELECT call_id, role, sample_index, model, status, prompt, output, error,"
            " input_tokens, output_tokens, latency_s, cost_usd, seed, finish_reason, score,"
            " vote, selected, reused_from, started_at, finished_at FROM model_calls"
            " WHERE run_id = ? AND node_id = ? ORDER BY started_at, sample_index",
            [run_id, node_id],
        )
        votes = self._frame(
            "SELECT vote, count(*) AS samples, bool_or(selected) AS chosen FROM model_calls"
            " WHERE run_id = ? AND node_id = ? AND vote IS NOT NULL"
            " GROUP BY vote ORDER BY samples DESC, vote",
            [run_id, node_id],
        )
        return NodeDetail(node=node.iloc[0].to_dict(), calls=calls, votes=votes)

    def planner_candidates(self, run_id: str) -> pd.DataFrame:
        """A planner run's calls and candidate plans in order: role, source, each criterion's
        score (``score: <name>`` columns), total, chosen, problem, notes, tokens, latency and
        the raw output. Empty for a run without calls (an execution's are in ``node_detail``)."""
        calls = self._frame(
            "SELECT sample_index AS number, role, model, status, score AS total, selected,"
            " detail, input_tokens, output_tokens, latency_s, output FROM model_calls"
            " WHERE run_id = ? ORDER BY sample_index, started_at",
            [run_id],
        )
        rows: list[dict[str, Any]] = []
        for record in calls.to_dict("records"):
            detail = _json_object(record.pop("detail"))
            row: dict[str, Any] = {
                "number": record["number"],
                "role": record["role"],
                "candidate": detail["candidate"] + 1
                if isinstance(detail.get("candidate"), int)
                else None,
                "alternative": detail.get("alternative"),
                "source": detail.get("source"),
                "chosen": bool(record["selected"]) if record["selected"] is not None else False,
                "total": record["total"],
            }
            for name, value in (detail.get("scores") or {}).items():
                row[f"score: {name}"] = value
            row["problem"] = detail.get("problem")
            row["notes"] = "; ".join(str(n) for n in detail.get("notes") or [])
            row.update(
                {
                    k: record[k]
                    for k in ("model", "status", "input_tokens", "output_tokens", "latency_s")
                }
            )
            row["output"] = record["output"]
            rows.append(row)
        return pd.DataFrame(rows)

    # -- two runs --------------------------------------------------------------------------
    def compare(self, run_a: str, run_b: str) -> RunComparison:
        """Run ``run_b`` against ``run_a``: what changed in the plan, and per node the outputs
        (same or not), tokens, cost and latency with deltas (b - a)."""
        with self.held():
            return self._compare(run_a, run_b)

    def _compare(self, run_a: str, run_b: str) -> RunComparison:
        first, second = self.run(run_a), self.run(run_b)
        plan_diff, problem = None, None
        try:
            if first.get("plan_json") and second.get("plan_json"):
                plan_diff = diff_plans(
                    Plan.from_json(first["plan_json"], source=f"run {run_a}"),
                    Plan.from_json(second["plan_json"], source=f"run {run_b}"),
                )
            else:
                problem = "a run has no stored plan"
        except ArborError as exc:
            problem = f"the stored plans could not be compared: {exc}"
        nodes = self._frame(
            "WITH a AS (SELECT * FROM node_executions WHERE run_id = $1),"
            " b AS (SELECT * FROM node_executions WHERE run_id = $2)"
            " SELECT coalesce(a.node_id, b.node_id) AS node_id,"
            " coalesce(b.title, a.title) AS title,"
            " a.status AS status_a, b.status AS status_b, a.model AS model_a, b.model AS model_b,"
            " a.output AS output_a, b.output AS output_b,"
            " a.output IS NOT DISTINCT FROM b.output AS same_output,"
            " a.input_tokens + a.output_tokens AS tokens_a,"
            " b.input_tokens + b.output_tokens AS tokens_b,"
            " (b.input_tokens + b.output_tokens) - (a.input_tokens + a.output_tokens)"
            "   AS tokens_delta,"
            " a.cost_usd AS cost_a, b.cost_usd AS cost_b, b.cost_usd - a.cost_usd AS cost_delta,"
            " epoch(a.finished_at - a.started_at) AS latency_a,"
            " epoch(b.finished_at - b.started_at) AS latency_b,"
            " epoch(b.finished_at - b.started_at) - epoch(a.finished_at - a.started_at)"
            "   AS latency_delta,"
            " b.reused_from IS NOT NULL AS reused_b"
            " FROM a FULL OUTER JOIN b ON a.node_id = b.node_id"
            " ORDER BY coalesce(a.started_at, b.started_at) NULLS LAST, 1",
            [run_a, run_b],
        )
        # annotations: each node's labels in each run ("bad ×2"), columns annotations_a/_b
        labels = self._frame(annotation_rows.LABELS_OF_RUNS_SQL, [run_a, run_b])
        nodes = annotation_rows.with_labels(nodes, labels, run_a, run_b)
        totals = pd.DataFrame(
            [
                _total_row("tokens", _tokens(first), _tokens(second)),
                _total_row("cost ($)", first.get("cost_usd"), second.get("cost_usd")),
                _total_row("duration (s)", _duration(first), _duration(second)),
                _total_row("nodes", _count(nodes, "status_a"), _count(nodes, "status_b")),
            ]
        )
        notes = []
        if not nodes.empty:
            changed = int((~nodes["same_output"].astype(bool)).sum())
            notes.append(f"{changed} of {len(nodes)} nodes have a different output")
        return RunComparison(first, second, plan_diff, problem, nodes, totals, notes)

    # -- a session's runs --------------------------------------------------------------------
    def trends(self, run_filter: RunFilter) -> pd.DataFrame:
        """One row per run, oldest first: tokens, cost, duration, failed nodes and calls, so
        a session's history can be drawn as lines."""
        where, params = run_filter.where()
        return self._frame(
            "SELECT row_number() OVER (ORDER BY r.started_at) AS run_number, r.run_id,"
            " r.started_at, r.status, r.input_tokens + r.output_tokens AS tokens, r.cost_usd,"
            " epoch(coalesce(r.finished_at, r.started_at) - r.started_at) AS duration_s,"
            " coalesce(n.failed, 0) AS nodes_failed, coalesce(n.reused, 0) AS nodes_reused,"
            " coalesce(c.calls, 0) AS calls"
            " FROM runs r"
            " LEFT JOIN (SELECT run_id, count(*) FILTER (WHERE status = 'failed') AS failed,"
            "   count(*) FILTER (WHERE reused_from IS NOT NULL) AS reused"
            "   FROM node_executions GROUP BY run_id) n ON n.run_id = r.run_id"
            " LEFT JOIN (SELECT run_id, count(*) AS calls FROM model_calls GROUP BY run_id) c"
            "   ON c.run_id = r.run_id"
            f" {where} ORDER BY r.started_at",
            params,
        )


def _json_object(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_prompt(prompt: str | None) -> list[dict[str, str]]:
    """Stored prompts are chat messages as JSON; older or raw ones become one user message."""
    if not prompt:
        return []
    try:
        messages = json.loads(prompt)
    except json.JSONDecodeError:
        return [{"role": "user", "content": prompt}]
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in messages
        ]
    return [{"role": "user", "content": prompt}]


def output_diff(
    before: str | None, after: str | None, *, names: tuple[str, str] = ("a", "b")
) -> str:
    """A unified diff of two node outputs, one diff line per text line ("" when equal).

    ``difflib`` keeps each line's own line end, so a last line without one ran into the next
    diff line ("-old+new" on one line); lines are split without their ends and joined here.
    """
    lines = difflib.unified_diff(
        (before or "").splitlines(),
        (after or "").splitlines(),
        fromfile=names[0],
        tofile=names[1],
        lineterm="",
    )
    return "\n".join(lines)


def _tokens(run: dict[str, Any]) -> int:
    return int((run.get("input_tokens") or 0) + (run.get("output_tokens") or 0))


def _duration(run: dict[str, Any]) -> float | None:
    start, end = run.get("started_at"), run.get("finished_at")
    if start is None or end is None or pd.isna(end):
        return None
    return (end - start).total_seconds()


def _count(frame: pd.DataFrame, column: str) -> int:
    return int(frame[column].notna().sum()) if not frame.empty else 0


def _total_row(what: str, a: Any, b: Any) -> dict[str, Any]:
    a = None if a is None or pd.isna(a) else float(a)
    b = None if b is None or pd.isna(b) else float(b)
    delta = None if a is None or b is None else b - a
    change = None if delta is None or not a else delta / a
    return {"measure": what, "run_a": a, "run_b": b, "delta": delta, "change": change}
