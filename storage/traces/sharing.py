"""The live writers of each store file in this process, so a read can wait for what they
queued (the file itself is shared through ``storage.traces.file_keeper``)."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.traces.writer import TraceWriter

#: Live writers by store file, so reads in this process can see what they queued.
_writers_lock = threading.Lock()
_live_writers: dict[Path, weakref.WeakSet[TraceWriter]] = {}


def register_writer(file_id: Path, writer: TraceWriter) -> None:
    """Count ``writer`` among the live writers of the store file ``file_id``."""
    with _writers_lock:
        _live_writers.setdefault(file_id, weakref.WeakSet()).add(writer)


def live_writers(file_id: Path) -> list[TraceWriter]:
    """The writers of the store file ``file_id`` still alive in this process."""
    with _writers_lock:
        return list(_live_writers.get(file_id, ()))


__all__ = ["live_writers", "register_writer"]
