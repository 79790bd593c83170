-- title: The 20 slowest model calls
SELECT run_id, node_id, arbor_role AS role, gen_ai_request_model AS model,
       round(epoch(end_time - start_time), 3) AS latency_s,
       gen_ai_usage_output_tokens AS output_tokens, status
FROM spans
WHERE span_kind = 'call'
ORDER BY latency_s DESC
LIMIT 20
