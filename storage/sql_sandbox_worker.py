"""The SQL console's sandbox: one query, in its own process, on a locked-down DuckDB.

Run as a script by ``storage.sql_console`` (``python -I sql_sandbox_worker.py``) with an empty
environment, so even a query that escaped every other limit would find no API key to read.
It imports nothing from Arbor. The request comes as JSON on stdin; the rows go back as an
Arrow IPC stream on stdout; a failure is one JSON line on stderr and exit status 2.

The engine holds the line, not a list of names: the store is attached read-only, then
``enable_external_access`` is switched off (no files, no network, no ATTACH, no COPY, no
extension installs) and the configuration is locked so the query cannot switch it back.
Extensions are never auto-installed or auto-loaded, and memory and threads are capped.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import NoReturn

import duckdb
import pyarrow as pa

SANDBOX_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "threads": 2,
}


def _fail(kind: str, message: str) -> NoReturn:
    sys.stderr.write(json.dumps({"kind": kind, "message": message}) + "\n")
    sys.exit(2)


def _attach(con: duckdb.DuckDBPyConnection, path: str, wait_s: float) -> None:
    """Attach the store read-only, waiting while another process writes to it."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            con.execute("ATTACH ? AS store (READ_ONLY)", [path])
            con.execute("USE store")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                _fail("store", f"Cannot open the trace store: {str(exc).splitlines()[0]}")
            # Ask the holder for the file, as ``storage.traces.file_keeper`` does (this script
            # imports nothing of Arbor's, so the request file's name is spelled out here).
            with contextlib.suppress(OSError):
                open(path + ".wanted", "a").close()
            time.sleep(delay)
            delay = min(delay * 2, 0.04)


def main() -> None:
    # Everything that does not depend on the query happens before it arrives: the console
    # starts this process ahead of time (``_SandboxProcesses``), and DuckDB's first connection
    # in a process costs about 30 ms. The memory limit comes as the first argument for that.
    con = duckdb.connect(":memory:", config={**SANDBOX_CONFIG, "memory_limit": sys.argv[1]})
    request = json.loads(sys.stdin.read())
    _attach(con, request["path"], request["lock_wait_s"])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")

    timer = threading.Timer(request["timeout_s"], con.interrupt)
    timer.start()
    try:
        reader = con.execute(request["sql"], request["values"] or None).to_arrow_reader(1024)
        if reader is None:  # only a statement without a result; the console runs SELECTs
            _fail("query", "The query returned no result.")
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > request["max_rows"]:
                break
        schema = reader.schema
    except duckdb.InterruptException:
        _fail("timeout", f"The query ran longer than {request['timeout_s']:g} s and was stopped.")
    except duckdb.Error as exc:
        _fail("query", f"The query failed: {str(exc).splitlines()[0]}")
    finally:
        timer.cancel()
    table = pa.Table.from_batches(batches, schema=schema).slice(0, request["max_rows"] + 1)
    with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as stream:
        stream.write_table(table)
    sys.stdout.flush()
    # Nothing to clean up (an in-memory database, the store attached read-only); skipping the
    # interpreter's teardown saves about 20 ms per query.
    os._exit(0)


if __name__ == "__main__":
    main()
