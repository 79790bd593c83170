"""``TraceWriter``: the run listener that writes events from a background thread, in batches
(group commit), holding the store file only while events flow; and the exit hook that closes
writers still open when the interpreter ends, so queued events are written."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING

import duckdb

from engine.errors import TraceStoreError
from engine.run.events import BudgetUpdate, Event, NodeProgress, RunFinished, RunPaused
from storage.otlp_hook import export_when_configured
from storage.traces.rows import WriterState, collapse
from storage.traces.sharing import register_writer, shared_readers
from storage.traces.sink import Sink

if TYPE_CHECKING:
    from storage.traces.store import TraceStore


class TraceWriter:
    """A run listener that writes events from a background thread, in batches.

    ``writer(event)`` only queues the event (microseconds), so a run of many instant nodes does
    not pay a connection or a transaction per event. The thread takes whatever is queued and
    writes it as one transaction (group commit); a node started and finished within one batch
    becomes one row. Events reach the file within milliseconds of being emitted, so a process
    killed mid-run loses at most the last few ms.

    - ``RunFinished`` is written before the call returns (a following run's cache lookup, or
      another process, sees the whole run at once), and the file is released right after.
    - The connection stays open only while events flow and closes after ``idle_close_s``, so
      another process (the UI, a command-line run) can open the store between runs. A writer
      kept busy without a pause lets go of the file for ``yield_s`` every ``max_hold_s``, so a
      reader or another run's writer elsewhere gets in within about a second, not after the
      run; its events wait in memory meanwhile.
    - A failed write keeps its events queued and is retried with back-off; the failure is raised
      from the next ``writer(event)`` (the executor turns it into a run warning), from
      ``flush()`` and from the ``RunFinished`` call. Nothing already in the store is touched.
    - Reads through any ``TraceStore`` on the same file in this process wait for what is queued,
      so code that reads right after an event sees it.
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        idle_close_s: float = 0.3,
        max_hold_s: float = 1.0,
        yield_s: float = 0.1,
        linger_s: float = 0.002,
        max_batch: int = 5000,
        retry_max_s: float = 2.0,
    ):
        """``linger_s``: how long the thread lets a batch grow before writing it; ``max_batch``
        caps the events in one transaction; ``retry_max_s`` is the longest back-off between
        attempts after a failure."""
        self.store = store
        self.idle_close_s = idle_close_s
        self.max_hold_s = max_hold_s
        self.yield_s = yield_s
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.retry_max_s = retry_max_s
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._enqueued = 0  # events queued since creation
        self._written = 0  # events committed (always a prefix of the queued ones)
        self._failures = 0  # failed write attempts
        self._failing_since: float | None = None
        self._last_error: TraceStoreError | None = None
        self._unreported: TraceStoreError | None = None
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._state = WriterState()
        self._connected = False
        #: Counters for tests and benchmarks: batches committed, events written, rows written,
        #: failed write attempts.
        self.stats = {
            "batches": 0,
            "events": 0,
            "node_rows": 0,
            "call_rows": 0,
            "failed_attempts": 0,
            "yields": 0,
        }
        register_writer(store.file_id, self)
        _at_exit.add(self)

    # -- the listener side -------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Queue ``event``; raise a background write failure not reported yet (the event is
        still queued). A ``RunFinished`` is written before this returns."""
        if isinstance(event, NodeProgress | BudgetUpdate):
            return
        with self._cond:
            if self._closed or self._closing:
                raise TraceStoreError(f"The trace writer for {self.store.path} is closed.")
            self._pending.append(event)
            self._enqueued += 1
            self._wake()
            error, self._unreported = self._unreported, None
        if isinstance(event, RunFinished | RunPaused):  # a paused run is seen paused at once
            self.flush()
            if isinstance(event, RunFinished):  # live OTLP export, when configured
                export_when_configured(self.store, event.run_id)
        elif error is not None:
            raise error

    record = __call__

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event queued before this call is committed.

        Raises ``TraceStoreError`` when a write attempt fails meanwhile (the events stay
        queued and are retried) or after ``timeout`` seconds (default: the store's lock wait
        plus a margin).
        """
        wait_s = timeout if timeout is not None else self.store.lock_wait_s + 5.0
        deadline = time.monotonic() + wait_s
        with self._cond:
            target = self._enqueued
            if self._written >= target:
                return
            if self._closed:  # its unwritten events were dropped (and reported) by close()
                raise TraceStoreError(f"The trace writer for {self.store.path} is closed.")
            failures = self._failures
            self._flush_wanted = True
            self._wake()
            while self._written < target:
                if self._failures != failures:
                    self._unreported = None
                    raise self._last_error or TraceStoreError("trace write failed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TraceStoreError(
                        f"Traces not written to {self.store.path} within {wait_s:.0f} s;"
                        f" {target - self._written} events are still queued."
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        """Write what is queued, stop the thread and release the file.

        Raises ``TraceStoreError`` if queued events could not be written (they are dropped).
        """
        error: TraceStoreError | None = None
        try:
            self.flush()
        except TraceStoreError as exc:
            error = exc
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            lost = len(self._pending)
            self._pending.clear()
            self._closed = True
        _at_exit.discard(self)
        if error is not None or lost:
            raise TraceStoreError(
                f"{lost} trace events could not be written to {self.store.path}: {error}"
            )

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether the writer holds the file open right now (it lets go when idle)."""
        return self._connected

    # -- the background side -----------------------------------------------------------------
    def _wake(self) -> None:
        """Called with the lock held: make sure a thread will look at the queue."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"arbor-trace-writer:{self.store.path.name}", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

    def _work(self) -> None:
        con: duckdb.DuckDBPyConnection | None = None
        sink: Sink | None = None
        held_since = time.monotonic()

        def release() -> None:
            nonlocal con, sink
            # Not "connected" first, so no lookup opens a shared reader after it is closed;
            # the file is free only once both are.
            self._connected = False
            shared_readers.release(self.store.file_id)
            if con is not None:
                with suppress(duckdb.Error):
                    con.close()
            con, sink = None, None

        try:
            while True:
                with self._cond:
                    batch = self._take_batch(con is not None)
                    if batch is None and con is None:
                        self._thread = None
                        return
                if batch is None:  # idle, or closing
                    release()
                    continue
                try:
                    if con is None:
                        con = self.store.open_connection()
                        sink = Sink(con)
                        self._connected = True
                        held_since = time.monotonic()
                    state = self._state.copy()
                    rows = collapse(batch, state)
                    assert sink is not None
                    sink.write(rows, idempotent=self._failing_since is not None)
                except Exception as exc:  # keep the events; report; retry later
                    release()
                    self._failed(batch, exc)
                    continue
                self._state = state
                with self._cond:
                    finished_run = bool(rows.runs_finished) and not self._pending
                if finished_run:
                    # A finished run releases the file before its RunFinished call returns.
                    release()
                busy_too_long = con is not None and time.monotonic() - held_since > self.max_hold_s
                if busy_too_long:
                    release()
                with self._cond:
                    self._written += len(batch)
                    self._failing_since = None
                    self.stats["batches"] += 1
                    self.stats["events"] += len(batch)
                    self.stats["node_rows"] += rows.node_rows
                    self.stats["call_rows"] += len(rows.calls)
                    self._cond.notify_all()
                    if busy_too_long:
                        # Busy without a pause: let other processes in (see the docstring).
                        self.stats["yields"] += 1
                        self._cond.wait_for(lambda: self._closing, self.yield_s)
        finally:
            release()
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
                self._cond.notify_all()

    def _take_batch(self, connected: bool) -> list[Event] | None:
        """With the lock held: wait for work; None means "release the file" (or stop)."""
        cond = self._cond
        if self._failing_since is not None and self._pending and not self._closing:
            # Back off after a failure; a flush or close asks for an attempt now.
            delay = min(self.retry_max_s, 0.05 * 2 ** min(self._failures, 6))
            cond.wait_for(lambda: self._flush_wanted or self._closing, timeout=delay)
        if self._closing and self._failing_since is not None:
            return None  # close() already tried once more through flush(); give up
        if not self._pending:
            if self._closing or not connected:
                return None
            if not cond.wait_for(lambda: self._pending or self._closing, self.idle_close_s):
                return None  # idle: let another process have the file
            if not self._pending:
                return None
        if not self._flush_wanted and not self._closing and len(self._pending) < self.max_batch:
            # Let a burst of events (many instant nodes) share one transaction.
            cond.wait_for(
                lambda: self._flush_wanted or len(self._pending) >= self.max_batch, self.linger_s
            )
        self._flush_wanted = False
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    def _failed(self, batch: list[Event], exc: Exception) -> None:
        if isinstance(exc, TraceStoreError):
            error = exc
        else:
            error = TraceStoreError(
                f"Cannot write traces to {self.store.path}: {exc}. The events are kept in memory"
                " and retried."
            )
            error.__cause__ = exc
        with self._cond:
            self._pending[:0] = batch
            self._failures += 1
            self.stats["failed_attempts"] += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                self._unreported = error  # once per episode; flush() always raises
            self._last_error = error
            self._cond.notify_all()


class _AtExit:
    """Closes writers still open when the interpreter exits, so queued events are written."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[TraceWriter] = weakref.WeakSet()
        atexit.register(self._close_all)

    def add(self, writer: TraceWriter) -> None:
        self._writers.add(writer)

    def discard(self, writer: TraceWriter) -> None:
        self._writers.discard(writer)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with suppress(TraceStoreError):
                writer.close()


_at_exit = _AtExit()

__all__ = ["TraceWriter"]
