"""One run's spans for a flame graph: run, nodes, samples and calls with their parents, times
from the run's start, tokens and cost (``flame_spans``).

``TraceQueries.timeline`` leaves sample spans out (a Gantt chart shows their calls); a flame
graph nests by them, so it reads the ``spans`` view whole.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from engine.errors import TraceStoreError
from storage.traces import TraceStore

FLAME_SQL = """
WITH origin AS (SELECT started_at FROM runs WHERE run_id = $1)
SELECT s.span_kind, s.span_id, s.parent_span_id, s.node_id, s.call_id, s.sample_index, s.name,
       CASE WHEN s.span_kind = 'run' THEN s.gen_ai_agent_name
            ELSE coalesce(x.title, s.node_id) END AS title,
       s.gen_ai_request_model AS model, s.status, s.arbor_role AS role,
       epoch(s.start_time - o.started_at) AS start_s,
       epoch(s.end_time - o.started_at) AS end_s,
       coalesce(s.gen_ai_usage_input_tokens, 0) AS input_tokens,
       coalesce(s.gen_ai_usage_output_tokens, 0) AS output_tokens,
       coalesce(s.arbor_cost_usd, 0) AS cost_usd
FROM spans s CROSS JOIN origin o
LEFT JOIN node_executions x ON x.run_id = s.run_id AND x.node_id = s.node_id
WHERE s.run_id = $1 AND s.start_time IS NOT NULL
ORDER BY s.start_time, s.span_kind
"""


def flame_spans(store: TraceStore, run_id: str) -> pd.DataFrame:
    """Every span of run ``run_id`` with a start time; raises ``TraceStoreError`` for an
    unknown run."""
    store.sync()
    try:
        with store.connect() as con:
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
                raise TraceStoreError(f"No run {run_id!r} in the trace store {store.path}.")
            cursor = con.execute(FLAME_SQL, [run_id])
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
    except duckdb.Error as exc:
        raise TraceStoreError(f"Cannot read the spans of run {run_id!r}: {exc}") from exc


__all__ = ["FLAME_SQL", "flame_spans"]
