"""Run export: OTLP/JSON checked against the official OpenTelemetry protobuf definitions, and
Parquet / CSV files read back with DuckDB.

The main trace is a real run of the bundled model in a real DuckDB file: a plan with a plain
node, a self-consistency node (3 samples, so sample spans exist) and a node whose model file
does not exist (so the node and the run fail), plus a one-node run that completes. Tests that
need no model behaviour (read-your-writes, prompt conversion) feed events to a real writer.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from engine.errors import TraceStoreError
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.compute_config import StrategyConfig
from engine.run.budget import RunCaps
from engine.run.events import ModelCallFinished, NodeStarted, RunStarted
from engine.run.executor import RunResult
from storage.trace_export import (
    SPAN_ATTRIBUTES,
    SPAN_FIELDS,
    arbor_version,
    export_filename,
    export_run,
    export_run_bytes,
    run_to_otlp,
    run_to_otlp_json,
)
from storage.traces import TraceStore
from storage.workspace import Workspace

CAPS = RunCaps(total_tokens=6000, max_tokens_per_node=16, max_parallel=4)
SESSION = "s-export"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
ID_FORMS = (("traceId", HEX32), ("spanId", HEX16), ("parentSpanId", HEX16))


@dataclass
class Recorded:
    workspace: Workspace
    failed: RunResult  # mixed plan: a plain node, a sampled node, a broken node
    completed: RunResult  # one node, completes

    @property
    def store(self) -> TraceStore:
        return self.workspace.traces


def _mixed_plan(missing_model: Path) -> Plan:
    leaves = [
        Node(id="fruit", title="Fruit", instruction="Name one fruit."),
        Node(
            id="count",
            title="Count",
            instruction="What is 7 + 5? Answer with a number only.",
            strategy=StrategyConfig(
                kind="self_consistency", samples=3, min_samples=3, early_stop=False
            ),
        ),
        Node(
            id="broken",
            title="Broken",
            instruction="Name one colour.",
            model=ModelRef(kind="local", path=str(missing_model)),
        ),
    ]
    return Plan(
        task="Name things.",
        root=Node(id="root", title="Combine", instruction="Combine the results.", children=leaves),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=7),
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, bundled_path: Path) -> Recorded:
    root = tmp_path_factory.mktemp("trace-export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARBOR_DATA_DIR", str(root / "data"))
        workspace = Workspace(root / "data")
        plan = _mixed_plan(root / "no-such-model.gguf")
        failed = workspace.run_plan(plan, CAPS, session_id=SESSION, use_cache=False)
        single = Plan(
            task="Name one colour.",
            root=Node(id="colour", title="Colour", instruction="Name one colour."),
            default_generation=GenerationConfig(temperature=0.0, max_tokens=4, seed=7),
        )
        completed = workspace.run_plan(single, CAPS, use_cache=False)
    assert failed.status == "failed", failed.stop_reason
    assert completed.status == "completed", completed.stop_reason
    return Recorded(workspace, failed, completed)


# -- helpers -----------------------------------------------------------------------------------
def parse_otlp(payload: dict[str, Any]) -> ExportTraceServiceRequest:
    """Parse like an OTLP/HTTP receiver: OTLP/JSON ids are hex, proto3 JSON bytes are base64."""
    converted = copy.deepcopy(payload)
    for resource_spans in converted["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key, pattern in (
                    ("traceId", HEX32),
                    ("spanId", HEX16),
                    ("parentSpanId", HEX16),
                ):
                    if key in span:
                        assert pattern.fullmatch(span[key]), f"{key} {span[key]!r} is not hex"
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return ParseDict(converted, ExportTraceServiceRequest(), ignore_unknown_fields=False)


def value_of(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, which)


def attrs(span: Span) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


def spans_of(store: TraceStore, run_id: str) -> list[Span]:
    request = parse_otlp(run_to_otlp(store, run_id))
    [resource_spans] = request.resource_spans
    [scope_spans] = resource_spans.scope_spans
    return list(scope_spans.spans)


def by_kind(spans: list[Span], kind: str) -> list[Span]:
    return [s for s in spans if attrs(s)["arbor.span_kind"] == kind]


def view_rows(store: TraceStore, run_id: str) -> list[tuple[Any, ...]]:
    with store.connect() as con:
        return con.execute(
            "SELECT span_id, start_time FROM spans WHERE run_id = ? ORDER BY start_time", [run_id]
        ).fetchall()


# -- OTLP ----------------------------------------------------------------------------------------
@pytest.mark.model
def test_otlp_export_parses_with_the_official_protobuf_definitions(recorded):
    payload = json.loads(run_to_otlp_json(recorded.store, recorded.failed.run_id))
    request = parse_otlp(payload)
    [resource_spans] = request.resource_spans
    resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
    assert resource == {"service.name": "arbor", "arbor.session_id": SESSION}
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "arbor" and scope_spans.scope.version == arbor_version()
    spans = list(scope_spans.spans)
    assert len(spans) == len(view_rows(recorded.store, recorded.failed.run_id))
    for span in spans:
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
        assert span.parent_span_id == b"" or len(span.parent_span_id) == 8
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
    # 64-bit integers travel as decimal strings, kinds and status codes as integers.
    call = next(s for s in payload["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["kind"] == 3)
    assert isinstance(call["startTimeUnixNano"], str) and call["startTimeUnixNano"].isdigit()
    tokens = next(a for a in call["attributes"] if a["key"] == "gen_ai.usage.output_tokens")
    assert isinstance(tokens["value"]["intValue"], str)
    assert isinstance(call["status"]["code"], int)


@pytest.mark.model
def test_spans_form_one_trace_rooted_at_the_run_span(recorded):
    spans = spans_of(recorded.store, recorded.failed.run_id)
    assert len({s.trace_id for s in spans}) == 1
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    [root] = roots
    assert attrs(root)["arbor.span_kind"] == "run"
    assert attrs(root)["arbor.run_id"] == recorded.failed.run_id
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans), "span ids are unique"
    for span in spans:
        assert not span.parent_span_id or span.parent_span_id in ids, span.name
    nodes = by_kind(spans, "node")
    assert {attrs(n)["arbor.node_id"] for n in nodes} == {"root", "fruit", "count", "broken"}
    assert all(n.parent_span_id == root.span_id for n in nodes)


@pytest.mark.model
def test_sampled_calls_hang_under_sample_spans_under_their_node(recorded):
    spans = spans_of(recorded.store, recorded.failed.run_id)
    [node] = [n for n in by_kind(spans, "node") if attrs(n)["arbor.node_id"] == "count"]
    samples = [s for s in by_kind(spans, "sample") if attrs(s)["arbor.node_id"] == "count"]
    assert sorted(attrs(s)["arbor.sample_index"] for s in samples) == [0, 1, 2]
    assert all(s.parent_span_id == node.span_id for s in samples)
    calls = [c for c in by_kind(spans, "call") if attrs(c)["arbor.node_id"] == "count"]
    assert len(calls) == 3
    sample_ids = {attrs(s)["arbor.sample_index"]: s.span_id for s in samples}
    for call in calls:
        assert call.parent_span_id == sample_ids[attrs(call)["arbor.sample_index"]]
        assert attrs(call)["arbor.role"] == "sample"
    assert sum(bool(attrs(s).get("arbor.selected")) for s in samples) == 1
    assert attrs(node)["arbor.strategy"].startswith("self-consistency")
    # The unsampled node's call hangs right under its node.
    [fruit] = [n for n in by_kind(spans, "node") if attrs(n)["arbor.node_id"] == "fruit"]
    [fruit_call] = [c for c in by_kind(spans, "call") if attrs(c)["arbor.node_id"] == "fruit"]
    assert fruit_call.parent_span_id == fruit.span_id


@pytest.mark.model
def test_call_tokens_add_up_to_the_runs_tokens(recorded):
    for result in (recorded.failed, recorded.completed):
        spans = spans_of(recorded.store, result.run_id)
        run = recorded.store.run(result.run_id)
        calls = by_kind(spans, "call")
        assert calls
        output = sum(attrs(c)["gen_ai.usage.output_tokens"] for c in calls)
        assert output == run["output_tokens"] > 0
        assert sum(attrs(c)["gen_ai.usage.input_tokens"] for c in calls) == run["input_tokens"]
        [root] = by_kind(spans, "run")
        assert attrs(root)["gen_ai.usage.output_tokens"] == run["output_tokens"]


@pytest.mark.model
def test_request_model_operation_and_kind_follow_the_recorded_nodes(recorded):
    run_id = recorded.failed.run_id
    spans = spans_of(recorded.store, run_id)
    models = {n["node_id"]: n["model"] for n in recorded.store.node_executions(run_id)}
    for span in by_kind(spans, "node"):
        a = attrs(span)
        if models[a["arbor.node_id"]] is not None:
            assert a["gen_ai.request.model"] == models[a["arbor.node_id"]]
        assert a["gen_ai.operation.name"] == "invoke_agent" and span.kind == Span.SPAN_KIND_INTERNAL
    calls = by_kind(spans, "call")
    for span in calls:
        a = attrs(span)
        assert a["gen_ai.request.model"] == models[a["arbor.node_id"]]
        assert a["gen_ai.operation.name"] == "chat" and span.kind == Span.SPAN_KIND_CLIENT
        assert span.name == f"chat {a['gen_ai.request.model']}"
    assert {c.kind for c in calls} == {Span.SPAN_KIND_CLIENT}
    assert {s.kind for s in spans if s not in calls} == {Span.SPAN_KIND_INTERNAL}


@pytest.mark.model
def test_status_codes_follow_run_node_and_call_outcomes(recorded):
    spans = spans_of(recorded.store, recorded.failed.run_id)
    [run] = by_kind(spans, "run")
    assert run.status.code == Status.STATUS_CODE_ERROR
    assert run.status.message == recorded.failed.stop_reason
    nodes = {attrs(n)["arbor.node_id"]: n for n in by_kind(spans, "node")}
    assert nodes["broken"].status.code == Status.STATUS_CODE_ERROR
    assert "no-such-model.gguf" in nodes["broken"].status.message
    # A blocked node neither succeeded nor failed: UNSET, its reason kept as an attribute.
    assert nodes["root"].status.code == Status.STATUS_CODE_UNSET
    assert nodes["root"].status.message == ""
    assert attrs(nodes["root"])["arbor.status"] == "blocked"
    assert "'broken' failed" in attrs(nodes["root"])["arbor.status_message"]
    for node_id in ("fruit", "count"):
        assert nodes[node_id].status.code == Status.STATUS_CODE_OK
    assert {c.status.code for c in by_kind(spans, "call")} == {Status.STATUS_CODE_OK}
    [completed_run] = by_kind(spans_of(recorded.store, recorded.completed.run_id), "run")
    assert completed_run.status.code == Status.STATUS_CODE_OK


@pytest.mark.model
def test_call_content_follows_the_genai_message_schema(recorded):
    run_id = recorded.failed.run_id
    recorded_calls = {c["call_id"]: c for c in recorded.store.model_calls(run_id)}
    for span in by_kind(spans_of(recorded.store, run_id), "call"):
        a = attrs(span)
        call = recorded_calls[a["arbor.call_id"]]
        messages = json.loads(a["gen_ai.input.messages"])
        prompt = json.loads(call["prompt"])
        assert [m["role"] for m in messages] == [m["role"] for m in prompt]
        assert [m["parts"] for m in messages] == [
            [{"type": "text", "content": m["content"]}] for m in prompt
        ]
        [answer] = json.loads(a["gen_ai.output.messages"])
        assert answer["role"] == "assistant"
        assert answer["finish_reason"] == (call["finish_reason"] or "unknown")
        assert answer["parts"] == [{"type": "text", "content": call["output"]}]
        if call["finish_reason"] is not None:
            assert a["gen_ai.response.finish_reasons"] == [call["finish_reason"]]
        assert "arbor.input" not in a and "arbor.output" not in a
    [run] = by_kind(spans_of(recorded.store, run_id), "run")
    assert attrs(run)["arbor.input"] == "Name things."


def test_every_spans_column_is_exported_as_a_field_or_a_named_attribute(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    with store.connect() as con:
        columns = {row[0] for row in con.execute("DESCRIBE spans").fetchall()}
    unmapped = columns - set(SPAN_ATTRIBUTES) - SPAN_FIELDS
    assert not unmapped, f"add these spans columns to SPAN_ATTRIBUTES or SPAN_FIELDS: {unmapped}"
    assert not (set(SPAN_ATTRIBUTES) | SPAN_FIELDS) - columns, "the mapping names a lost column"
    # gen_ai_x_y is gen_ai.x.y and arbor_x is arbor.x (dots where the convention has them).
    for column, key in SPAN_ATTRIBUTES.items():
        if column.startswith(("gen_ai_", "arbor_")):
            assert key.startswith(column.split("_")[0]) and key.replace(".", "_") == column, key


# -- read-your-writes and prompt conversion, on events (no model) ------------------------------
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_export_sees_events_still_queued_in_a_writer(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    # A writer that would hold its batch for a minute unless someone asks for a flush.
    writer = store.writer(linger_s=60.0)
    try:
        writer(RunStarted("r1", None, "Say hi.", "{}", "{}", T0))
        writer(NodeStarted("r1", "n1", "Greet", "m.gguf", T0))
        writer(
            ModelCallFinished(
                "r1", "n1", "c1", "m.gguf", "plain text, not messages", "hi", 3, 1, 0.1, "ok",
                None, T0, T0 + timedelta(seconds=1), finish_reason=None,
            )
        )  # fmt: skip
        started = time.monotonic()
        spans = spans_of(store, "r1")
        assert time.monotonic() - started < 30, "the export waited for the linger, not a flush"
    finally:
        writer.close()
    assert sorted(attrs(s)["arbor.span_kind"] for s in spans) == ["call", "node", "run"]
    [call] = by_kind(spans, "call")
    a = attrs(call)
    # A prompt that is not a message list is kept as text; a missing finish reason comes from
    # the status (the conventions require one on every output message).
    assert a["arbor.input"] == "plain text, not messages" and "gen_ai.input.messages" not in a
    assert json.loads(a["gen_ai.output.messages"])[0]["finish_reason"] == "unknown"
    assert "gen_ai.response.finish_reasons" not in a
    [node] = by_kind(spans, "node")
    assert node.status.code == Status.STATUS_CODE_UNSET and attrs(node)["arbor.status"] == "running"
    resource = parse_otlp(run_to_otlp(store, "r1")).resource_spans[0].resource
    assert [kv.key for kv in resource.attributes] == ["service.name"]  # the run has no session


# -- Parquet and CSV --------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_export_holds_the_runs_span_rows_by_start_time(recorded, tmp_path, fmt):
    run_id = recorded.failed.run_id
    path = export_run(recorded.store, run_id, tmp_path / f"run.{fmt}", fmt)
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    con = duckdb.connect()
    try:
        rows = con.execute(f"SELECT span_id, start_time, run_id FROM {reader}(?)", [str(path)])
        exported = rows.fetchall()
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}(?)", [str(path)]).fetchall()
        columns = {row[0]: row[1] for row in described}
    finally:
        con.close()
    expected = view_rows(recorded.store, run_id)
    assert len(exported) == len(expected)
    assert sorted(r[0] for r in exported) == sorted(r[0] for r in expected)
    assert {r[2] for r in exported} == {run_id}
    starts = [r[1] for r in exported]
    assert starts == sorted(starts)
    with recorded.store.connect() as store_con:
        view_columns = [r[0] for r in store_con.execute("DESCRIBE spans").fetchall()]
    assert list(columns) == view_columns
    if fmt == "parquet":
        assert columns["gen_ai_usage_output_tokens"] == "BIGINT"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file is left"


@pytest.mark.model
def test_export_replaces_an_existing_file_whole(recorded, tmp_path):
    target = tmp_path / "run.otlp.json"
    target.write_text("old contents")
    export_run(recorded.store, recorded.completed.run_id, target, "otlp")
    assert json.loads(target.read_text())["resourceSpans"]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.model
def test_a_failed_export_leaves_no_partial_file(recorded, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a folder where the file should go: the final rename fails
    (target / "keep.txt").write_text("untouched")
    with pytest.raises(OSError):
        export_run(recorded.store, recorded.completed.run_id, target, "parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (target / "keep.txt").read_text() == "untouched"


@pytest.mark.model
@pytest.mark.parametrize("fmt", ["otlp", "parquet", "csv"])
def test_an_unknown_run_is_named_and_nothing_is_written(recorded, tmp_path, fmt):
    with pytest.raises(TraceStoreError, match="'no-such-run'"):
        export_run(recorded.store, "no-such-run", tmp_path / "out", fmt)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TraceStoreError, match="'no-such-run'"):
        export_run_bytes(recorded.store, "no-such-run", fmt)


@pytest.mark.model
def test_unknown_format_and_missing_folder_are_refused(recorded, tmp_path):
    run_id = recorded.completed.run_id
    with pytest.raises(ValueError, match=r"'xml'.*'otlp', 'parquet', 'csv'"):
        export_run(recorded.store, run_id, tmp_path / "out.xml", "xml")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        export_run(recorded.store, run_id, tmp_path / "missing" / "out.csv", "csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_download_bytes_are_the_exported_file(recorded, tmp_path):
    run_id = recorded.completed.run_id
    assert json.loads(export_run_bytes(recorded.store, run_id, "otlp")) == run_to_otlp(
        recorded.store, run_id
    )
    path = tmp_path / export_filename(run_id, "parquet")
    path.write_bytes(export_run_bytes(recorded.store, run_id, "parquet"))
    assert path.name == f"run-{run_id}.parquet"
    con = duckdb.connect()
    try:
        count = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()[0]
    finally:
        con.close()
    assert count == len(view_rows(recorded.store, run_id))
    assert export_run_bytes(recorded.store, run_id, "csv").startswith(b"trace_id,span_id,")
