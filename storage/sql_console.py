"""A read-only SQL console over the trace store, and the queries saved for it.

The analyst may type any query, so the console decides what may run, not the query's author:
exactly one statement, and it must be a SELECT (DuckDB's own parser says so, not a regex);
functions that reach outside the store (files, environment variables, secrets) are refused,
because a shared screen or a pasted query must not read an API key out of the environment.
The statement runs in a sandbox process (``run_sandboxed``): a DuckDB with the store
attached read-only, external access off and its configuration locked, an empty environment,
a memory cap, a row limit and a time limit. The name check is a courtesy that explains the
common refusals; the sandbox is what holds.

Saved queries: the examples shipped in ``assets/queries/*.sql`` (first line ``-- title: ...``)
and the analyst's own, kept in ``queries.json`` in the data directory.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from assets import asset_path
from engine.errors import QueryRefused, TraceStoreError
from storage.traces import TraceStore

EXAMPLES_DIR = asset_path("queries")
#: The in-memory database that parses console queries for the friendly check (no data in it).
_parser = duckdb.connect()
_parser_lock = threading.Lock()

#: Functions that read files, the network, the environment or secrets. Matched on the parsed
#: query's function names (scalar and table functions alike), by prefix where a family exists.
REFUSED_FUNCTIONS = ("getenv", "glob", "query", "query_table", "sniff_csv", "which_secret")
REFUSED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "duckdb_secrets", "load_")


@dataclass
class QueryResult:
    frame: pd.DataFrame
    truncated: bool
    elapsed_ms: float


@dataclass(frozen=True)
class SavedQuery:
    title: str
    sql: str
    example: bool  # shipped with Arbor (cannot be deleted)


def check_read_only(sql: str) -> str:
    """The one SELECT in ``sql``, stripped; raises ``QueryRefused`` for anything else."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryRefused("The query is empty.")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryRefused(f"The query does not parse: {exc}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"One statement at a time, please (found {len(statements)}).")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(
            f"The console is read-only: a {kind.name} statement is not run. Use SELECT (or WITH)."
        )
    with _parser_lock:  # an in-memory database only parses here; opening one costs 20 ms
        row = _parser.execute("SELECT json_serialize_sql(?)", [text]).fetchone()
    assert row is not None  # a SELECT without FROM answers one row
    tree = row[0]
    names = set(re.findall(r'"function_name":"([^"]+)"', tree))
    refused = sorted(
        name
        for name in names
        if name.lower() in REFUSED_FUNCTIONS or name.lower().startswith(REFUSED_PREFIXES)
    )
    # A quoted path in FROM ('x.csv') is a replacement scan: DuckDB reads the file.
    refused += sorted(
        repr(name)
        for name in set(re.findall(r'"table_name":"([^"]+)"', tree))
        if any(mark in name for mark in ("/", "\\\\", "."))
    )
    if refused:
        raise QueryRefused(
            f"The console only reads the trace store; {', '.join(refused)} reaches outside it."
        )
    return text


#: The sandbox process: a script, so it runs with no Arbor import and an empty environment.
SANDBOX_WORKER = Path(__file__).resolve().with_name("sql_sandbox_worker.py")
#: Memory a console query may use inside DuckDB (the sandbox's own setting).
SANDBOX_MEMORY_LIMIT = "512MB"
#: Seconds the sandbox process gets beyond the query's own limit (start-up, attach, exit).
SANDBOX_GRACE_S = 20.0


#: Values a console query may name (``$latest_run``): bound as parameters, never pasted into
#: the text. A filter on a run id the planner knows is pushed into each table of the spans
#: view (the span tree of one run: 6-8 ms over a million spans); the same filter on a subquery
#: is not, and scans every span (300+ ms).
NAMED_VALUES = {
    "latest_run": "the newest plan execution's run id",
    "previous_run": "the run id of the execution before it",
}


def named_values(store: TraceStore, text: str) -> dict[str, str]:
    """The named values ``text`` uses (``$name``), from the store; ``QueryRefused`` for an
    unknown name or one the store has no value for."""
    used = set(re.findall(r"\$([A-Za-z_]\w*)", text))
    if not used:
        return {}
    unknown = sorted(used - set(NAMED_VALUES))
    if unknown:
        known = ", ".join(f"${name} ({what})" for name, what in NAMED_VALUES.items())
        raise QueryRefused(f"Unknown value ${unknown[0]}; the console fills in {known}.")
    with store.connect() as con:
        newest = [
            row[0]
            for row in con.execute(
                "SELECT run_id FROM runs WHERE coalesce(kind, 'execution') = 'execution'"
                " ORDER BY started_at DESC LIMIT 2"
            ).fetchall()
        ]
    found = dict(zip(("latest_run", "previous_run"), newest, strict=False))
    missing = sorted(used - set(found))
    if missing:
        raise QueryRefused(f"${missing[0]} has no value: the store has too few runs.")
    return {name: found[name] for name in used}


def run_read_only(
    store: TraceStore, sql: str, *, max_rows: int = 1000, timeout_s: float = 10.0
) -> QueryResult:
    """Run one checked SELECT; at most ``max_rows`` rows, interrupted after ``timeout_s``.

    The name check above gives friendly refusals; the boundary is the sandbox: the query runs
    in a separate process (``sql_sandbox_worker.py``) with an empty environment, on a DuckDB
    that attached the store read-only and then turned external access off and locked its
    configuration, so no file, network, extension or setting can be reached from SQL.
    """
    text = check_read_only(sql)
    store.sync()
    values = named_values(store, text)
    store.ensure_migrated()  # migrate here: the sandbox only reads
    # The sandbox opens the file in its own process: let go of it now rather than be asked.
    store.release()
    started = time.perf_counter()
    table = run_sandboxed(
        store.path,
        text,
        max_rows=max_rows,
        timeout_s=timeout_s,
        lock_wait_s=store.lock_wait_s,
        values=values,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = table.num_rows > max_rows
    frame = pd.DataFrame.from_records(
        table.slice(0, max_rows).to_pylist(), columns=table.column_names
    )
    return QueryResult(frame, truncated, elapsed_ms)


class _SandboxProcesses:
    """Sandbox processes started one query ahead. Starting Python and importing DuckDB and
    pyarrow costs about 180 ms here, most of a console query; a spare process that has done so
    while the analyst was typing answers in the time of the query itself (plus opening the
    file). Each process still runs exactly one query and exits: nothing of one query's session
    reaches the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-I", str(SANDBOX_WORKER), SANDBOX_MEMORY_LIMIT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},  # nothing to leak: keys live in Arbor's environment, not the sandbox's
        )

    def take(self) -> subprocess.Popen[bytes]:
        """A started sandbox process for one query; starts the next query's spare."""
        with self._lock:
            process, self._spare = self._spare, None
            if process is not None and process.poll() is not None:
                process.communicate()  # died while waiting (killed): reap it, start another
                process = None
            if process is None:
                process = self._start()
            self._spare = self._start()
            return process

    def close(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
            spare.communicate()


_sandboxes = _SandboxProcesses()


def run_sandboxed(
    path: Path | str,
    sql: str,
    *,
    max_rows: int = 1000,
    timeout_s: float = 10.0,
    lock_wait_s: float = 15.0,
    values: dict[str, str] | None = None,
) -> pa.Table:
    """Run ``sql`` unchecked in the sandbox process over the store at ``path`` (tests call
    this directly to show the sandbox holds without the name check); up to ``max_rows + 1``
    rows. Raises ``QueryRefused`` with the sandbox's one-line reason."""
    request = {
        "path": str(Path(path).resolve()),
        "sql": sql,
        "values": values or {},
        "max_rows": max_rows,
        "timeout_s": timeout_s,
        "lock_wait_s": lock_wait_s,
    }
    process = _sandboxes.take()
    try:
        stdout, stderr = process.communicate(
            json.dumps(request).encode(), timeout=timeout_s + lock_wait_s + SANDBOX_GRACE_S
        )
    except subprocess.TimeoutExpired as exc:
        process.kill()
        process.communicate()
        raise QueryRefused(f"The query ran longer than {timeout_s:g} s and was stopped.") from exc
    if process.returncode != 0:
        raise QueryRefused(_sandbox_failure(stderr, process.returncode))
    try:
        return pa.ipc.open_stream(stdout).read_all()
    except pa.ArrowInvalid as exc:
        raise QueryRefused(f"The query's result could not be read back: {exc}") from exc


def _sandbox_failure(stderr: bytes, returncode: int) -> str:
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    try:
        return str(json.loads(last[0])["message"])
    except (ValueError, KeyError, TypeError):
        return f"The query's process ended with status {returncode}: {last[0][:300]}"


class SavedQueries:
    """The shipped examples plus the analyst's own queries (``queries.json`` in ``root``)."""

    def __init__(self, root: Path | str):
        self.path = Path(root) / "queries.json"

    @staticmethod
    def examples() -> list[SavedQuery]:
        queries = []
        for path in sorted(EXAMPLES_DIR.glob("*.sql")):
            text = path.read_text(encoding="utf-8")
            first, _, rest = text.partition("\n")
            title = (
                first.removeprefix("-- title:").strip()
                if first.startswith("-- title:")
                else path.stem
            )
            queries.append(
                SavedQuery(title, rest.strip() if first.startswith("--") else text.strip(), True)
            )
        return queries

    def _own(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceStoreError(
                f"The saved queries in {self.path} cannot be read ({exc}); the file is left"
                " as it is."
            ) from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise TraceStoreError(f"The saved queries in {self.path} are not a title → SQL map.")
        return data

    def list(self) -> list[SavedQuery]:
        return [*self.examples(), *(SavedQuery(t, q, False) for t, q in self._own().items())]

    def save(self, title: str, sql: str) -> None:
        """Save (or replace) a query under ``title``; it must pass the read-only check."""
        title = title.strip()
        if not title:
            raise QueryRefused("A saved query needs a title.")
        if title in {q.title for q in self.examples()}:
            raise QueryRefused(f"{title!r} is a shipped example; choose another title.")
        text = check_read_only(sql)
        own = self._own()
        own[title] = text
        self._write(own)

    def delete(self, title: str) -> None:
        own = self._own()
        if title not in own:
            raise QueryRefused(f"No saved query titled {title!r}.")
        del own[title]
        self._write(own)

    def _write(self, own: dict[str, str]) -> None:
        partial = self.path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(own, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, self.path)
