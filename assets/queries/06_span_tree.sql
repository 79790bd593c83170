-- title: Span tree of the latest run (OpenTelemetry names)
SELECT span_kind, name, span_id, parent_span_id, gen_ai_operation_name,
       gen_ai_request_model, gen_ai_usage_input_tokens, gen_ai_usage_output_tokens,
       status_code
FROM spans
WHERE run_id = $latest_run
ORDER BY start_time, span_kind DESC
