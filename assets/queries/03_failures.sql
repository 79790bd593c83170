-- title: Failed nodes and calls, newest first
SELECT start_time, run_id, node_id, span_kind, name, status, status_message
FROM spans
WHERE status_code = 'ERROR' AND span_kind IN ('node', 'call')
ORDER BY start_time DESC
LIMIT 100
