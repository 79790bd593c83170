"""The trace store: every run, node execution and model call, in one DuckDB file.

DuckDB lets only one process open a file read-write, and a process that holds it blocks every
other. So connections are short-lived: ``TraceStore`` opens one for a write or a query and
closes it, and an open that meets another process's lock is retried for a few seconds.
``TraceWriter`` (the listener a run uses) writes from a background thread in batches, keeps its
connection only while events are flowing and lets go of the file after a short idle period, so
the UI and a command-line run can share the store.

Modules:

- ``schema``: the tables, the ``spans`` and ``run_totals`` views and the numbered migrations
  (``MIGRATIONS``) that build them; the schema is documented there.
- ``store``: ``TraceStore``: opening (waiting out another process's lock), migrating, reading
  runs, nodes and calls, one-off writes, interrupted runs, and the call-cache lookup.
- ``rows``: the column orders the writers use and ``collapse``, which turns a batch of events
  into rows (``WriterState`` is what a writer knows about the store between batches).
- ``sink``: ``Sink``, which writes one batch of rows in one transaction through DuckDB's
  appender.
- ``writer``: ``TraceWriter``, the buffered run listener (background thread, group commit,
  releasing the file when idle), and the exit hook that closes writers left open.
- ``planner_runs``: ``record_planner_run``: a planner action (decompose, expand, re-plan,
  rate, alternatives) as a run of that ``kind``, with every call and candidate plan and its
  scores (``model_calls.detail``); ``planner_calls`` reads them back.
- ``liveness``: ``process_alive`` (boot time, reused pids) and finding and marking runs whose
  process is gone.
- ``sharing``: what stores and writers on one file share in this process: the live writers and
  a kept-open read connection while a writer holds the file.
"""

from storage.traces.liveness import process_alive
from storage.traces.rows import CALL_COLUMNS, NODE_COLUMNS, WriterState, collapse
from storage.traces.schema import MIGRATIONS, RUN_TOTALS_VIEW, SPANS_VIEW
from storage.traces.store import TraceStore
from storage.traces.writer import TraceWriter

__all__ = [
    "CALL_COLUMNS",
    "MIGRATIONS",
    "NODE_COLUMNS",
    "RUN_TOTALS_VIEW",
    "SPANS_VIEW",
    "TraceStore",
    "TraceWriter",
    "WriterState",
    "collapse",
    "process_alive",
]
