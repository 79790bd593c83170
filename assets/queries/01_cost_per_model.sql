-- title: Tokens, cost and latency per model
SELECT gen_ai_request_model AS model,
       count(*) AS calls,
       sum(gen_ai_usage_input_tokens) AS input_tokens,
       sum(gen_ai_usage_output_tokens) AS output_tokens,
       round(sum(arbor_cost_usd), 6) AS cost_usd,
       round(quantile_cont(epoch(end_time - start_time), 0.5), 3) AS median_latency_s,
       round(quantile_cont(epoch(end_time - start_time), 0.95), 3) AS p95_latency_s
FROM spans
WHERE span_kind = 'call'
GROUP BY model
ORDER BY calls DESC
