"""Evaluation reports in the trace store: one ``evaluations`` row, one result row per attempt.

Reports live next to the runs they made (``evaluation_results.run_id``), so SQL can join an
answer to its trace. The summary (per-configuration metrics, frontiers, and whatever the caller
adds, e.g. a search's trials) is JSON; JSON cannot hold infinity, so an infinite value (the
cost-of-pass of a configuration that never passed) is written as ``null`` with a sibling flag
``<key>_inf: true``, and ``load_summary`` turns it back into ``math.inf``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from engine.tune.evaluation import EvaluationReport
from storage.traces import TraceStore

INF_FLAG_SUFFIX = "_inf"
EVALUATION_COLUMNS = (
    "evaluation_id",
    "session_id",
    "kind",
    "dataset",
    "checker_json",
    "status",
    "created_at",
    "finished_at",
    "summary_json",
)
RESULT_COLUMNS = (
    "evaluation_id",
    "configuration",
    "example_id",
    "run_id",
    "correct",
    "output",
    "expected",
    "detail",
    "tokens",
    "cost_usd",
    "latency_s",
    "replayed",
)


def encode_json(value: Any) -> Any:
    """``value`` with every non-finite float of a dict as ``None`` plus a ``<key>_inf`` flag
    (``True`` for +inf, ``"-"`` for -inf); NaN, and non-finite floats in lists, become None."""
    if isinstance(value, dict):
        encoded: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, float) and math.isinf(item):
                encoded[key] = None
                encoded[f"{key}{INF_FLAG_SUFFIX}"] = True if item > 0 else "-"
            else:
                encoded[key] = encode_json(item)
        return encoded
    if isinstance(value, list | tuple):
        return [encode_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _restored(value: dict[str, Any], flag_key: str, flags: dict[str, Any]) -> bool:
    base = flag_key[: -len(INF_FLAG_SUFFIX)]
    return base in flags and base in value and value[base] is None


def decode_json(value: Any) -> Any:
    """The inverse of ``encode_json`` for dicts: flagged ``None`` values become ±inf again."""
    if isinstance(value, dict):
        flags = {
            key[: -len(INF_FLAG_SUFFIX)]: flag
            for key, flag in value.items()
            if key.endswith(INF_FLAG_SUFFIX) and flag in (True, "-")
        }
        decoded: dict[str, Any] = {}
        for key, item in value.items():
            if item is None and key in flags:
                decoded[key] = math.inf if flags[key] is True else -math.inf
            elif key.endswith(INF_FLAG_SUFFIX) and _restored(value, key, flags):
                continue  # the flag of a value restored above
            else:
                decoded[key] = decode_json(item)
        return decoded
    if isinstance(value, list):
        return [decode_json(item) for item in value]
    return value


def summary_of(report: EvaluationReport, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary_json`` holds: configurations' metrics, both frontiers, the run's error."""
    return {
        "evaluation_id": report.evaluation_id,
        "dataset": report.dataset,
        "status": report.status,
        "error": report.error,
        "configurations": report.rows(),
        "by_difficulty": report.level_rows(),
        "frontier": {"usd": report.frontier("usd"), "tokens": report.frontier("tokens")},
        "extra": extra or {},
    }


def save_report(
    store: TraceStore,
    report: EvaluationReport,
    *,
    session_id: str | None = None,
    kind: str = "evaluation",
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``report`` (replacing an earlier save of the same id) in one transaction.

    ``kind`` is ``evaluation`` or ``search``; ``extra`` goes into the summary as it is
    (JSON-serialisable, e.g. a search's trials). Saving a running evaluation again as it goes
    is fine: the rows are replaced.
    """
    summary = json.dumps(encode_json(summary_of(report, extra)), ensure_ascii=False)
    evaluation = (
        report.evaluation_id,
        session_id,
        kind,
        report.dataset,
        report.checker.model_dump_json(),
        report.status,
        report.started_at,
        report.finished_at,
        summary,
    )
    results = [
        (
            report.evaluation_id,
            outcome.configuration,
            outcome.example_id,
            outcome.run_id,
            outcome.correct,
            outcome.output,
            outcome.expected,
            outcome.detail,
            outcome.tokens,
            outcome.cost_usd,
            outcome.latency_s,
            outcome.replayed,
        )
        for outcome in report.outcomes()
    ]
    with store.connect() as con:
        con.execute("BEGIN")
        try:
            con.execute(
                "DELETE FROM evaluation_results WHERE evaluation_id = ?", [report.evaluation_id]
            )
            con.execute("DELETE FROM evaluations WHERE evaluation_id = ?", [report.evaluation_id])
            con.execute(
                f"INSERT INTO evaluations ({', '.join(EVALUATION_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(EVALUATION_COLUMNS))})",
                list(evaluation),
            )
            if results:
                con.executemany(
                    f"INSERT INTO evaluation_results ({', '.join(RESULT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})",
                    [list(row) for row in results],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def list_evaluations(store: TraceStore) -> list[dict[str, Any]]:
    """Every saved evaluation, newest first, with its counts of results and correct answers."""
    with store.connect() as con:
        rows = con.execute(
            """
            SELECT e.evaluation_id, e.session_id, e.kind, e.dataset, e.status,
                   e.created_at, e.finished_at,
                   count(r.example_id) AS results,
                   count(DISTINCT r.configuration) AS configurations,
                   count(*) FILTER (WHERE r.correct) AS correct
            FROM evaluations e
            LEFT JOIN evaluation_results r USING (evaluation_id)
            GROUP BY ALL
            ORDER BY e.created_at DESC, e.evaluation_id
            """
        )
        names = [column[0] for column in rows.description]
        return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def load_summary(store: TraceStore, evaluation_id: str) -> dict[str, Any] | None:
    """The saved summary of ``evaluation_id`` (infinities restored) with its stored fields
    ``kind``, ``session_id``, ``checker``, ``created_at`` and ``finished_at``; None if unknown."""
    with store.connect() as con:
        row = con.execute(
            "SELECT summary_json, kind, session_id, checker_json, created_at, finished_at, status "
            "FROM evaluations WHERE evaluation_id = ?",
            [evaluation_id],
        ).fetchone()
    if row is None:
        return None
    summary_json, kind, session_id, checker_json, created_at, finished_at, status = row
    summary = decode_json(json.loads(summary_json)) if summary_json else {}
    summary.update(
        kind=kind,
        session_id=session_id,
        checker=json.loads(checker_json) if checker_json else None,
        created_at=created_at,
        finished_at=finished_at,
        status=status,
    )
    return summary


def load_results(store: TraceStore, evaluation_id: str) -> list[dict[str, Any]]:
    """Result rows of ``evaluation_id`` in the order they were saved (configuration by
    configuration, examples in dataset order)."""
    with store.connect() as con:
        rows = con.execute(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM evaluation_results "
            "WHERE evaluation_id = ? ORDER BY rowid",
            [evaluation_id],
        )
        return [dict(zip(RESULT_COLUMNS, row, strict=True)) for row in rows.fetchall()]


__all__ = [
    "decode_json",
    "encode_json",
    "list_evaluations",
    "load_results",
    "load_summary",
    "save_report",
    "summary_of",
]
