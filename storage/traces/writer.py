"""``TraceWriter``: the run listener that writes events from a background thread, in batches
(group commit), on a connection borrowed from the process's ``FileKeeper``; and the exit hook
that closes writers still open when the interpreter ends, so queued events are written."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING

import duckdb

from engine.errors import TraceStoreError
from engine.run.events import (
    BudgetUpdate,
    Event,
    ModelCallFinished,
    NodeProgress,
    RunFinished,
    RunPaused,
)
from storage.otlp_hook import export_when_configured, live_export_wanted
from storage.traces.file_keeper import FileKeeper, keeper_for
from storage.traces.rows import WriterState, collapse
from storage.traces.sharing import register_writer
from storage.traces.sink import Sink

if TYPE_CHECKING:
    from storage.traces.store import TraceStore


class TraceWriter:
    """A run listener that writes events from a background thread, in batches.

    ``writer(event)`` only queues the event (microseconds), so a run of many instant nodes does
    not pay a connection or a transaction per event. The thread takes whatever is queued and
    writes it as one transaction (group commit); a node started and finished within one batch
    becomes one row. Events reach the file within milliseconds of the last one emitted (during
    a burst of instant nodes, within ``burst_s``, 0.1 s), so a process killed mid-run loses at
    most that much.

    - ``RunFinished`` is written before the call returns (another process sees the whole run
      at once), unless ``sync_finish`` is False: then back-to-back runs (an evaluation's) share
      transactions, and whoever owns the writer flushes or closes it when the runs are done.
      Either way a cache lookup in this process finds every successful call queued here, even
      before it is committed.
    - The connection is a cursor borrowed from the process's ``FileKeeper`` (microseconds: the
      keeper keeps the file open between runs) and given back whenever the queue is empty or
      another process asks for the file; the keeper hands the file over on request and closes
      it when idle (``storage.traces.file_keeper``). Events queued meanwhile wait in memory.
    - The thread stops after ``idle_stop_s`` without events; the next event starts another.
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
        idle_stop_s: float = 1.0,
        hold_s: float = 0.1,
        sync_finish: bool = True,
        linger_s: float = 0.002,
        burst_s: float = 0.1,
        max_batch: int = 5000,
        retry_max_s: float = 2.0,
    ):
        """``linger_s``: how long the thread lets a batch grow before writing it; while events
        keep arriving (a burst of instant nodes) it goes on waiting, ``linger_s`` at a time, up
        to ``burst_s`` in all, so a burst shares one transaction; ``max_batch``
        caps the events in one transaction; ``retry_max_s`` is the longest back-off between
        attempts after a failure; ``hold_s``: how long the thread keeps its connection when
        the queue runs empty; ``idle_stop_s``: how long the thread waits for events before it
        stops."""
        self.store = store
        self.idle_stop_s = idle_stop_s
        self.hold_s = hold_s
        self.sync_finish = sync_finish
        self._uncommitted_calls: dict[str, ModelCallFinished] = {}
        self.linger_s = linger_s
        self.burst_s = burst_s
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
        #: Counters for tests and benchmarks: batches committed, events written, rows written,
        #: failed write attempts.
        self.stats = {
            "batches": 0,
            "events": 0,
            "node_rows": 0,
            "call_rows": 0,
            "failed_attempts": 0,
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
            if self._thread is None or len(self._pending) in (1, self.max_batch):
                # The thread waits for the first event, or lingers until a batch is full (or
                # a flush): waking it for every event made it re-check the queue thousands of
                # times per batch, taking the interpreter lock from the thread emitting.
                self._wake()
            error, self._unreported = self._unreported, None
        if isinstance(event, ModelCallFinished):
            self._remember_call(event)
        if isinstance(event, RunPaused):  # a paused run is seen paused at once
            self.flush()
        elif isinstance(event, RunFinished):
            if self.sync_finish or live_export_wanted():
                self.flush()
            export_when_configured(self.store, event.run_id)  # live OTLP, when configured
        elif error is not None:
            raise error

    # -- the call cache's view of calls not committed yet ------------------------------------
    def _remember_call(self, event: ModelCallFinished) -> None:
        """Keep a successful call until it is committed, so a cache lookup in this process
        finds it at once (``TraceStore.lookup``), committed or not."""
        if event.status == "ok" and event.cache_key:
            with self._cond:
                self._uncommitted_calls[event.cache_key] = event

    def uncommitted_call(self, cache_key: str) -> ModelCallFinished | None:
        """The newest successful call with ``cache_key`` queued here and not committed yet."""
        return self._uncommitted_calls.get(cache_key)

    def _forget_committed(self, batch: list[Event]) -> None:
        """With the lock held: drop the batch's calls from the uncommitted ones."""
        if not self._uncommitted_calls:
            return
        for event in batch:
            if (
                isinstance(event, ModelCallFinished)
                and event.cache_key
                and self._uncommitted_calls.get(event.cache_key) is event
            ):
                del self._uncommitted_calls[event.cache_key]

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
            self._uncommitted_calls.clear()
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
        keeper = keeper_for(self.store.file_id)
        con: duckdb.DuckDBPyConnection | None = None
        sink: Sink | None = None

        def give_back() -> None:
            nonlocal con, sink
            if con is not None:
                keeper.give_back(con)
            con, sink = None, None

        try:
            while True:
                with self._cond:
                    if con is not None and not self._pending:
                        self._hold_briefly(keeper)
                    if con is not None and (not self._pending or keeper.handoff_wanted):
                        batch = None  # nothing more right now, or another process asks
                    else:
                        batch = self._take_batch()
                        if batch is None:
                            self._thread = None
                            return
                if batch is None:
                    give_back()
                    continue
                try:
                    if con is None:
                        con = keeper.borrow(self.store.open_connection)
                        sink = Sink(con)
                    state = self._state.copy()
                    rows = collapse(batch, state)
                    assert sink is not None
                    sink.write(rows, idempotent=self._failing_since is not None)
                except Exception as exc:  # keep the events; report; retry later
                    give_back()
                    self._failed(batch, exc)
                    continue
                self._state = state
                with self._cond:
                    self._written += len(batch)
                    self._forget_committed(batch)
                    self._failing_since = None
                    self.stats["batches"] += 1
                    self.stats["events"] += len(batch)
                    self.stats["node_rows"] += rows.node_rows
                    self.stats["call_rows"] += len(rows.calls)
                    self._cond.notify_all()
        finally:
            give_back()
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
                self._cond.notify_all()

    def _hold_briefly(self, keeper: FileKeeper) -> None:
        """With the lock held and the queue empty: keep the connection (and its appenders)
        up to ``hold_s`` for the next events, the next run's usually, unless another process
        asks for the file meanwhile."""
        deadline = time.monotonic() + self.hold_s
        while not self._pending and not self._closing and not keeper.handoff_wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(left, keeper.poll_s))

    def _take_batch(self) -> list[Event] | None:
        """With the lock held: wait for work; None means "stop the thread" (closing, or
        nothing queued: the next event starts a new one)."""
        cond = self._cond
        if self._failing_since is not None and self._pending and not self._closing:
            # Back off after a failure; a flush or close asks for an attempt now.
            delay = min(self.retry_max_s, 0.05 * 2 ** min(self._failures, 6))
            cond.wait_for(lambda: self._flush_wanted or self._closing, timeout=delay)
        if self._closing and self._failing_since is not None:
            return None  # close() already tried once more through flush(); give up
        if not self._pending:
            if self._closing or not cond.wait_for(
                lambda: self._pending or self._closing, self.idle_stop_s
            ):
                return None
            if not self._pending:
                return None
        self._linger()
        self._flush_wanted = False
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    def _linger(self) -> None:
        """With the lock held and events queued: let the batch grow until the queue has been
        quiet for ``linger_s``, ``burst_s`` has passed, it is full, or someone flushes.

        Each transaction has a fixed cost in DuckDB whatever its size (about 0.5-0.9 ms of CPU
        per appender flush, three or four flushes, and the commit), which the thread emitting
        the events pays too, through the interpreter lock and the second core. A 1000-node run
        of instant nodes wrote 12 transactions with a fixed 2 ms wait; waiting out the burst it
        writes 2, and what traces add to it fell from 0.18 to 0.09 ms per node (medians of
        three runs of ``bench/orchestration_overhead.py``). Events from real model calls
        arrive milliseconds apart and are still written ``linger_s`` after the last one; a
        process killed mid-burst loses at most ``burst_s`` of events.
        """
        cond = self._cond

        def ready() -> bool:
            return self._flush_wanted or self._closing or len(self._pending) >= self.max_batch

        started = time.monotonic()
        seen = len(self._pending)
        while not ready() and not cond.wait_for(ready, self.linger_s):
            grew, seen = len(self._pending) > seen, len(self._pending)
            if not grew or self.linger_s <= 0 or time.monotonic() - started >= self.burst_s:
                return

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
