"""A read-only SQL console over the trace store, and the queries saved for it.

The analyst may type any query, so the console decides what may run, not the query's author:
exactly one statement, and it must be a SELECT (DuckDB's own parser says so, not a regex);
functions that reach outside the store (files, environment variables, secrets) are refused,
because a shared screen or a pasted query must not read an API key out of the environment.
The statement runs inside a transaction that is always rolled back, with a row limit and a
time limit (DuckDB's ``interrupt``), on a short-lived connection.

Saved queries: the examples shipped in ``assets/queries/*.sql`` (first line ``-- title: ...``)
and the analyst's own, kept in ``queries.json`` in the data directory.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from engine.errors import TraceStoreError
from storage.traces import TraceStore

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "queries"

#: Functions that read files, the network, the environment or secrets. Matched on the parsed
#: query's function names (scalar and table functions alike), by prefix where a family exists.
REFUSED_FUNCTIONS = ("getenv", "glob", "query", "query_table", "sniff_csv", "which_secret")
REFUSED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "duckdb_secrets", "load_")


class QueryRefused(TraceStoreError):
    """The console does not run this statement; the message says why."""


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
    tree = duckdb.connect().execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0]
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


def run_read_only(
    store: TraceStore, sql: str, *, max_rows: int = 1000, timeout_s: float = 10.0
) -> QueryResult:
    """Run one checked SELECT; at most ``max_rows`` rows, interrupted after ``timeout_s``."""
    text = check_read_only(sql)
    store.sync()
    started = time.perf_counter()
    with store.connect() as con:
        timer = threading.Timer(timeout_s, con.interrupt)
        con.execute("BEGIN TRANSACTION")
        timer.start()
        try:
            cursor = con.execute(text)
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException as exc:
            raise QueryRefused(
                f"The query ran longer than {timeout_s:g} s and was stopped."
            ) from exc
        except duckdb.Error as exc:
            raise QueryRefused(f"The query failed: {exc}") from exc
        finally:
            timer.cancel()
            con.execute("ROLLBACK")
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = len(rows) > max_rows
    frame = pd.DataFrame.from_records(rows[:max_rows], columns=columns)
    return QueryResult(frame, truncated, elapsed_ms)


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
