"""Live OTLP export (storage.otlp_live) against real loopback receivers: one that accepts (the
spans arrive as the OTLP/JSON export has them), one that is down, one that answers 500 and one
that is slow. Runs are written by the real TraceWriter; the receiver's trouble never reaches
the run, the store keeps every row, and the failure is said once."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunFinished, RunStarted
from storage import otlp_live
from storage.otlp_live import OtlpTarget, parse_headers, target_from_env, traces_url
from storage.trace_export import run_to_otlp
from storage.traces import TraceStore
from tests.support.otlp_receiver import OtlpReceiver, closed_port

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROMPT = '[{"role": "user", "content": "Name one fruit."}]'
SECRET = "s3cr3t-header-value"


@pytest.fixture(autouse=True)
def fresh_exporter(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    otlp_live.reset()
    yield
    otlp_live.reset()


def record_run(store: TraceStore, run_id: str) -> None:
    """One run, one node, one call, written by the real writer (RunFinished last)."""
    with store.writer() as writer:
        writer(RunStarted(run_id, "s-live", "Name one fruit.", "{}", "{}", T0))
        writer(NodeStarted(run_id, "fruit", "Fruit", "gemma.gguf", T0))
        writer(
            ModelCallFinished(
                run_id, "fruit", f"{run_id}-c1", "gemma.gguf", PROMPT, "Apple", 12, 3, 0.2, "ok",
                None, T0, T0 + timedelta(seconds=1), finish_reason="stop",
            )
        )  # fmt: skip
        writer(
            NodeFinished(
                run_id, "fruit", "Fruit", "done", "Apple", None, 12, 3, T0,
                T0 + timedelta(seconds=1), model="gemma.gguf",
            )
        )  # fmt: skip
        writer(RunFinished(run_id, "completed", None, "Apple", 12, 3, T0 + timedelta(seconds=2)))


def stored_rows(store: TraceStore, run_id: str) -> tuple[int, int, int]:
    with store.connect() as con:
        return tuple(
            con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchone()[0]
            for table in ("runs", "node_executions", "model_calls")
        )


def otlp_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "storage.otlp_live" and r.levelno >= 30]


# -- configuration ---------------------------------------------------------------------------
def test_standard_variables_name_the_endpoint_and_headers():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{SECRET},x-project-name=arbor",
    }
    target = target_from_env(env)
    assert target is not None and target.endpoint == "http://collector:4318/v1/traces"
    assert dict(target.headers) == {"authorization": f"Bearer {SECRET}", "x-project-name": "arbor"}
    # the signal-specific variable wins and is used as it is
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://phoenix:6006/v1/traces"
    assert target_from_env(env).endpoint == "http://phoenix:6006/v1/traces"
    assert target_from_env({**env, "OTEL_SDK_DISABLED": "true"}) is None
    assert target_from_env({}) is None
    assert traces_url("http://h:4318/v1/traces") == "http://h:4318/v1/traces"


def test_header_values_and_url_credentials_never_show():
    target = OtlpTarget(
        "https://user:pw@host:4318/v1/traces?api_key=k", (("authorization", SECRET),)
    )
    for text in (target.describe(), repr(target)):
        assert SECRET not in text and "pw" not in text and "api_key=k" not in text
        assert "authorization=***" in text and "host:4318/v1/traces" in text
    with pytest.raises(ValueError, match="entry 2") as problem:
        parse_headers(f"a=1,{SECRET}")
    assert SECRET not in str(problem.value)
    with pytest.raises(ValueError, match="not an http"):
        OtlpTarget("ftp://host/v1/traces")


# -- a receiver that accepts -------------------------------------------------------------------
def test_a_finished_run_arrives_as_the_json_export_has_it(tmp_path, monkeypatch):
    store = TraceStore(tmp_path / "traces.duckdb")
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={SECRET}")
        record_run(store, "r-live")
        expected = run_to_otlp(store, "r-live")["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans = receiver.wait_for_spans(len(expected))
    assert len(spans) == len(expected) == 3  # run, node, call
    assert receiver.requests[0]["headers"]["authorization"] == SECRET
    assert receiver.requests[0]["headers"]["content-type"] == "application/x-protobuf"
    got = {s.span_id.hex(): s for s in spans}
    for want in expected:
        span = got[want["spanId"]]
        assert span.trace_id.hex() == want["traceId"] and span.name == want["name"]
        assert span.parent_span_id.hex() == want.get("parentSpanId", "")
        assert span.start_time_unix_nano == int(want["startTimeUnixNano"])
        assert span.end_time_unix_nano == int(want["endTimeUnixNano"])
        assert {kv.key for kv in span.attributes} == {kv["key"] for kv in want["attributes"]}
    call = next(s for s in spans if s.name == "chat gemma.gguf")
    attrs = {kv.key: kv.value for kv in call.attributes}
    assert attrs["gen_ai.usage.input_tokens"].int_value == 12
    assert attrs["llm.token_count.completion"].int_value == 3
    assert attrs["llm.model_name"].string_value == "gemma.gguf"
    assert attrs["openinference.span.kind"].string_value == "LLM"
    assert receiver.resources[0]["service.name"] == "arbor"


def test_a_planner_run_is_sent_when_recorded(tmp_path, monkeypatch):
    from storage.traces.planner_runs import PlannerCall, PlannerRunData, record_planner_run

    store = TraceStore(tmp_path / "traces.duckdb")
    with OtlpReceiver() as receiver:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.removesuffix("/v1/traces")
        )
        data = PlannerRunData(
            status="completed",
            calls=[PlannerCall(role="candidate", output="1. Buy flour", model="gemma.gguf",
                               input_tokens=40, output_tokens=9, selected=True, score=0.8)],
            answer="1. Buy flour",
        )  # fmt: skip
        run_id = record_planner_run(store, "decompose", "Bake bread.", "gemma.gguf", data, T0, T0)
        expected = run_to_otlp(store, run_id)["resourceSpans"][0]["scopeSpans"][0]["spans"]
        spans = receiver.wait_for_spans(len(expected))
    assert sorted(s.name for s in spans) == sorted(s["name"] for s in expected)
    assert any(s.name == "chat gemma.gguf" for s in spans)


# -- receivers in trouble ----------------------------------------------------------------------
def test_a_receiver_that_is_down_costs_the_run_nothing_and_is_said_once(
    tmp_path, monkeypatch, caplog
):
    store = TraceStore(tmp_path / "traces.duckdb")
    url = f"http://127.0.0.1:{closed_port()}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={SECRET}")
    caplog.set_level(logging.WARNING)
    for run_id in ("r-down-1", "r-down-2"):
        record_run(store, run_id)  # returns normally
        assert stored_rows(store, run_id) == (1, 1, 1)
    live = otlp_live.live_exporter()
    assert live is not None and live.flush()
    assert live.sent_spans == 0 and live.dropped_spans == 6
    [warning] = otlp_warnings(caplog)
    message = warning.getMessage()
    assert url in message and SECRET not in message and "authorization=***" in message
    # the SDK's own per-batch error lines were captured, not printed
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_a_receiver_answering_500_is_said_once_with_its_status(tmp_path, monkeypatch, caplog):
    store = TraceStore(tmp_path / "traces.duckdb")
    caplog.set_level(logging.WARNING)
    with OtlpReceiver(status=500) as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        record_run(store, "r-500-1")
        record_run(store, "r-500-2")
        live = otlp_live.live_exporter()
        assert live is not None and live.flush()
    assert stored_rows(store, "r-500-2") == (1, 1, 1)
    [warning] = otlp_warnings(caplog)
    assert "500" in warning.getMessage()
    assert live.problem is not None and "500" in live.problem and live.sent_spans == 0


def test_a_slow_receiver_does_not_hold_the_run(tmp_path, monkeypatch):
    """The receiver holds every request until the test lets it go: the run finishes, and its
    rows are stored, while the receiver has not answered yet; then the spans arrive."""
    store = TraceStore(tmp_path / "traces.duckdb")
    release = threading.Event()
    with OtlpReceiver() as receiver:
        receiver.delay_s = 0  # replaced by the gate below
        original = receiver._server.RequestHandlerClass.do_POST

        def gated(handler):
            release.wait(30)
            original(handler)

        receiver._server.RequestHandlerClass.do_POST = gated
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "30")
        record_run(store, "r-slow")
        assert stored_rows(store, "r-slow") == (1, 1, 1)
        assert receiver.spans == []  # nothing answered yet, the run is done
        release.set()
        assert len(receiver.wait_for_spans(3)) == 3
