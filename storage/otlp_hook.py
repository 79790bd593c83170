"""The one call the trace writer and the planner-run recorder make when a run is recorded:
``export_when_configured``. It stays light (no OpenTelemetry import) unless live export is
configured, so a process that never exports never loads the SDK."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.traces.store import TraceStore

#: Any of these set means live export may be wanted (``storage.otlp_live`` decides).
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def live_export_wanted() -> bool:
    """Whether a live OTLP receiver may be configured (environment, or the Settings page,
    which has loaded ``storage.otlp_live``)."""
    configured = any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)
    return configured or "storage.otlp_live" in sys.modules


def export_when_configured(store: TraceStore, run_id: str) -> None:
    """Queue run ``run_id`` for live OTLP export if a receiver is configured (environment, or
    the Settings page, which has loaded ``storage.otlp_live``). Never raises, never waits."""
    if not live_export_wanted():
        return
    try:
        from storage.otlp_live import export_finished_run
    except ImportError:  # a broken install must not fail a run that has finished
        return
    export_finished_run(store, run_id)


__all__ = ["export_when_configured", "live_export_wanted"]
