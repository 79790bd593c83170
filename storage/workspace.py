"""The data directory as one object: trace store, session store, and a traced run.

The UI and ``run.py`` both go through here, so a run started from either is recorded the same
way: events go to the trace store through a buffered ``TraceWriter`` as they happen, and the
store answers the run's call-cache lookups, so a re-run (or a resumed run) reuses every call
that was recorded before, even by a process that was killed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from contextlib import suppress
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import PlanError, TraceStoreError
from engine.models import registry_backend_factory
from engine.models.factory import BackendFactory
from engine.models.registry import REGISTRY_FILE, default_models_dir
from engine.plan import Plan
from engine.run.budget import RunCaps
from engine.run.control import RunControl
from engine.run.events import Listener, is_answered
from storage import paths
from storage.traces import TraceStore, TraceWriter, process_alive

if TYPE_CHECKING:
    from engine.run.executor import RunResult
    from storage.sessions import SessionStore


class Workspace:
    """Everything stored under one data directory."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.traces = TraceStore(self.root / "traces.duckdb")
        self._registry_cache: tuple[object, BackendFactory, str | None] | None = None

    @cached_property
    def sessions(self) -> SessionStore:
        """The session store, opened on first use: SQLModel and SQLAlchemy take 0.25 s to
        import, and most commands (run, runs, eval) never touch a session."""
        from storage.sessions import SessionStore

        return SessionStore(self.root / "sessions.sqlite")

    def _registry_factory(self) -> tuple[BackendFactory, str | None]:
        """``registry_backend_factory`` for this workspace, read again only when the registry
        file changes (its stat) or the models folder does: an evaluation makes hundreds of runs
        and reading the registry cost 0.2 ms of each."""
        try:
            info = os.stat(self.root / REGISTRY_FILE)
            stamp: tuple[object, ...] | None = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        key = (stamp, str(default_models_dir(self.root)))
        cached = self._registry_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        factory, problem = registry_backend_factory(self.root)
        self._registry_cache = (key, factory, problem)
        return factory, problem

    def run_plan(
        self,
        plan: Plan,
        caps: RunCaps | None = None,
        *,
        session_id: str | None = None,
        listeners: Iterable[Listener] = (),
        run_id: str | None = None,
        cancel: threading.Event | None = None,
        use_cache: bool = True,
        rerun: Iterable[str] = (),
        control: RunControl | None = None,
        writer: TraceWriter | None = None,
    ) -> RunResult:
        """Execute ``plan`` with every event written to the trace store as it happens.

        The run is traced under ``session_id``; if that session is saved, the run id is added
        to it before the run starts, so a run that crashes midway is still listed with it.
        With ``use_cache`` (the default) a call recorded before with the same key (rendered
        prompt, model, parameters, seed, sample index) is reused instead of made; ``rerun``
        names nodes that run again, with everything downstream, regardless. ``control``
        adds pins, breakpoints, step mode or a fork's reused nodes (``engine.run.control``).
        By default the run's traces are committed when this returns; a ``writer`` the caller
        owns (an evaluation's, shared by its runs) is used instead and left open, so the
        caller decides when they are flushed.
        """
        return self._execute(
            plan,
            caps,
            session_id=session_id,
            listeners=listeners,
            run_id=run_id,
            cancel=cancel,
            use_cache=use_cache,
            rerun=rerun,
            resumed_from=None,
            control=control,
            writer=writer,
        )

    def resume_run(
        self,
        run_id: str,
        *,
        listeners: Iterable[Listener] = (),
        cancel: threading.Event | None = None,
        new_run_id: str | None = None,
        plan: Plan | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Continue run ``run_id`` (interrupted, paused, stopped, failed or cancelled) as a new
        run.

        ``plan`` replaces the stored plan (a resume with an edited instruction); the source
        run's pinned outputs stay pinned unless ``control`` pins those nodes otherwise.

        The stored plan and caps are executed again under the same session with the trace
        store as call cache, so every call that finished before is reused and only the rest
        runs. A run its process left ``running`` is marked ``interrupted`` first. Refused with
        ``TraceStoreError`` if the run is unknown, completed, or still running in a live
        process; ``PlanError`` if its stored plan no longer loads.
        """
        record = self.traces.run(run_id)
        if record is None:
            raise TraceStoreError(
                f"No run {run_id!r} in the trace store {self.traces.path}; "
                "`run.py runs` lists the recorded runs."
            )
        if record.get("origin"):
            raise TraceStoreError(
                f"Run {run_id!r} is imported ({record['origin']}) and read-only: it cannot be "
                "resumed here. Re-run its session instead: open the session on the Workbench and "
                "press Run plan (or `run.py run` its plan); imported calls are never reused, so "
                "every node calls its model again."
            )
        if record.get("resumed_by"):
            raise TraceStoreError(
                f"Run {run_id!r} was already resumed as {record['resumed_by']!r}; resume that "
                "run instead if it stopped too (`run.py runs` shows its status)."
            )
        status = record["status"]
        if is_answered(status):  # "completed", or "suspect": finished, with a warning
            raise TraceStoreError(
                f"Run {run_id!r} {status}; there is nothing to resume. Run the plan again "
                "(unchanged nodes are reused from the cache)."
            )
        if status == "running":
            if process_alive(record.get("pid"), record["started_at"]):
                raise TraceStoreError(
                    f"Run {run_id!r} is still running in process {record.get('pid')}; "
                    "cancel it or wait for it to finish before resuming."
                )
            self.traces.mark_interrupted([run_id])
        if not record.get("plan_json"):
            raise PlanError(f"Run {run_id!r} has no stored plan to resume.")
        if plan is None:
            plan = Plan.from_json(record["plan_json"], source=f"run {run_id}")
        caps = RunCaps.model_validate_json(record["caps_json"]) if record["caps_json"] else None
        control = control or RunControl()
        known = plan.nodes()
        for row in self.traces.node_executions(run_id):
            if row.get("pinned") and row["node_id"] in known:
                control.pins.setdefault(row["node_id"], row["output"] or "")
        return self._execute(
            plan,
            caps,
            session_id=record["session_id"],
            listeners=listeners,
            run_id=new_run_id,
            cancel=cancel,
            use_cache=True,
            rerun=(),
            resumed_from=run_id,
            control=control,
        )

    def delete_session(self, session_id: str, *, delete_runs: bool = False) -> list[str]:
        """Delete a saved session and its plan revisions; with ``delete_runs`` its runs too.

        A session's runs are those it lists and those recorded under its id; their ``runs``,
        ``node_executions`` and ``model_calls`` rows go in one DuckDB transaction, committed
        only once the session row is gone: if deleting the session fails, no run is deleted
        (the two stores cannot share a transaction; a failing DuckDB commit after that would
        leave the runs, as a delete without runs does). Returns the ids of the runs deleted.
        ``SessionError`` for an unknown id; ``TraceStoreError`` if one of the runs is still
        running (cancel it first).
        """
        session = self.sessions.get(session_id)  # SessionError naming the id
        if not delete_runs:
            self.sessions.delete(session_id)
            return []
        # Runs whose process died are marked interrupted first, so "running" means live.
        self.traces.interrupted_runs()
        with self.traces.connect() as con:
            rows = con.execute(
                "SELECT run_id, status FROM runs"
                " WHERE session_id = ? OR run_id IN (SELECT unnest(?::VARCHAR[]))"
                " ORDER BY started_at",
                [session_id, session.run_ids],
            ).fetchall()
            running = [run_id for run_id, status in rows if status == "running"]
            if running:
                raise TraceStoreError(
                    f"Session {session_id!r} has a run still running ({', '.join(running)}); "
                    "cancel it or wait for it to finish before deleting its runs. Nothing was "
                    "deleted."
                )
            run_ids = [run_id for run_id, _ in rows]
            con.execute("BEGIN TRANSACTION")
            try:
                for table in ("model_calls", "node_executions", "runs"):
                    con.execute(
                        f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                        [run_ids],
                    )
                self.sessions.delete(session_id)
                con.execute("COMMIT")
            except BaseException:
                with suppress(Exception):
                    con.execute("ROLLBACK")
                raise
        return run_ids

    def _execute(
        self,
        plan: Plan,
        caps: RunCaps | None,
        *,
        session_id: str | None,
        listeners: Iterable[Listener],
        run_id: str | None,
        cancel: threading.Event | None,
        use_cache: bool,
        rerun: Iterable[str],
        resumed_from: str | None,
        control: RunControl | None = None,
        writer: TraceWriter | None = None,
    ) -> RunResult:
        # The executor (networkx, Jinja, the prompts: about 0.2 s) is imported by the commands
        # that run a plan, not by every command that opens the workspace.
        from engine.run.executor import execute_plan, new_run_id

        run_id = run_id or new_run_id()
        if session_id is not None and self.sessions.exists(session_id):
            self.sessions.add_run(session_id, run_id)
        # Registry entries give backends their prices, concurrency and timeout. A registry file
        # that cannot be read must not stop the run: defaults apply and the result says why.
        factory, registry_problem = self._registry_factory()
        # A writer of the caller's (an evaluation's) is the caller's to flush and close.
        own_writer = writer is None
        writer = writer or TraceWriter(self.traces)
        try:
            result = execute_plan(
                plan,
                caps,
                backend_factory=factory,
                listeners=[writer, *listeners],
                run_id=run_id,
                session_id=session_id,
                cancel=cancel,
                cache=self.traces if use_cache else None,
                rerun=rerun,
                resumed_from=resumed_from,
                control=control,
            )
        except BaseException:
            if own_writer:
                with suppress(TraceStoreError):  # the run's own error is the one to raise
                    writer.close()
            raise
        if registry_problem is not None:
            result.warnings.append(registry_problem)
        if not own_writer:
            return result
        try:
            writer.close()
        except TraceStoreError as exc:  # the run's result matters more; report it there
            warning = f"TraceStoreError in TraceWriter: {exc}"
            if warning not in result.warnings:
                result.warnings.append(warning)
        return result
