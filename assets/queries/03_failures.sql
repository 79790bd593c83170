-- title: Failed nodes and calls, newest first
-- Reads node_executions and model_calls rather than the spans view (see the first example):
-- the same rows as its node and call spans whose status_code is ERROR, 10 times faster.
SELECT start_time, run_id, node_id, span_kind, name, status, status_message
FROM (
    SELECT coalesce(started_at, finished_at) AS start_time, run_id, node_id,
           'node' AS span_kind, 'invoke_agent ' || coalesce(title, node_id) AS name, status,
           coalesce(error, 'suspect: ' || suspect, note) AS status_message
    FROM node_executions
    WHERE status IN ('failed', 'interrupted')
    UNION ALL
    SELECT started_at, run_id, node_id, 'call', 'chat ' || coalesce(model, ''), status, error
    FROM model_calls
    WHERE status = 'error'
)
ORDER BY start_time DESC
LIMIT 100
