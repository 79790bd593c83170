"""What stores and writers on one file share inside this process: the live writers (so a read
can wait for what they queued) and one kept-open read connection while a writer holds the file.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from storage.traces.store import TraceStore
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


def writer_holds(path: Path) -> bool:
    with _writers_lock:
        return any(writer.connected for writer in _live_writers.get(path, ()))


@dataclass
class _Reader:
    lock: threading.Lock = field(default_factory=threading.Lock)
    con: duckdb.DuckDBPyConnection | None = None


class _SharedReaders:
    """One kept-open read connection per store file, only while a writer here holds the file.

    Opening a connection costs about 1 ms while the database is already open in this process
    (about 25 ms when it is not), as much as a cache lookup itself; a run looks up once per
    scheduling round. The writer closes it when it lets go of the file, so other processes are
    never kept out by a reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: dict[Path, _Reader] = {}

    def _reader(self, path: Path) -> _Reader:
        with self._lock:
            return self._readers.setdefault(path, _Reader())

    @contextmanager
    def connection(self, store: TraceStore) -> Iterator[duckdb.DuckDBPyConnection]:
        path = store.file_id
        reader = self._reader(path)
        with reader.lock:
            if reader.con is None and writer_holds(path):
                reader.con = store.open_connection()
            if reader.con is not None:
                try:
                    yield reader.con
                except duckdb.Error:
                    reader.con.close()
                    reader.con = None
                    raise
                return
        with store.connect() as con:
            yield con

    def release(self, path: Path) -> None:
        reader = self._reader(path)
        with reader.lock:
            if reader.con is not None:
                with suppress(duckdb.Error):
                    reader.con.close()
                reader.con = None


#: The process's shared read connections (the call cache's lookups go through them).
shared_readers = _SharedReaders()

__all__ = ["live_writers", "register_writer", "shared_readers", "writer_holds"]
