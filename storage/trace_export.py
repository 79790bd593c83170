"""Export one run of the trace store as OpenTelemetry (OTLP/JSON), Parquet or CSV.

Everything comes from the ``spans`` view (``storage.traces.SPANS_VIEW``): one row per run,
node, sample and model call, with derived hex ids and columns named after OpenTelemetry's GenAI
semantic conventions. So an export is a projection, never a second model of the trace:

- ``run_to_otlp`` builds an ``ExportTraceServiceRequest`` in the OTLP/JSON encoding (camelCase
  fields, hex ids, nanosecond times as decimal strings, 64-bit integers as strings, enums as
  integers) that any OTLP/HTTP receiver (a collector, Jaeger, Phoenix, Langfuse ...) accepts at
  ``/v1/traces``. ``SPAN_ATTRIBUTES`` and ``CONTENT_ATTRIBUTES`` are the whole column ->
  attribute mapping.
- ``export_run`` writes that JSON, or the run's span rows as Parquet or CSV through DuckDB's
  ``COPY``, to a temporary file next to the target that is renamed into place, so a failed
  export never leaves a half-written file. ``export_run_bytes`` is the same for a download.

Reads go through ``TraceStore.run`` first: it waits for this process's queued trace writes and
tells an unknown run apart (``TraceStoreError`` naming it) before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import duckdb

from engine.errors import ExportWriteError, TraceStoreError
from storage.traces import TraceStore
from storage.traces.annotations import otlp_annotations
from storage.traces.run_control import otlp_pins

ExportFormat = Literal["otlp", "parquet", "csv"]

#: Each format's file suffix and MIME type (for a download button's file name and type).
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "otlp": (".otlp.json", "application/json"),
    "parquet": (".parquet", "application/vnd.apache.parquet"),
    "csv": (".csv", "text/csv"),
}

#: Column of the ``spans`` view -> OTLP span attribute, for every column that becomes an
#: attribute as it is. A NULL column is left out; a value's OTLP type follows its SQL type
#: (VARCHAR string, BIGINT/INTEGER int, DOUBLE double, BOOLEAN bool). The view names GenAI
#: columns ``gen_ai_x_y`` for ``gen_ai.x.y`` and Arbor's own ``arbor_x`` for ``arbor.x``.
SPAN_ATTRIBUTES: dict[str, str] = {
    "gen_ai_operation_name": "gen_ai.operation.name",
    "gen_ai_provider_name": "gen_ai.provider.name",
    "gen_ai_request_model": "gen_ai.request.model",
    "gen_ai_request_seed": "gen_ai.request.seed",
    # one reason per call; the convention's type is a string array
    "gen_ai_response_finish_reasons": "gen_ai.response.finish_reasons",
    "gen_ai_usage_input_tokens": "gen_ai.usage.input_tokens",
    "gen_ai_usage_output_tokens": "gen_ai.usage.output_tokens",
    "gen_ai_agent_id": "gen_ai.agent.id",
    "gen_ai_agent_name": "gen_ai.agent.name",
    "arbor_session_id": "arbor.session_id",
    "arbor_role": "arbor.role",
    "arbor_cost_usd": "arbor.cost_usd",
    "arbor_score": "arbor.score",
    "arbor_vote": "arbor.vote",
    "arbor_selected": "arbor.selected",
    "arbor_strategy": "arbor.strategy",
    "arbor_reused_from": "arbor.reused_from",
    # why a node's output (or a run's answer) does not look like an answer, when it does not
    "arbor_suspect": "arbor.suspect",
    # the keys that find a span's rows in the store again
    "run_id": "arbor.run_id",
    "node_id": "arbor.node_id",
    "call_id": "arbor.call_id",
    "sample_index": "arbor.sample_index",
    # Arbor's own words for what OTLP's kind and status codes flatten (blocked, skipped ...)
    "span_kind": "arbor.span_kind",
    "status": "arbor.status",
}

#: Columns sent as string arrays (a single value becomes a one-item array).
ARRAY_ATTRIBUTES = frozenset({"gen_ai_response_finish_reasons"})

#: Where ``input`` / ``output`` go, by span kind. A call's prompt and answer are chat messages,
#: which the GenAI conventions record as ``gen_ai.input.messages`` / ``gen_ai.output.messages``
#: (JSON strings in the conventions' role-and-parts schema, see ``_input_messages``). A run's
#: task and answer and a node's output are plain text, not messages: they keep Arbor's names.
CONTENT_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "call": ("gen_ai.input.messages", "gen_ai.output.messages"),
    "run": ("arbor.input", "arbor.output"),
    "node": ("arbor.input", "arbor.output"),
    "sample": ("arbor.input", "arbor.output"),
}

#: A call whose prompt is not a list of chat messages keeps it as text under this key.
RAW_INPUT_ATTRIBUTE = "arbor.input"

#: A non-ERROR span's status message (a blocked node's reason, a sampling note) goes here:
#: OTLP keeps ``status.message`` for errors only.
STATUS_MESSAGE_ATTRIBUTE = "arbor.status_message"

#: Columns handled apart from ``SPAN_ATTRIBUTES``: the span's own fields, its status, and the
#: content (``CONTENT_ATTRIBUTES``).
SPAN_FIELDS = frozenset(
    {
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "start_time",
        "end_time",
        "status_code",
        "status_message",
        "input",
        "output",
    }
)

#: OTLP ``Span.SpanKind``: runs, nodes and samples happen in Arbor; a model call is a request to
#: a model server or library (the GenAI conventions make inference spans CLIENT).
SPAN_KIND_INTERNAL = 1
SPAN_KIND_CLIENT = 3
OTLP_KINDS: dict[str, int] = {
    "run": SPAN_KIND_INTERNAL,
    "node": SPAN_KIND_INTERNAL,
    "sample": SPAN_KIND_INTERNAL,
    "call": SPAN_KIND_CLIENT,
}

#: OTLP ``Status.StatusCode`` by the view's ``status_code``.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
OTLP_STATUS: dict[str, int] = {"UNSET": STATUS_UNSET, "OK": STATUS_OK, "ERROR": STATUS_ERROR}

#: The conventions require a finish reason on every output message; a call that recorded none
#: gets "error" or "cancelled" from its status, else "unknown".
_FINISH_BY_STATUS = {"error": "error", "cancelled": "cancelled"}

#: Parents before children at equal start times, then a stable order.
_SPAN_ORDER = (
    "ORDER BY start_time,"
    " CASE span_kind WHEN 'run' THEN 0 WHEN 'node' THEN 1 WHEN 'sample' THEN 2 ELSE 3 END,"
    " span_id"
)

_EXPORT_SELECT = f"SELECT * FROM spans WHERE run_id = ? {_SPAN_ORDER}"

_COPY_OPTIONS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true"}


@cache
def arbor_version() -> str:
    """The installed package's version (the OTLP scope version); "0+unknown" from a bare
    checkout that was never installed."""
    try:
        return metadata.version("arbor")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# -- OTLP/JSON -----------------------------------------------------------------------------
def run_to_otlp(store: TraceStore, run_id: str) -> dict[str, Any]:
    """Run ``run_id`` as an OTLP/JSON ``ExportTraceServiceRequest`` (a dict ready for
    ``json.dumps``): one resource (service.name "arbor"), one scope, one span per row of the
    ``spans`` view. Raises ``TraceStoreError`` naming the run if the store does not have it."""
    run = _require_run(store, run_id)
    rows = _span_rows(store, run_id)
    run_start_ns = next((r["start_ns"] for r in rows if r["span_kind"] == "run"), 0)
    resource = [_attribute("service.name", "arbor")]
    if run.get("session_id"):
        resource.append(_attribute("arbor.session_id", run["session_id"]))
    label = store.run_labels([run_id]).get(run_id)  # name and tags (storage.traces.labels)
    if label is not None and label.name:
        resource.append(_attribute("arbor.run.name", label.name))
    if label is not None and label.tags:
        resource.append(_attribute("arbor.run.tags", list(label.tags), as_array=True))
    spans = [_span(row, run_start_ns) for row in rows]
    # annotations (storage.traces.annotations): label, score, note on the node's/call's span
    otlp_annotations(store.annotations(run_id), rows, spans)
    otlp_pins(store, run_id, rows, spans)  # arbor.pinned on pinned nodes (run control)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [
                    {
                        "scope": {"name": "arbor", "version": arbor_version()},
                        "spans": spans,
                    }
                ],
            }
        ]
    }


def run_to_otlp_json(store: TraceStore, run_id: str) -> str:
    """``run_to_otlp`` as JSON text: the body of a POST to an OTLP/HTTP ``/v1/traces``."""
    return json.dumps(run_to_otlp(store, run_id), ensure_ascii=False, allow_nan=False)


def _span(row: dict[str, Any], run_start_ns: int) -> dict[str, Any]:
    kind = row["span_kind"]
    start_ns = row["start_ns"] if row["start_ns"] is not None else run_start_ns
    end_ns = row["end_ns"] if row["end_ns"] is not None else start_ns
    attributes = [
        _attribute(key, row[column], as_array=column in ARRAY_ATTRIBUTES)
        for column, key in SPAN_ATTRIBUTES.items()
        if row[column] is not None
    ]
    attributes.extend(_content_attributes(row))
    attributes.extend(_attribute(k, v) for k, v in openinference_attributes(row).items())
    code = OTLP_STATUS.get(row["status_code"], STATUS_UNSET)
    status: dict[str, Any] = {"code": code}
    message = row["status_message"]
    if message:
        if code == STATUS_ERROR:
            status["message"] = message
        else:
            attributes.append(_attribute(STATUS_MESSAGE_ATTRIBUTE, message))
    span: dict[str, Any] = {
        "traceId": row["trace_id"],
        "spanId": row["span_id"],
        "name": row["name"],
        "kind": OTLP_KINDS.get(kind, SPAN_KIND_INTERNAL),
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(max(end_ns, start_ns)),
        "attributes": attributes,
        "status": status,
    }
    if row["parent_span_id"]:
        span["parentSpanId"] = row["parent_span_id"]
    return span


def _content_attributes(row: dict[str, Any]) -> list[dict[str, Any]]:
    kind = row["span_kind"]
    input_key, output_key = CONTENT_ATTRIBUTES.get(kind, ("arbor.input", "arbor.output"))
    attributes = []
    if row["input"] is not None:
        if kind == "call":
            messages = _input_messages(row["input"])
            if messages is None:
                attributes.append(_attribute(RAW_INPUT_ATTRIBUTE, row["input"]))
            else:
                attributes.append(_attribute(input_key, _to_json(messages)))
        else:
            attributes.append(_attribute(input_key, row["input"]))
    if row["output"] is not None:
        if kind == "call":
            finish = row["gen_ai_response_finish_reasons"]
            finish = finish or _FINISH_BY_STATUS.get(row["status"], "unknown")
            message = {
                "role": "assistant",
                "parts": [{"type": "text", "content": row["output"]}],
                "finish_reason": finish,
            }
            attributes.append(_attribute(output_key, _to_json([message])))
        else:
            attributes.append(_attribute(output_key, row["output"]))
    return attributes


#: OpenInference's span kind (what Arize Phoenix groups and draws by) for each of Arbor's.
OPENINFERENCE_KINDS: dict[str, str] = {
    "run": "AGENT",
    "node": "CHAIN",
    "sample": "CHAIN",
    "call": "LLM",
}


def openinference_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The OpenInference attributes Arize Phoenix reads, for one row of the ``spans`` view,
    where they differ from the GenAI conventions' (``openinference.span.kind``,
    ``llm.model_name``, ``llm.token_count.*``, ``input.value``/``output.value``, a call's
    messages flattened as ``llm.input_messages.N.message.*``). Both sets travel on every span,
    so a GenAI-convention backend and Phoenix read the same export."""
    kind = row["span_kind"]
    found: dict[str, Any] = {"openinference.span.kind": OPENINFERENCE_KINDS.get(kind, "CHAIN")}
    if row["gen_ai_request_model"] is not None:
        found["llm.model_name"] = row["gen_ai_request_model"]
    if row["gen_ai_provider_name"] is not None:
        found["llm.provider"] = row["gen_ai_provider_name"]
    prompt_tokens = row["gen_ai_usage_input_tokens"]
    completion_tokens = row["gen_ai_usage_output_tokens"]
    if prompt_tokens is not None:
        found["llm.token_count.prompt"] = prompt_tokens
    if completion_tokens is not None:
        found["llm.token_count.completion"] = completion_tokens
    if prompt_tokens is not None or completion_tokens is not None:
        found["llm.token_count.total"] = (prompt_tokens or 0) + (completion_tokens or 0)
    if row["arbor_session_id"] is not None:
        found["session.id"] = row["arbor_session_id"]
    if row["input"] is not None:
        found["input.value"] = row["input"]
        messages = _input_messages(row["input"]) if kind == "call" else None
        if messages is not None:
            found["input.mime_type"] = "application/json"
            for index, message in enumerate(messages):
                prefix = f"llm.input_messages.{index}.message"
                found[f"{prefix}.role"] = message["role"]
                texts = [p.get("content") for p in message["parts"] if p.get("type") == "text"]
                found[f"{prefix}.content"] = "".join(t for t in texts if isinstance(t, str))
        else:
            found["input.mime_type"] = "text/plain"
    if row["output"] is not None:
        found["output.value"] = row["output"]
        found["output.mime_type"] = "text/plain"
        if kind == "call":
            found["llm.output_messages.0.message.role"] = "assistant"
            found["llm.output_messages.0.message.content"] = row["output"]
    return found


def _input_messages(prompt: str) -> list[dict[str, Any]] | None:
    """A recorded prompt (OpenAI-style ``[{"role", "content"}]`` JSON) in the GenAI
    conventions' input-messages schema (``[{"role", "parts": [{"type": "text", "content"}]}]``);
    None when it is not a list of chat messages, so the caller keeps the text as it is."""
    try:
        messages = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(messages, list):
        return None
    converted = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return None
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        elif isinstance(content, list):  # OpenAI content parts: text stays text
            parts = [
                {"type": "text", "content": part["text"]}
                if isinstance(part, dict) and part.get("type") == "text" and "text" in part
                else part
                for part in content
            ]
            if not all(isinstance(part, dict) and "type" in part for part in parts):
                return None
        elif content is None:
            parts = []
        else:
            return None
        extra = {k: v for k, v in message.items() if k not in ("role", "content")}
        converted.append({"role": message["role"], "parts": parts, **extra})
    return converted


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _attribute(key: str, value: Any, *, as_array: bool = False) -> dict[str, Any]:
    """One OTLP ``KeyValue``; ``as_array`` wraps a single value in an array value."""
    if as_array:
        items = value if isinstance(value, list | tuple) else [value]
        return {"key": key, "value": {"arrayValue": {"values": [_any_value(v) for v in items]}}}
    return {"key": key, "value": _any_value(value)}


def _any_value(value: Any) -> dict[str, Any]:
    """An OTLP/JSON ``AnyValue``: 64-bit integers as decimal strings (proto3 JSON), doubles as
    numbers (non-finite ones as the strings proto3 JSON defines)."""
    if isinstance(value, bool):  # before int: bool is an int
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        special = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return {"doubleValue": special}
    return {"stringValue": str(value)}


# -- files -----------------------------------------------------------------------------------
def export_run(store: TraceStore, run_id: str, path: Path | str, fmt: ExportFormat) -> Path:
    """Write run ``run_id`` to ``path`` as ``fmt``: "otlp" (OTLP/JSON), or the run's rows of the
    ``spans`` view (every column, by start time) as "parquet" or "csv"; return the path.

    The file is written next to ``path`` under a temporary name and renamed into place, so a
    failed export leaves no file and an existing one untouched. Raises ``TraceStoreError`` for
    an unknown run (nothing is written), ``ValueError`` for an unknown format and
    ``FileNotFoundError`` when the folder does not exist.
    """
    _check_format(fmt)
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot export run {run_id!r} to {target}: {folder} is not a folder."
        )
    if fmt == "otlp":
        payload = run_to_otlp_json(store, run_id).encode("utf-8")  # unknown run: raises here
        with _replacing(target) as temporary:
            temporary.write_bytes(payload)
        return target
    _require_run(store, run_id)
    with _replacing(target) as temporary:
        _copy_spans(store, run_id, temporary, fmt)
    return target


def export_run_bytes(store: TraceStore, run_id: str, fmt: ExportFormat) -> bytes:
    """The bytes ``export_run`` would write (for a download button); same errors."""
    _check_format(fmt)
    if fmt == "otlp":
        return run_to_otlp_json(store, run_id).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="arbor-export-") as folder:
        path = export_run(store, run_id, Path(folder) / f"run{EXPORT_FORMATS[fmt][0]}", fmt)
        return path.read_bytes()


def export_filename(run_id: str, fmt: ExportFormat) -> str:
    """A file name for the export of ``run_id`` as ``fmt`` (e.g. ``run-abc.parquet``)."""
    _check_format(fmt)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    return f"run-{safe}{EXPORT_FORMATS[fmt][0]}"


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(
            f"Unknown export format {fmt!r}; choose one of {', '.join(map(repr, EXPORT_FORMATS))}."
        )


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` that replaces it on success and vanishes on failure
    (same folder, so the rename is atomic)."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a quota: say so, as one line
            raise ExportWriteError(
                f"Cannot write {target}: {exc.strerror or exc}. Nothing was written."
            ) from exc
        raise


def _copy_spans(store: TraceStore, run_id: str, destination: Path, fmt: str) -> None:
    literal = str(destination).replace("'", "''")  # COPY's target cannot be a parameter
    sql = f"COPY ({_EXPORT_SELECT}) TO '{literal}' ({_COPY_OPTIONS[fmt]})"
    try:
        with store.connect() as con:
            con.execute(sql, [run_id])
    except duckdb.Error as exc:
        raise TraceStoreError(
            f"Cannot export run {run_id!r} from {store.path} as {fmt}: {exc}"
        ) from exc


# -- reading ---------------------------------------------------------------------------------
def _require_run(store: TraceStore, run_id: str) -> dict[str, Any]:
    """The run's row; ``TraceStore.run`` also waits for this process's queued writes first."""
    run = store.run(run_id)
    if run is None:
        raise TraceStoreError(
            f"No run {run_id!r} in the trace store {store.path}; "
            "`run.py runs` lists the recorded runs."
        )
    return run


def _span_rows(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    sql = (
        "SELECT *, epoch_ns(start_time) AS start_ns, epoch_ns(end_time) AS end_ns"
        f" FROM spans WHERE run_id = ? {_SPAN_ORDER}"
    )
    try:
        with store.connect() as con:
            cursor = con.execute(sql, [run_id])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise TraceStoreError(
            f"Cannot read the spans of run {run_id!r} from {store.path}: {exc}"
        ) from exc


__all__ = [
    "ARRAY_ATTRIBUTES",
    "CONTENT_ATTRIBUTES",
    "EXPORT_FORMATS",
    "OPENINFERENCE_KINDS",
    "OTLP_KINDS",
    "OTLP_STATUS",
    "SPAN_ATTRIBUTES",
    "SPAN_FIELDS",
    "arbor_version",
    "export_filename",
    "export_run",
    "export_run_bytes",
    "openinference_attributes",
    "run_to_otlp",
    "run_to_otlp_json",
]
