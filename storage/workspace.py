"""The data directory as one object: trace store, session store, and a traced run.

The UI and ``run.py`` both go through here, so a run started from either is recorded the same
way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from engine.budget import RunCaps
from engine.events import Listener
from engine.executor import RunResult, execute_plan, new_run_id
from engine.plan import Plan
from storage import paths
from storage.sessions import SessionStore
from storage.traces import TraceStore


class Workspace:
    """Everything stored under one data directory."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.traces = TraceStore(self.root / "traces.duckdb")
        self.sessions = SessionStore(self.root / "sessions.sqlite")

    def run_plan(
        self,
        plan: Plan,
        caps: RunCaps | None = None,
        *,
        session_id: str | None = None,
        listeners: Iterable[Listener] = (),
        run_id: str | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Execute ``plan`` with every event written to the trace store as it happens.

        The run is traced under ``session_id``; if that session is saved, the run id is added
        to it before the run starts, so a run that crashes midway is still listed with it.
        """
        run_id = run_id or new_run_id()
        if session_id is not None and self.sessions.exists(session_id):
            self.sessions.add_run(session_id, run_id)
        return execute_plan(
            plan,
            caps,
            listeners=[self.traces, *listeners],
            run_id=run_id,
            session_id=session_id,
            cancel=cancel,
        )
