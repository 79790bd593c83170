"""``FileKeeper``: this process's hold on one trace store file, kept between runs and handed to
another process on request.

Opening a DuckDB file costs about 15 ms and closing it (a checkpoint) about 16 ms; a connection
to a database this process already has open costs about 5 µs. So the keeper keeps one
*anchor* connection open while the file is in use here, and every write batch and every read
borrows a cursor of it. Back-to-back runs (an evaluation's hundreds) then pay neither open nor
close.

DuckDB lets one process at a time have the file open, so holding it must never lock the UI and a
command-line run out of each other:

- **On request.** A process that finds the file locked (``TraceStore.open_connection``, the SQL
  console's worker) creates the *request file* (``<store>.wanted``) each time it retries. The
  holder polls for it every few ms and, once nothing borrowed is outstanding, closes its anchor
  (the file is free) and removes the request; new borrows wait for that (at most
  ``handoff_wait_s``, and not at all in a thread that already holds one: it may be what the
  handoff waits for). Its next borrow after the handoff opens the file again, asking in turn.
  A holder keeps the file at least ``min_hold_s`` after opening it, so two busy processes take
  turns instead of passing the file back and forth without doing any work.
- **When idle.** Nothing borrowed for ``linger_s``: the anchor closes, so a tool that does not
  know about the request file (the DuckDB command line) gets in within ``linger_s`` of the last
  write or read.
- **At exit.** Anchors close (a checkpoint) after the trace writers have written what was queued.

A killed process leaves only committed transactions (DuckDB's write-ahead log is replayed on the
next open), so nothing is half-written.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import duckdb

Connection = duckdb.DuckDBPyConnection

#: What a waiting process adds to the store's file name to ask the holder for the file.
REQUEST_SUFFIX = ".wanted"


def request_path(path: Path) -> Path:
    """The request file of the store at ``path``."""
    return path.with_name(path.name + REQUEST_SUFFIX)


def ask_for_file(path: Path) -> None:
    """Tell the process holding the store file at ``path`` that this one waits for it."""
    with suppress(OSError):  # a read-only folder: the holder lets go when idle anyway
        request_path(path).touch()


class FileKeeper:
    """Lends cursors of one kept-open connection to the store file (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        linger_s: float = 0.3,
        min_hold_s: float = 0.05,
        poll_s: float = 0.005,
        handoff_wait_s: float = 0.2,
    ):
        self.path = path
        self.linger_s = linger_s
        self.min_hold_s = min_hold_s
        self.poll_s = poll_s
        self.handoff_wait_s = handoff_wait_s
        self._local = threading.local()  # connections each thread has borrowed
        self._cond = threading.Condition()
        self._anchor: Connection | None = None
        self._borrowed = 0
        self._handing_off = False
        self._anchored_at = 0.0
        self._last_return = 0.0
        self._watcher: threading.Thread | None = None
        #: Counters for tests and benchmarks: files opened, closed when idle, handed over on
        #: request, released by ``release()``.
        self.stats = {"opens": 0, "idle_closes": 0, "handoffs": 0, "releases": 0}

    @property
    def holds_file(self) -> bool:
        """Whether this process has the file open right now."""
        return self._anchor is not None

    @property
    def handoff_wanted(self) -> bool:
        """Whether another process asked for the file: give borrowed connections back soon."""
        return self._handing_off

    def borrow(self, open_anchor: Callable[[], Connection]) -> Connection:
        """A connection of its own (a cursor of the anchor) the caller gives back with
        ``give_back``; opens the file with ``open_anchor`` first when this process does not hold
        it (that call waits out another process's lock and asks for the file)."""
        nested = getattr(self._local, "depth", 0) > 0
        with self._cond:
            if not nested:
                # Let the handoff happen first, but never wait for long: a thread that holds
                # a borrowed connection may be waiting on this one (a flush inside a read).
                self._cond.wait_for(lambda: not self._handing_off, self.handoff_wait_s)
            if self._anchor is None:
                self._anchor = open_anchor()
                # Our own request (made while we waited) is answered; waiters elsewhere ask again.
                with suppress(OSError):
                    request_path(self.path).unlink(missing_ok=True)
                self._anchored_at = time.monotonic()
                self.stats["opens"] += 1
                self._watcher = threading.Thread(
                    target=self._watch, name=f"arbor-store-keeper:{self.path.name}", daemon=True
                )
                self._watcher.start()
            cursor = self._anchor.cursor()
            self._borrowed += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        return cursor

    def give_back(self, con: Connection) -> None:
        with suppress(duckdb.Error):
            con.close()
        self._local.depth = getattr(self._local, "depth", 1) - 1
        with self._cond:
            self._borrowed -= 1
            self._last_return = time.monotonic()
            self._cond.notify_all()

    def release(self, timeout: float = 15.0) -> bool:
        """Close the anchor now (once nothing borrowed is outstanding), so the file is free;
        False when borrowed connections stayed out for ``timeout`` seconds."""
        with self._cond:
            if self._anchor is None:
                return True
            self._handing_off = True
            try:
                if not self._cond.wait_for(lambda: self._borrowed == 0, timeout):
                    return False
                self._close_anchor("releases")
            finally:
                self._handing_off = False
                self._cond.notify_all()
            watcher = self._watcher
        # Let the watcher end: a thread still running at interpreter exit keeps DuckDB objects
        # alive, and nanobind then prints a "leaked instances" report on stderr.
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=1.0)
        return True

    # -- the watcher thread, alive while the file is held ------------------------------------
    def _watch(self) -> None:
        request = request_path(self.path)
        me = threading.current_thread()
        with self._cond:
            while self._anchor is not None:
                self._cond.wait(self.poll_s)
                if self._anchor is None or self._watcher is not me:
                    return  # closed, or closed and opened again: that anchor has its own
                now = time.monotonic()
                if not self._handing_off and now - self._anchored_at >= self.min_hold_s:
                    self._handing_off = request.exists()
                if self._borrowed:
                    continue
                if self._handing_off:
                    self._close_anchor("handoffs")
                    with suppress(OSError):
                        request.unlink(missing_ok=True)
                    self._handing_off = False
                    self._cond.notify_all()
                    return
                if now - self._last_return >= self.linger_s:
                    self._close_anchor("idle_closes")
                    return

    def _close_anchor(self, why: str) -> None:
        """With the lock held and nothing borrowed: close the file."""
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            with suppress(duckdb.Error):
                anchor.close()
            self.stats[why] += 1


_keepers_lock = threading.Lock()
_keepers: dict[Path, FileKeeper] = {}


def keeper_for(file_id: Path) -> FileKeeper:
    """The process's keeper of the store file ``file_id`` (an absolute path)."""
    with _keepers_lock:
        keeper = _keepers.get(file_id)
        if keeper is None:
            keeper = _keepers[file_id] = FileKeeper(file_id)
        return keeper


def release_all() -> None:
    """Close every file this process holds (at exit, after the writers have flushed)."""
    with _keepers_lock:
        keepers = list(_keepers.values())
    for keeper in keepers:
        keeper.release(timeout=5.0)


atexit.register(release_all)

__all__ = [
    "REQUEST_SUFFIX",
    "FileKeeper",
    "ask_for_file",
    "keeper_for",
    "release_all",
    "request_path",
]
