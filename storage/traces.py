"""The trace store: every run, node execution and model call, in one DuckDB file.

Schema (version 1), designed to be queried directly::

    runs(run_id, session_id, task, status, stop_reason, answer, input_tokens, output_tokens,
         started_at, finished_at, plan_json, caps_json)
    node_executions(run_id, node_id, title, model, status, output, error, input_tokens,
                    output_tokens, started_at, finished_at)
    model_calls(call_id, run_id, node_id, model, prompt, output, input_tokens, output_tokens,
                latency_s, status, error, started_at, finished_at)

DuckDB lets only one process open a file read-write, and a process that holds it blocks every
other. So connections are short-lived: opened for one write or one query, then closed, and an
open that meets another process's lock is retried for a few seconds. That lets the UI and a
command-line run share the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from engine.errors import TraceStoreError
from engine.events import (
    Event,
    ModelCallFinished,
    NodeFinished,
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


#: Ordered, named migrations; a store records which it has applied. Append, never edit.
MIGRATIONS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    ("create runs, node_executions, model_calls", _create_v1),
]


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class TraceStore:
    """Reads and writes traces in the DuckDB file at ``path``."""

    def __init__(self, path: Path | str, *, lock_wait_s: float = 15.0):
        self.path = Path(path)
        self.lock_wait_s = lock_wait_s
        self._migrated = False
        self._migrate_lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits while another process holds the file."""
        retrying = Retrying(
            retry=retry_if_exception(_is_lock_conflict),
            stop=stop_after_delay(self.lock_wait_s),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        )
        try:
            con = retrying(duckdb.connect, str(self.path))
        except duckdb.Error as exc:
            raise TraceStoreError(f"Cannot open the trace store {self.path}: {exc}") from exc
        try:
            self._ensure_schema(con)
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
                migrate(con)
                con.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name]
                )
                con.execute("COMMIT")
            self._migrated = True

    def schema_version(self) -> int:
        with self.connect() as con:
            return con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0

    # -- writing ---------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Write one event; rows appear as the run happens."""
        with self.connect() as con:
            match event:
                case RunStarted():
                    con.execute(
                        "INSERT INTO runs (run_id, session_id, task, status, started_at, plan_json,"
                        " caps_json) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                        [
                            event.run_id,
                            event.session_id,
                            event.task,
                            event.started_at,
                            event.plan_json,
                            event.caps_json,
                        ],
                    )
                case NodeStarted():
                    con.execute(
                        "INSERT OR REPLACE INTO node_executions (run_id, node_id, title, model,"
                        " status, started_at) VALUES (?, ?, ?, ?, 'running', ?)",
                        [event.run_id, event.node_id, event.title, event.model, event.started_at],
                    )
                case ModelCallFinished():
                    con.execute(
                        "INSERT INTO model_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
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
                            event.error,
                            event.started_at,
                            event.finished_at,
                        ],
                    )
                case NodeFinished():
                    con.execute(
                        "INSERT INTO node_executions (run_id, node_id, title, status, output,"
                        " error, input_tokens, output_tokens, started_at, finished_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (run_id, node_id) DO UPDATE SET status = excluded.status,"
                        " output = excluded.output, error = excluded.error,"
                        " input_tokens = excluded.input_tokens,"
                        " output_tokens = excluded.output_tokens,"
                        " finished_at = excluded.finished_at",
                        [
                            event.run_id,
                            event.node_id,
                            event.title,
                            event.status,
                            event.output,
                            event.error,
                            event.input_tokens,
                            event.output_tokens,
                            event.started_at,
                            event.finished_at,
                        ],
                    )
                case RunFinished():
                    con.execute(
                        "UPDATE runs SET status = ?, stop_reason = ?, answer = ?, input_tokens = ?,"
                        " output_tokens = ?, finished_at = ? WHERE run_id = ?",
                        [
                            event.status,
                            event.stop_reason,
                            event.answer,
                            event.input_tokens,
                            event.output_tokens,
                            event.finished_at,
                            event.run_id,
                        ],
                    )

    __call__ = record  # a TraceStore is itself a run listener

    # -- reading ---------------------------------------------------------------------------
    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self.connect() as con:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def runs(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, optionally only one session's."""
        where, params = ("WHERE session_id = ?", [session_id]) if session_id else ("", [])
        return self._rows(
            "SELECT run_id, session_id, status, stop_reason, input_tokens, output_tokens,"
            f" started_at, finished_at, answer FROM runs {where} ORDER BY started_at DESC",
            params,
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def node_executions(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT node_id, title, model, status, input_tokens, output_tokens, started_at,"
            " finished_at, output, error FROM node_executions WHERE run_id = ?"
            " ORDER BY started_at NULLS LAST, node_id",
            [run_id],
        )

    def model_calls(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT node_id, model, status, input_tokens, output_tokens, latency_s, prompt,"
            " output, error, started_at, call_id FROM model_calls WHERE run_id = ?"
            " ORDER BY started_at",
            [run_id],
        )
