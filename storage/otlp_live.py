"""Live export of recorded runs to an OTLP/HTTP receiver (Arize Phoenix, Langfuse, Jaeger, an
OpenTelemetry Collector) through the OpenTelemetry SDK's own exporter.

Design decisions:

- **Spans are the export's spans.** ``run_spans`` turns ``trace_export.run_to_otlp`` (the OTLP
  JSON built from the ``spans`` view) into the SDK's ``ReadableSpan`` objects, so a live export,
  ``run.py export-run --to`` and an OTLP/JSON file never disagree: same ids (derived from the
  stored ids), times, names, parents, GenAI and OpenInference attributes, annotation events.
- **A run is sent when it finishes** (``TraceWriter`` on ``RunFinished``, ``record_planner_run``
  for planner actions), not node by node: a node's row is only final when the run is (resumes,
  forks and cache reuse rewrite it), its parent span needs the run's end time, and the DuckDB
  store stays the source of truth. The finishing thread reads the run's spans (one query, a
  few ms, through the connection that just wrote them: a second thread opening the file while
  the writer lets go of it can collide) and hands them to the SDK's ``BatchSpanProcessor``,
  whose own thread posts them with ``OTLPSpanExporter`` (OTLP/HTTP, protobuf).
- **A receiver that is down, slow or failing never touches a run**: requests time out after
  ``DEFAULT_TIMEOUT_S``; a failure is logged once per endpoint (``logging`` warning, header
  values never shown) and remembered for the Settings page; the SDK's own per-batch error logs
  are captured instead of printed. At interpreter exit queued spans get one short flush.
- **Configuration the standard way**: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (a full URL) or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` appended), headers from
  ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,k2=v2``,
  percent-encoded), ``OTEL_SDK_DISABLED=true`` turns it off. The Settings page may set a
  process-wide ``set_override`` instead; it lives in memory only.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from engine.errors import ArborError
from engine.redaction import redact
from storage.trace_export import run_to_otlp
from storage.traces import TraceStore

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
HEADERS_ENV = "OTEL_EXPORTER_OTLP_HEADERS"
TRACES_HEADERS_ENV = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
TIMEOUT_ENV = "OTEL_EXPORTER_OTLP_TIMEOUT"
TRACES_TIMEOUT_ENV = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
DISABLED_ENV = "OTEL_SDK_DISABLED"
TRACES_PATH = "v1/traces"

#: Seconds one export request may take (the SDK retries 429/502/503/504 within it). Short: a
#: live receiver answers in milliseconds, and a slow one must not hold spans or exit back.
DEFAULT_TIMEOUT_S = 3.0
#: How long the batch processor lets spans gather before a post.
SCHEDULE_DELAY_MS = 200

#: Spans waiting to be posted, at most (the SDK's default, 2048, is one large run); more are
#: dropped, counted by the SDK, and stay in the store.
MAX_QUEUED_SPANS = 100_000

#: The SDK modules whose error logs Arbor captures while it exports (reported once instead).
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.common.http",
)

#: OTLP/JSON's span kind numbers -> the SDK's enum.
_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


class OtlpExportError(ArborError):
    """An explicit export (``export-run --to``) that the receiver did not accept."""


# -- where to send ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OtlpTarget:
    """An OTLP/HTTP traces endpoint (the full ``.../v1/traces`` URL) and its headers.

    ``repr`` and ``describe`` never show header values (they often hold API keys)."""

    endpoint: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{safe_url(self.endpoint)!r} is not an http(s) URL for an OTLP receiver."
            )

    def describe(self) -> str:
        """The endpoint without credentials, and header names with their values hidden."""
        names = ", ".join(f"{name}=***" for name, _ in self.headers)
        return safe_url(self.endpoint) + (f" (headers: {names})" if names else "")

    def __repr__(self) -> str:
        return f"OtlpTarget({self.describe()!r})"


def safe_url(url: str) -> str:
    """``url`` without a user, password, query or fragment (where credentials hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return redact(urlunsplit((parts.scheme, host, parts.path, "", "")))


def traces_url(base: str) -> str:
    """A base OTLP/HTTP URL (``OTEL_EXPORTER_OTLP_ENDPOINT``) with the traces path appended,
    as the specification says; a URL already ending in ``/v1/traces`` is kept."""
    base = base.strip()
    if base.rstrip("/").endswith("/" + TRACES_PATH):
        return base
    return base.rstrip("/") + "/" + TRACES_PATH


def parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    """``k=v,k2=v2`` (percent-encoded, as ``OTEL_EXPORTER_OTLP_HEADERS``) as pairs. A malformed
    entry is a ``ValueError`` naming its position, never its value."""
    pairs = []
    for position, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"OTLP header entry {position} is not name=value (values are not shown)."
            )
        pairs.append((unquote(name.strip()).lower(), unquote(value.strip())))
    return tuple(pairs)


def target_from_env(environ: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """The target the standard ``OTEL_EXPORTER_OTLP_*`` variables name, or None."""
    env = os.environ if environ is None else environ
    if env.get(DISABLED_ENV, "").strip().lower() == "true":
        return None
    endpoint = env.get(TRACES_ENDPOINT_ENV, "").strip()
    if not endpoint:
        base = env.get(ENDPOINT_ENV, "").strip()
        if not base:
            return None
        endpoint = traces_url(base)
    headers = env.get(TRACES_HEADERS_ENV) or env.get(HEADERS_ENV) or ""
    timeout = env.get(TRACES_TIMEOUT_ENV) or env.get(TIMEOUT_ENV)
    try:  # seconds, as the Python SDK reads these variables
        timeout_s = float(timeout) if timeout else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"OTLP timeout {timeout!r} is not a number of seconds.") from None
    return OtlpTarget(endpoint, parse_headers(headers), timeout_s)


# -- spans -----------------------------------------------------------------------------------
def run_spans(store: TraceStore, run_id: str) -> list[ReadableSpan]:
    """Run ``run_id`` as the SDK's spans: ``run_to_otlp``'s spans, field for field. Raises
    ``TraceStoreError`` for an unknown run."""
    return otlp_json_spans(run_to_otlp(store, run_id))


def otlp_json_spans(request: Mapping[str, Any]) -> list[ReadableSpan]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` (as ``run_to_otlp`` builds it) as
    ``ReadableSpan`` objects with the same ids, times, attributes, events and status."""
    spans = []
    for resource_spans in request.get("resourceSpans", ()):
        resource = Resource(_attributes(resource_spans.get("resource", {}).get("attributes", ())))
        for scope_spans in resource_spans.get("scopeSpans", ()):
            scope = scope_spans.get("scope", {})
            instrumentation = InstrumentationScope(scope.get("name", "arbor"), scope.get("version"))
            for span in scope_spans.get("spans", ()):
                spans.append(_readable(span, resource, instrumentation))
    return spans


def _readable(span: Mapping[str, Any], resource: Resource, scope: InstrumentationScope):
    trace_id = int(span["traceId"], 16)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, int(span["spanId"], 16), is_remote=False, trace_flags=flags)
    parent = None
    if span.get("parentSpanId"):
        parent = SpanContext(
            trace_id, int(span["parentSpanId"], 16), is_remote=False, trace_flags=flags
        )
    status_json = span.get("status", {})
    code = _STATUS.get(status_json.get("code", 0), StatusCode.UNSET)
    # the SDK keeps a description for ERROR only, as OTLP does
    status = Status(code, status_json.get("message") if code is StatusCode.ERROR else None)
    events = [
        Event(event["name"], _attributes(event.get("attributes", ())), int(event["timeUnixNano"]))
        for event in span.get("events", ())
    ]
    return ReadableSpan(
        name=span["name"],
        context=context,
        parent=parent,
        resource=resource,
        attributes=_attributes(span.get("attributes", ())),
        events=events,
        kind=_KINDS.get(span.get("kind", 1), SpanKind.INTERNAL),
        status=status,
        start_time=int(span["startTimeUnixNano"]),
        end_time=int(span["endTimeUnixNano"]),
        instrumentation_scope=scope,
    )


def _attributes(key_values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _value(kv["value"]) for kv in key_values}


def _value(any_value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as the Python value the SDK encodes back to the same one."""
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])  # "NaN" / "Infinity" too
    if "arrayValue" in any_value:
        return tuple(_value(v) for v in any_value["arrayValue"].get("values", ()))
    return None


# -- the SDK's error logs, captured ---------------------------------------------------------
class _Capture(logging.Filter):
    """Swallows the SDK exporter's log records on a thread that is inside ``_captured`` and
    keeps their messages there; other threads' records (a user's own OTel setup) pass."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        messages = getattr(self.local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False


_capture = _Capture()
for _name in _SDK_LOGGERS:
    logging.getLogger(_name).addFilter(_capture)


@contextmanager
def _captured() -> Iterator[list[str]]:
    messages: list[str] = []
    _capture.local.messages = messages
    try:
        yield messages
    finally:
        _capture.local.messages = None


def _problem(target: OtlpTarget, messages: Sequence[str]) -> str:
    """One line: what went wrong at ``target``, with credentials and header values removed."""
    detail = messages[-1] if messages else "the receiver did not accept the spans"
    for _name, value in target.headers:
        if value:
            detail = detail.replace(value, "***")
    detail = redact(detail.replace(target.endpoint, safe_url(target.endpoint)))
    return f"OTLP export to {target.describe()} failed: {detail}"


def _exporter(target: OtlpTarget) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=target.endpoint, headers=dict(target.headers), timeout=target.timeout_s
    )


# -- explicit export (export-run --to) ------------------------------------------------------
def send_run(store: TraceStore, run_id: str, target: OtlpTarget) -> int:
    """Send run ``run_id``'s spans to ``target`` now and return how many were accepted.
    Raises ``TraceStoreError`` for an unknown run and ``OtlpExportError`` (one line, no header
    values) when the receiver is unreachable or refuses them."""
    spans = run_spans(store, run_id)
    exporter = _exporter(target)
    try:
        with _captured() as messages:
            result = exporter.export(spans)
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        raise OtlpExportError(_problem(target, messages))
    return len(spans)


# -- live export -----------------------------------------------------------------------------
class _ReportingExporter(SpanExporter):
    """The SDK exporter, whose failures are reported once per endpoint (a logging warning and
    ``LiveExporter.problem``) instead of the SDK's error line per batch."""

    def __init__(self, live: LiveExporter, target: OtlpTarget):
        self.live = live
        self.target = target
        self.inner = _exporter(target)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            with _captured() as messages:
                result = self.inner.export(spans)
        except Exception as exc:  # never into the batch thread's own error log
            messages = [f"{type(exc).__name__}: {exc}"]
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.live.exported(len(spans))
        else:
            self.live.failed(self.target, _problem(self.target, messages), len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class LiveExporter:
    """Sends finished runs to one OTLP target in the background (see the module docstring)."""

    def __init__(self, target: OtlpTarget):
        self.target = target
        self.sent_spans = 0
        self.dropped_spans = 0
        #: The first failure's one-line message (None while every export succeeded).
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._processor = BatchSpanProcessor(
            _ReportingExporter(self, target),
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_queue_size=MAX_QUEUED_SPANS,
            export_timeout_millis=int(target.timeout_s * 1000) + 500,
        )

    def submit_run(self, store: TraceStore, run_id: str) -> None:
        """Read run ``run_id``'s spans now (one query of its rows, a few ms) and queue them for
        the batch processor's thread. Reading here, on the thread that recorded the run, sees
        exactly what was just written, through the connection that wrote it."""
        try:
            spans = run_spans(store, run_id)
        except Exception as exc:  # a store problem is the store's to report, not ours
            problem = f"OTLP export of run {run_id!r} skipped: cannot read it: {exc}"
            self.failed(self.target, redact(problem), 0)
            return
        for span in spans:
            self._processor.on_end(span)

    def exported(self, count: int) -> None:
        with self._lock:
            self.sent_spans += count

    def failed(self, target: OtlpTarget, problem: str, count: int) -> None:
        with self._lock:
            self.dropped_spans += count
            first = self.problem is None
            if first:
                self.problem = problem
        if first and _reported.add(target.endpoint):
            logger.warning("%s (the trace store keeps every run; said once)", problem)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every span queued so far was posted (or failed); False when that took
        longer than ``timeout_s`` (default: the request timeout and a margin)."""
        wait_s = timeout_s if timeout_s is not None else self.target.timeout_s + 2.0
        return self._processor.force_flush(int(wait_s * 1000))

    def shutdown(self) -> None:
        self._processor.shutdown()


class _Reported:
    """The endpoints whose failure was logged already (once per endpoint per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def add(self, endpoint: str) -> bool:
        with self._lock:
            if endpoint in self._seen:
                return False
            self._seen.add(endpoint)
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_reported = _Reported()

# -- the process's exporter ----------------------------------------------------------------
_UNSET: Any = object()
_state_lock = threading.Lock()
_override: OtlpTarget | None = _UNSET
_live: LiveExporter | None = None


def set_override(target: OtlpTarget | None) -> None:
    """Use ``target`` (None: no live export) instead of the environment, in this process only
    (the Settings page). Never written anywhere."""
    global _override
    with _state_lock:
        _override = target


def clear_override() -> None:
    """Back to the ``OTEL_EXPORTER_OTLP_*`` environment variables."""
    set_override(_UNSET)


def current_target() -> OtlpTarget | None:
    """Where finished runs go now: the override, else the environment (None: nowhere). A
    malformed environment is reported once and means no export."""
    with _state_lock:
        override = _override
    if override is not _UNSET:
        return override
    try:
        return target_from_env()
    except ValueError as exc:
        if _reported.add("<environment>"):
            logger.warning("OTLP live export is off: %s", exc)
        return None


def live_exporter() -> LiveExporter | None:
    """The exporter for ``current_target()`` (made, or replaced when the target changed)."""
    global _live
    target = current_target()
    with _state_lock:
        live = _live
        if live is not None and live.target == target:
            return live
        _live = LiveExporter(target) if target is not None else None
    if live is not None:  # the target changed: let the old one finish in the background
        threading.Thread(target=live.shutdown, daemon=True).start()
    return _live


def running_exporter() -> LiveExporter | None:
    """The live exporter made so far in this process (for its counts), without making one."""
    with _state_lock:
        return _live


def export_finished_run(store: TraceStore, run_id: str) -> None:
    """Queue a finished run (or a recorded planner run) for live export when a receiver is
    configured; never raises, never waits."""
    try:
        live = live_exporter()
        if live is not None:
            live.submit_run(store, run_id)
    except Exception as exc:
        if _reported.add("<setup>"):
            logger.warning("OTLP live export is off: %s", redact(str(exc)))


def reset() -> None:
    """Stop the live exporter (queued spans get one short flush), forget the override and the
    failures already reported: the state of a fresh process (tests, the Settings page)."""
    global _live, _override
    with _state_lock:
        live, _live, _override = _live, None, _UNSET
    if live is not None:
        live.flush()
        live.shutdown()
    _reported.clear()


@atexit.register
def _flush_at_exit() -> None:
    """A command-line run exits right after it finishes: give its spans one short flush (none
    when the receiver already failed: exit is not held up by a receiver that is down)."""
    live = _live
    if live is not None and live.problem is None:
        live.flush(live.target.timeout_s)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENDPOINT_ENV",
    "HEADERS_ENV",
    "TRACES_ENDPOINT_ENV",
    "TRACES_HEADERS_ENV",
    "LiveExporter",
    "OtlpExportError",
    "OtlpTarget",
    "clear_override",
    "current_target",
    "export_finished_run",
    "live_exporter",
    "otlp_json_spans",
    "parse_headers",
    "reset",
    "run_spans",
    "running_exporter",
    "safe_url",
    "send_run",
    "set_override",
    "target_from_env",
    "traces_url",
]
