-- title: The 20 slowest model calls
-- Reads model_calls rather than the spans view (see the first example), 10 times faster.
SELECT run_id, node_id, role, model, round(latency_s, 3) AS latency_s, output_tokens, status
FROM model_calls
ORDER BY latency_s DESC
LIMIT 20
