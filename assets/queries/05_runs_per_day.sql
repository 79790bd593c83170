-- title: Runs per day and status
SELECT CAST(started_at AS DATE) AS day, status, count(*) AS runs,
       sum(input_tokens + output_tokens) AS tokens, round(sum(cost_usd), 6) AS cost_usd,
       kind
FROM runs
GROUP BY day, status, kind
ORDER BY day DESC, kind, status
