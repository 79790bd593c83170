"""``TraceStore``: opening the DuckDB file (waiting out another process's lock), migrating it,
reading runs, nodes and calls, one-off writes, interrupted runs, and the call-cache lookup."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from engine.errors import TraceStoreError
from engine.run.call_cache import CachedCall
from engine.run.events import BudgetUpdate, Event, ModelCallFinished, NodeProgress
from storage.traces import annotations as annotation_rows
from storage.traces.file_keeper import ask_for_file, keeper_for
from storage.traces.labels import RunLabel, get_labels, set_label
from storage.traces.liveness import dead_runs, mark_interrupted
from storage.traces.rows import WriterState, collapse
from storage.traces.schema import MIGRATIONS
from storage.traces.sharing import live_writers
from storage.traces.sink import Sink
from storage.traces.writer import TraceWriter

#: Cache lookups send at most this many keys per query (a resumed 1000-node run asks for many).
LOOKUP_CHUNK = 500


def _is_lock_conflict(exc: BaseException) -> bool:
    """Whether opening may succeed in a moment: another process holds the file's lock, or
    (in this process) a connection on another thread is closing the database's last handle
    while this one opens it, which DuckDB answers "Unique file handle conflict"."""
    text = str(exc).lower()
    if isinstance(exc, duckdb.IOException):
        return "lock" in text
    return isinstance(exc, duckdb.Error) and "unique file handle conflict" in text


def _newer(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Whether lookup row ``row`` finished after ``other`` (unknown times are oldest; the call
    id breaks ties, so the answer never depends on scan order)."""

    def age(r: tuple[Any, ...]) -> tuple[bool, float, str]:
        return (r[7] is not None, r[7].timestamp() if r[7] is not None else 0.0, r[1])

    return age(row) > age(other)


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
        """A migrated connection of its own the caller must close; waits while another process
        holds the file (asking it for the file) and raises ``TraceStoreError`` (naming the
        file) when it stays locked or is not a DuckDB database. Reads and writes use
        ``connect()``, which borrows from the process's kept-open connection instead."""
        retrying = Retrying(
            retry=retry_if_exception(_is_lock_conflict),
            stop=stop_after_delay(self.lock_wait_s),
            # Short waits: the holder hands the file over within a few ms of being asked, and
            # a failed open costs well under a millisecond.
            wait=wait_random_exponential(multiplier=0.005, max=0.04),
            # Ask the holder for the file each time (``storage.traces.file_keeper``).
            before_sleep=lambda _state: ask_for_file(self.path),
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
        """A connection for a few statements, borrowed from the process's ``FileKeeper``
        (microseconds while this process holds the file; otherwise it opens it, waiting while
        another process holds it)."""
        keeper = keeper_for(self.file_id)
        con = keeper.borrow(self.open_connection)
        try:
            if not self._migrated:  # the file was opened by another store object
                self._ensure_schema(con)
            yield con
        finally:
            keeper.give_back(con)

    def release(self) -> bool:
        """Close this process's hold on the file now (it also lets go when idle, or when
        another process asks); False when a connection stayed borrowed too long."""
        self._sync_writers()
        return keeper_for(self.file_id).release()

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

    def insert_whole(
        self, what: str, rows: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Any]]]]
    ) -> None:
        """Insert a run recorded whole (a planner action, playground variants) in one
        transaction: ``rows`` are ``(table, columns, values per row)``, in order; a failure
        leaves nothing and raises ``TraceStoreError`` naming ``what`` and the store."""
        try:
            with self.connect() as con:
                con.execute("BEGIN")
                try:
                    for table, columns, values in rows:
                        if values:
                            marks = ", ".join("?" for _ in columns)
                            con.executemany(
                                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                values,
                            )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except TraceStoreError:
            raise
        except Exception as exc:  # duckdb's own errors: name the store
            raise TraceStoreError(
                f"Could not record the {what} in the trace store {self.path}: {exc}"
            ) from exc

    def ensure_migrated(self) -> None:
        """Create or migrate the file unless this store object has done so already."""
        if not self._migrated:
            with self.connect():
                pass

    def schema_version(self) -> int:
        with self.connect() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        assert row is not None  # an aggregate answers one row
        version: int = row[0] or 0
        return version

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
                Sink(con).write(rows)
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
            return mark_interrupted(con, run_ids, reason)

    def interrupted_runs(self, *, mark: bool = True) -> list[dict[str, Any]]:
        """Runs left ``running`` by a process that is gone, newest first; marks them
        ``interrupted`` unless ``mark`` is False.

        A run's process is looked up by ``runs.pid`` on this host (the store is a local file,
        so the runner was local too). Rows without a pid (written before schema v2) that are
        still ``running`` count as interrupted.
        """
        self._sync_writers()
        with self.connect() as con:
            dead = dead_runs(con)
            if mark:
                mark_interrupted(con, dead)
        if not dead:
            return []
        return [r for r in self.runs(sync=False, detect=False) if r["run_id"] in set(dead)]

    @classmethod
    def mark_dead_runs(cls, con: duckdb.DuckDBPyConnection) -> int:
        """On an open connection: mark runs whose process is gone ``interrupted`` (what
        ``runs()`` does first), so every reader shows the same status. Returns how many."""
        return mark_interrupted(con, dead_runs(con))

    # -- the call cache ----------------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> dict[str, CachedCall]:
        """The newest successful recorded call for each key that has one (``CallCache``).

        Failed and cancelled calls are never reused. Sees everything committed, by any process,
        and every successful call this process's writers have queued but not committed yet
        (so a run's calls are reusable the moment they finish, committed or not).
        """
        wanted = list(dict.fromkeys(key for key in keys if key))
        if not wanted:
            return {}
        newest: dict[str, tuple[Any, ...]] = {}
        try:
            self._lookup_into(newest, wanted)
        except duckdb.Error as exc:
            raise TraceStoreError(f"Cannot look up cached calls in {self.path}: {exc}") from exc
        found = {
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
        found.update(self._uncommitted(wanted))
        return found

    def _uncommitted(self, wanted: list[str]) -> dict[str, CachedCall]:
        """Successful calls this process's writers queued and have not committed yet: newer
        than anything in the file, so they win (an evaluation's runs do not wait for their
        commits, ``TraceWriter(sync_finish=False)``)."""
        newest: dict[str, ModelCallFinished] = {}
        for writer in live_writers(self.file_id):
            for key in wanted:
                event = writer.uncommitted_call(key)
                if event is not None and (
                    key not in newest or event.finished_at > newest[key].finished_at
                ):
                    newest[key] = event
        return {
            key: CachedCall(
                call_id=event.call_id,
                run_id=event.run_id,
                output=event.output or "",
                input_tokens=event.input_tokens or 0,
                output_tokens=event.output_tokens or 0,
                finish_reason=event.finish_reason,
            )
            for key, event in newest.items()
        }

    def _lookup_into(self, newest: dict[str, tuple[Any, ...]], wanted: list[str]) -> None:
        with self.connect() as con:
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
        for writer in live_writers(self.file_id):
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
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, optionally only one session's, with node counts.

        With ``detect`` (the default), runs left ``running`` by a process that is gone are
        marked ``interrupted`` first, so every reader sees the same status. Tokens and cost
        come from the ``run_totals`` view: a run still running has the sums over its nodes so
        far. ``nodes_done``
        counts nodes that finished with an output (``nodes_reused`` of them came from the
        cache); ``nodes_recorded`` counts every node row, whatever its status. ``origin`` says
        where an imported run came from; ``resumed_by`` names the run that resumed this one.
        ``kinds`` keeps only runs of those kinds (``schema.RUN_KINDS``: ``("execution",)`` for
        plan executions, leaving out planner actions); None lists every kind.
        """
        if sync:
            self._sync_writers()
        clauses: list[str] = []
        params: list[Any] = []
        if session_id:
            clauses.append("r.session_id = ?")
            params.append(session_id)
        if kinds is not None:
            clauses.append("coalesce(r.kind, 'execution') IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(kinds))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        limit_sql = f" LIMIT {int(limit)}" if limit is not None else ""
        with self.connect() as con:
            if detect:
                mark_interrupted(con, dead_runs(con))
            cursor = con.execute(
                "SELECT r.run_id, r.session_id, r.task, r.status, r.stop_reason,"
                " t.input_tokens, t.output_tokens, t.cost_usd, r.started_at, r.finished_at,"
                " r.answer, r.resumed_from, r.pid, r.origin, r.kind,"
                " r.forked_from, r.forked_at_node, r.paused_node,"
                " coalesce(n.done, 0) AS nodes_done,"
                " (SELECT min(x.run_id) FROM runs x WHERE x.resumed_from = r.run_id) AS resumed_by,"
                " coalesce(n.reused, 0) AS nodes_reused, coalesce(n.total, 0) AS nodes_recorded"
                " FROM runs r JOIN run_totals t ON t.run_id = r.run_id"
                " LEFT JOIN (SELECT run_id, count(*) AS total,"
                "   count(*) FILTER (WHERE status = 'done') AS done,"
                "   count(*) FILTER (WHERE status = 'done' AND reused_from IS NOT NULL) AS reused"
                "   FROM node_executions GROUP BY run_id) n ON n.run_id = r.run_id"
                f" {where} ORDER BY r.started_at DESC{limit_sql}",
                params,
            )
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row plus ``resumed_by``: the run that resumed it, if any."""
        rows = self._rows(
            "SELECT r.*, (SELECT min(x.run_id) FROM runs x WHERE x.resumed_from = r.run_id)"
            " AS resumed_by FROM runs r WHERE r.run_id = ?",
            [run_id],
        )
        return rows[0] if rows else None

    def node_executions(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT node_id, title, model, status, input_tokens, output_tokens, cost_usd,"
            " started_at, finished_at, output, error, reused_from, strategy, samples, agreement,"
            " token_cap, cost_cap_usd, note, suspect, pinned FROM node_executions"
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

    # -- annotations (``storage.traces.annotations``) ----------------------------------------
    def add_annotation(
        self,
        run_id: str,
        node_id: str | None = None,
        *,
        label: str,
        call_id: str | None = None,
        score: float | None = None,
        note: str | None = None,
        corrected_output: str | None = None,
    ) -> dict[str, Any]:
        """Label a run (``node_id`` None), a node's output or one call good or bad; returns
        the stored row. Unknown ids, a bad label or a score out of range: ``TraceStoreError``."""
        self._sync_writers()  # a node finished a moment ago must be there to be annotated
        with self.connect() as con:
            return annotation_rows.insert_annotation(
                con,
                run_id,
                node_id,
                label=label,
                call_id=call_id,
                score=score,
                note=note,
                corrected_output=corrected_output,
            )

    def annotations(self, run_id: str) -> list[dict[str, Any]]:
        """The run's annotations, oldest first."""
        with self.connect() as con:
            return annotation_rows.select_annotations(con, run_id)

    def delete_annotation(self, annotation_id: str) -> bool:
        """Remove one annotation; False when there was none with that id."""
        with self.connect() as con:
            row = con.execute(
                "DELETE FROM annotations WHERE annotation_id = ? RETURNING annotation_id",
                [annotation_id],
            ).fetchone()
        return row is not None

    def label_run(
        self, run_id: str, *, name: str | None = None, tags: Sequence[str] | None = None
    ) -> RunLabel:
        """Name and/or tag a run (``storage.traces.labels``: None keeps that part, "" or []
        clears it); an unknown run raises ``TraceStoreError``."""
        self._sync_writers()
        with self.connect() as con:
            return set_label(con, run_id, name=name, tags=tags)

    def call_seconds(self, models: Sequence[str]) -> dict[str, tuple[float, int]]:
        """Median seconds per model call and how many calls that rests on, by model label:
        successful calls made here (not replayed from the cache, not imported)."""
        rows = self._rows(
            "SELECT model, median(latency_s) AS seconds, count(*) AS calls FROM model_calls"
            " WHERE model IN (SELECT unnest(?::VARCHAR[])) AND status = 'ok'"
            " AND reused_from IS NULL AND NOT coalesce(imported, false)"
            " AND latency_s IS NOT NULL GROUP BY model",
            [list(models)],
            sync=False,  # an estimate needs no read-your-writes: never wait on a live run
        )
        return {row["model"]: (float(row["seconds"]), int(row["calls"])) for row in rows}

    def run_labels(self, run_ids: Sequence[str] | None = None) -> dict[str, RunLabel]:
        """Names and tags of ``run_ids`` (every labelled run when None), by run id."""
        with self.connect() as con:
            return get_labels(con, run_ids)


__all__ = ["LOOKUP_CHUNK", "TraceStore"]
