"""Runners: what to run (a configuration's plan asked one example) and how (``PlanRunner``).

``ThreadRunner`` calls ``execute_plan`` in a thread pool with whatever backends it is given, so
scripts and tests need no storage; the workspace or a Ray cluster can supply another runner.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from engine.errors import EvaluationError, user_message
from engine.models import BackendFactory, backend_for
from engine.plan import Plan
from engine.run.budget import RunCaps
from engine.run.call_cache import CallCache
from engine.run.events import Listener
from engine.run.executor import RunResult, execute_plan


@dataclass
class PlanConfiguration:
    """One contestant: a plan (with its models and strategies) and the caps it runs under."""

    name: str
    plan: Plan
    caps: RunCaps


def _title_of(task: str) -> str:
    # The same clip as ``single_node_plan``, so a title made from the task is recognised.
    return " ".join(task.split())[:80] or "Task"


def plan_for_input(plan: Plan, text: str) -> Plan:
    """A copy of ``plan`` asked ``text``: ``task`` becomes ``text``.

    Every node whose instruction equals the original task (after ``strip``) gets the
    instruction ``{{ task }}``, so a one-node plan (``single_node_plan``) answers each input
    rather than the task it was built for; and a node whose title is the original task's
    one-line clip (as ``single_node_plan`` makes it) gets the new input's, so the prompt does
    not show the old question as the step's name. Other nodes are unchanged: a plan written for
    one task refers to it through ``{{ task }}`` or the "Overall task" line of every prompt.
    """
    original = plan.task.strip()
    old_title = _title_of(plan.task)
    copy = plan.model_copy(deep=True)
    copy.task = text
    for node, _ in copy.iter_nodes():
        if original and node.instruction.strip() == original:
            node.instruction = "{{ task }}"
        if node.title == old_title:
            node.title = _title_of(text)
    return copy


@dataclass(frozen=True, eq=False)
class PlanJob:
    """One run to make: configuration ``configuration`` on example ``example_id``."""

    configuration: str
    example_id: str
    plan: Plan
    caps: RunCaps
    run_id: str


#: What a runner yields per finished job: the job, its result (None if it raised) and the error.
JobOutcome = tuple[PlanJob, RunResult | None, str | None]


class PlanRunner(Protocol):
    """Runs jobs and yields each as it finishes; a cancelled runner stops starting new ones."""

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]: ...


class ThreadedRunner:
    """A ``PlanRunner`` running jobs on a thread pool; subclasses say how one plan runs.

    ``workers`` plans run at once (default 1: calls to one local model queue anyway). A set
    ``cancel`` stops running plans and starts no new ones; closing the iterator early sets it.
    A job that raises yields ``(job, None, error text)``.
    """

    thread_name = "arbor-eval"

    def __init__(self, *, workers: int = 1):
        if workers < 1:
            raise EvaluationError(f"A runner needs at least one worker, not {workers}.")
        self.workers = workers

    def run_one(self, job: PlanJob, cancel: threading.Event) -> RunResult:
        raise NotImplementedError

    def _run(self, job: PlanJob, cancel: threading.Event) -> tuple[RunResult | None, str | None]:
        try:
            return self.run_one(job, cancel), None
        except Exception as exc:
            return None, user_message(exc)

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]:
        cancel = cancel or threading.Event()
        waiting = iter(jobs)
        running: dict[Future[tuple[RunResult | None, str | None]], PlanJob] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix=self.thread_name) as pool:

            def fill() -> None:
                while len(running) < self.workers and not cancel.is_set():
                    job = next(waiting, None)
                    if job is None:
                        return
                    running[pool.submit(self._run, job, cancel)] = job

            try:
                fill()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = running.pop(future)
                        result, error = future.result()
                        yield job, result, error
                    fill()
            finally:
                if running:  # the consumer stopped early: let the running plans stop too
                    cancel.set()


class ThreadRunner(ThreadedRunner):
    """Runs jobs with ``execute_plan``, without storage (scripts and tests).

    Backends come from ``backend_factory``; ``cache`` and ``listeners`` are passed to every run.
    """

    def __init__(
        self,
        backend_factory: BackendFactory = backend_for,
        *,
        workers: int = 1,
        cache: CallCache | None = None,
        listeners: Sequence[Listener] = (),
    ):
        super().__init__(workers=workers)
        self.backend_factory = backend_factory
        self.cache = cache
        self.listeners = list(listeners)

    def run_one(self, job: PlanJob, cancel: threading.Event) -> RunResult:
        return execute_plan(
            job.plan,
            job.caps,
            listeners=self.listeners,
            backend_factory=self.backend_factory,
            run_id=job.run_id,
            cache=self.cache,
            cancel=cancel,
        )


__all__ = [
    "JobOutcome",
    "PlanConfiguration",
    "PlanJob",
    "PlanRunner",
    "ThreadRunner",
    "ThreadedRunner",
    "plan_for_input",
]
