"""Planner actions (decompose, expand, re-plan, rate difficulty, alternatives) as background
jobs the page polls, with elapsed time, the stage, the text streamed so far and a cancel.

A job runs one traced planner action (``app.services.planning``) on a thread pool and keeps
what the page shows under its lock: the status ("running", "done", "failed", "cancelled"), the
stage the planner reported last, the model's text so far, the alternatives finished so far,
the result or the error. ``cancel()`` sets the event the planner checks between stages and
model calls and the backend checks between tokens; the action then raises
``PlannerCancelled``, is recorded as a cancelled planner run, and leaves no result: nothing
is applied to the plan. Worker threads never touch Streamlit (nothing here imports it); the
manager is shared by all browser sessions (``st.cache_resource``) and is thread-safe.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from app.services import planning
from engine.errors import ArborError, PlannerCancelled, user_message
from engine.plan import ModelRef, Plan
from storage.traces import TraceStore

PlannerAction = Literal["decompose", "expand", "replan", "rate", "alternatives"]
JobStatus = Literal["running", "done", "failed", "cancelled"]

#: What a message calls each action ("Could not expand s4: ...").
ACTION_VERBS: dict[str, str] = {
    "decompose": "decompose",
    "expand": "expand",
    "replan": "re-plan",
    "rate": "rate difficulty",
    "alternatives": "sample alternatives",
}
#: The streamed text kept per job: enough to read along, bounded for a long action.
MAX_STREAMED_CHARS = 6000


@dataclass(frozen=True)
class PlannerJobSnapshot:
    """A consistent copy of a job for one page render."""

    job_id: str
    action: str
    subject: str
    status: JobStatus
    elapsed_s: float
    stage: str
    stages: list[str]
    text: str
    partial: list[Any]
    result: Any
    error: str | None
    run_id: str | None
    cancel_requested: bool

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def title(self) -> str:
        """ "Decompose", "Expand s4", "Sample alternatives of the task"..."""
        verb = ACTION_VERBS.get(self.action, self.action)
        text = f"{verb} {self.subject}" if self.subject else verb
        return text[:1].upper() + text[1:]


@dataclass
class PlannerJob:
    """One planner action in the background; every field is guarded by ``lock``."""

    action: str
    #: What it acts on, for messages: "s4", "the task", "" for decompose.
    subject: str
    #: Whatever the caller wants back when the job is applied (the plan it started from...).
    context: dict[str, Any] = field(default_factory=dict)
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: JobStatus = "running"
    stage: str = "waiting for a worker"
    stages: list[str] = field(default_factory=list)
    text: str = ""
    partial: list[Any] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    run_id: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = field(default_factory=time.monotonic)
    _finished: float | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    # -- what the worker reports ----------------------------------------------------------
    def report_stage(self, stage: str) -> None:
        with self.lock:
            self.stage = stage
            self.stages.append(stage)

    def add_text(self, piece: str) -> None:
        with self.lock:
            self.text = (self.text + piece)[-MAX_STREAMED_CHARS:]

    def add_partial(self, number: int, result: Any) -> None:
        del number  # the results arrive in order
        with self.lock:
            self.partial.append(result)

    def recorded(self, run_id: str) -> None:
        with self.lock:
            self.run_id = run_id

    def _finish(self, status: JobStatus, result: Any = None, error: str | None = None) -> None:
        with self.lock:
            self.status, self.result, self.error = status, result, error
            self._finished = time.monotonic()
        self._done.set()

    # -- what the page does ---------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the action to stop; it stops at its next check (between tokens at best)."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (for tests and the command line)."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def snapshot(self) -> PlannerJobSnapshot:
        with self.lock:
            end = self._finished if self._finished is not None else time.monotonic()
            return PlannerJobSnapshot(
                job_id=self.job_id,
                action=self.action,
                subject=self.subject,
                status=self.status,
                elapsed_s=end - self._started,
                stage=self.stage,
                stages=list(self.stages),
                text=self.text,
                partial=list(self.partial),
                result=self.result,
                error=self.error,
                run_id=self.run_id,
                cancel_requested=self.cancel_event.is_set(),
            )


#: The traced action a job runs, given the job for its hooks.
Work = Callable[[PlannerJob], Any]


class PlannerJobManager:
    """Runs planner actions on a thread pool; at most ``workers`` at once (the model's own lock
    serialises calls to one local model anyway)."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="arbor-planner")
        self._jobs: dict[str, PlannerJob] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str | None) -> PlannerJob | None:
        if job_id is None:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def start(
        self, action: str, subject: str, work: Work, context: dict[str, Any] | None = None
    ) -> PlannerJob:
        """Run ``work(job)`` in the background and return the job at once."""
        job = PlannerJob(action=action, subject=subject, context=dict(context or {}))
        with self._lock:
            self._jobs[job.job_id] = job
            self._futures[job.job_id] = self._pool.submit(self._run, job, work)
        return job

    @staticmethod
    def _run(job: PlannerJob, work: Work) -> None:
        job.report_stage("starting")
        try:
            if job.cancel_event.is_set():
                raise PlannerCancelled("The planner action was cancelled before it started.")
            result = work(job)
        except PlannerCancelled:
            job._finish("cancelled")
        except (ArborError, ValueError) as exc:
            message = user_message(exc) if isinstance(exc, ArborError) else str(exc)
            job._finish("failed", error=message)
        except Exception as exc:  # a bug must still end the job, or the page polls forever
            job._finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            if job.cancel_event.is_set():
                # Cancelled after the last check: the result is dropped all the same.
                job._finish("cancelled")
            else:
                job._finish("done", result=result)

    def forget(self, job_id: str) -> None:
        """Drop a finished job (the page has applied it)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.done:
                del self._jobs[job_id]
                self._futures.pop(job_id, None)

    # -- the actions ----------------------------------------------------------------------
    @staticmethod
    def _hooks(job: PlannerJob, store: TraceStore, session_id: str | None) -> dict[str, Any]:
        return {
            "store": store,
            "session_id": session_id,
            "on_progress": job.report_stage,
            "on_recorded": job.recorded,
            "cancel": job.cancel_event,
            "on_text": job.add_text,
        }

    def decompose(
        self,
        task: str,
        model: ModelRef | None,
        *,
        store: TraceStore,
        session_id: str | None = None,
        **planner_options: Any,
    ) -> PlannerJob:
        return self.start(
            "decompose",
            "",
            lambda job: planning.decompose_traced(
                task, model, **self._hooks(job, store, session_id), **planner_options
            ),
            {"task": task},
        )

    def split(
        self,
        plan: Plan,
        node_id: str,
        model: ModelRef | None,
        *,
        replace: bool = False,
        store: TraceStore,
        session_id: str | None = None,
        **planner_options: Any,
    ) -> PlannerJob:
        """Expand ``node_id`` (or re-plan its subtree with ``replace``)."""
        return self.start(
            "replan" if replace else "expand",
            node_id,
            lambda job: planning.split_traced(
                plan,
                node_id,
                model,
                replace=replace,
                **self._hooks(job, store, session_id),
                **planner_options,
            ),
            {"base": plan, "node_id": node_id},
        )

    def rate(
        self,
        plan: Plan,
        model: ModelRef | None,
        *,
        store: TraceStore,
        session_id: str | None = None,
        **planner_options: Any,
    ) -> PlannerJob:
        return self.start(
            "rate",
            "",
            lambda job: planning.rate_traced(
                plan, model, **self._hooks(job, store, session_id), **planner_options
            ),
            {"base": plan},
        )

    def alternatives(
        self,
        task: str,
        k: int,
        model: ModelRef | None,
        *,
        plan: Plan | None = None,
        node_id: str | None = None,
        store: TraceStore,
        session_id: str | None = None,
        **planner_options: Any,
    ) -> PlannerJob:
        """k alternatives; each shows in ``partial`` as soon as it is ready."""
        return self.start(
            "alternatives",
            f"of {node_id}" if node_id else "of the task",
            lambda job: planning.alternatives_traced(
                task,
                k,
                model,
                plan=plan,
                node_id=node_id,
                on_result=job.add_partial,
                **self._hooks(job, store, session_id),
                **planner_options,
            ),
            {"base": plan, "node_id": node_id, "k": k},
        )


__all__ = [
    "ACTION_VERBS",
    "PlannerJob",
    "PlannerJobManager",
    "PlannerJobSnapshot",
]
