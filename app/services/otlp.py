"""OTLP live export, as the CLI (``run.py export-run RUN_ID --to URL``) and the Settings page
use it: where finished runs go (the environment or the page's in-memory choice) and sending a
recorded run now. The export itself is ``storage.otlp_live`` (the OpenTelemetry SDK)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.otlp_live import OtlpTarget
    from storage.traces import TraceStore


def target_for_url(url: str, headers: str | None = None) -> OtlpTarget:
    """An OTLP target for ``url`` (a traces URL ending in ``/v1/traces``, or a base URL, which
    gets it appended) with ``headers`` (``k=v,...``; default: ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``
    or ``OTEL_EXPORTER_OTLP_HEADERS``). ``ValueError`` (one line, no header values) when
    either is malformed."""
    from storage.otlp_live import (
        HEADERS_ENV,
        TRACES_HEADERS_ENV,
        OtlpTarget,
        parse_headers,
        traces_url,
    )

    if not url or not url.strip():
        raise ValueError("give the receiver's URL, e.g. http://127.0.0.1:6006/v1/traces")
    if headers is None:
        headers = os.environ.get(TRACES_HEADERS_ENV) or os.environ.get(HEADERS_ENV) or ""
    return OtlpTarget(traces_url(url), parse_headers(headers))


def send_recorded_run(store: TraceStore, run_id: str, url: str, headers: str | None = None) -> str:
    """Send recorded run ``run_id`` to ``url`` now; returns the one-line summary. Raises
    ``TraceStoreError`` for an unknown run, ``OtlpExportError`` when the receiver is down or
    refuses the spans, ``ValueError`` for a malformed URL or headers."""
    from storage.otlp_live import send_run

    target = target_for_url(url, headers)
    count = send_run(store, run_id, target)
    return f"sent {count} spans of run {run_id} to {target.describe()}"


def live_target_description() -> str | None:
    """Where finished runs go now (credentials and header values hidden), or None."""
    from storage.otlp_live import current_target

    target = current_target()
    return target.describe() if target is not None else None


def use_for_this_process(url: str | None, headers: str | None = None) -> str | None:
    """Send finished runs of this process to ``url`` (None or "": none) with ``headers``
    (None: the environment's), instead of the environment variables; kept in memory only.
    Returns the new target's description."""
    from storage.otlp_live import set_override

    if not url or not url.strip():
        set_override(None)
        return None
    target = target_for_url(url, headers)
    set_override(target)
    return target.describe()


def use_environment() -> str | None:
    """Back to the ``OTEL_EXPORTER_OTLP_*`` variables; returns where runs go now."""
    from storage.otlp_live import clear_override

    clear_override()
    return live_target_description()


def live_status() -> tuple[int, int, str | None]:
    """Spans sent and dropped by this process's live exporter, and its first failure."""
    from storage.otlp_live import running_exporter

    exporter = running_exporter()
    if exporter is None:
        return 0, 0, None
    return exporter.sent_spans, exporter.dropped_spans, exporter.problem


__all__ = [
    "live_status",
    "live_target_description",
    "send_recorded_run",
    "target_for_url",
    "use_environment",
    "use_for_this_process",
]
