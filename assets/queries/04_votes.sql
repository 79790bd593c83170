-- title: Votes of sampled nodes, newest runs first (self-consistency)
SELECT run_id, node_id, vote, count(*) AS samples, bool_or(selected) AS chosen
FROM model_calls
WHERE vote IS NOT NULL
GROUP BY run_id, node_id, vote
ORDER BY run_id DESC, node_id, samples DESC
LIMIT 1000
