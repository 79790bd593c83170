"""Background runs for the UI: a thread pool plus a progress record the page polls.

Worker threads never touch Streamlit (they have no script context). They update a ``RunJob``
under its lock; the page reads a snapshot from an ``st.fragment`` that reruns every second.
The manager is held in ``st.cache_resource``, so it is shared by all browser sessions and must be
thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.plan import Plan
from engine.run.budget import RunCaps
from engine.run.events import (
    BudgetUpdate,
    Event,
    ModelCallFinished,
    NodeFinished,
    NodeProgress,
    NodeStarted,
)
from engine.run.executor import RunResult, new_run_id
from storage.workspace import Workspace


@dataclass
class RunJob:
    run_id: str
    node_titles: dict[str, str]
    node_status: dict[str, str] = field(default_factory=dict)
    #: Text each running node has streamed so far (from ``NodeProgress``).
    partial: dict[str, str] = field(default_factory=dict)
    reused: set[str] = field(default_factory=set)
    tokens_used: int = 0
    cost_usd: float = 0.0
    #: The latest spent-against-allowed figures (``BudgetUpdate``), for the live meter.
    meter: dict[str, Any] | None = None
    result: RunResult | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, NodeStarted):
                self.node_status[event.node_id] = "running"
            elif isinstance(event, NodeProgress):
                self.partial[event.node_id] = event.text
            elif isinstance(event, NodeFinished):
                self.node_status[event.node_id] = event.status
                self.partial.pop(event.node_id, None)
                if event.reused_from is not None:
                    self.reused.add(event.node_id)
            elif isinstance(event, ModelCallFinished):
                self.tokens_used += event.input_tokens + event.output_tokens
                self.cost_usd += event.cost_usd
            elif isinstance(event, BudgetUpdate):
                self.meter = {
                    "tokens_used": event.tokens_used,
                    "tokens_allowed": event.tokens_allowed,
                    "cost_used_usd": event.cost_used_usd,
                    "cost_allowed_usd": event.cost_allowed_usd,
                    "elapsed_s": event.elapsed_s,
                    "time_allowed_s": event.time_allowed_s,
                }

    @property
    def done(self) -> bool:
        with self.lock:
            return self.result is not None or self.error is not None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "run_id": self.run_id,
                "status": dict(self.node_status),
                "partial": dict(self.partial),
                "reused": set(self.reused),
                "tokens_used": self.tokens_used,
                "cost_usd": self.cost_usd,
                "meter": dict(self.meter) if self.meter else None,
                "result": self.result,
                "error": self.error,
            }


class JobManager:
    """Runs plans in the background; at most ``workers`` runs at once."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="arbor-run")
        self._jobs: dict[str, RunJob] = {}
        self._lock = threading.Lock()

    def start(
        self,
        workspace: Workspace,
        plan: Plan,
        caps: RunCaps,
        session_id: str | None,
        *,
        use_cache: bool = True,
        rerun: Iterable[str] = (),
    ) -> RunJob:
        """Run ``plan`` in the background; cached calls are reused unless ``use_cache`` is off,
        and the nodes in ``rerun`` run again with everything downstream of them."""
        rerun = list(rerun)
        return self._submit(
            plan,
            lambda job: workspace.run_plan(
                plan,
                caps,
                session_id=session_id,
                listeners=[job.on_event],
                run_id=job.run_id,
                cancel=job.cancel,
                use_cache=use_cache,
                rerun=rerun,
            ),
        )

    def resume(self, workspace: Workspace, run_id: str, plan: Plan) -> RunJob:
        """Continue an interrupted run: its finished calls are reused, the rest run now."""
        return self._submit(
            plan,
            lambda job: workspace.resume_run(
                run_id, listeners=[job.on_event], cancel=job.cancel, new_run_id=job.run_id
            ),
        )

    def _submit(self, plan: Plan, execute: Callable[[RunJob], RunResult]) -> RunJob:
        job = RunJob(
            run_id=new_run_id(),
            node_titles={node.id: node.title for node, _ in plan.iter_nodes()},
            node_status={node.id: "pending" for node, _ in plan.iter_nodes()},
        )
        with self._lock:
            self._jobs[job.run_id] = job

        def work() -> None:
            try:
                result = execute(job)
            except Exception as exc:  # shown in the UI; the trace store keeps what finished
                with job.lock:
                    job.error = f"{type(exc).__name__}: {exc}"
                return
            with job.lock:
                job.result = result

        self._pool.submit(work)
        return job

    def get(self, run_id: str) -> RunJob | None:
        with self._lock:
            return self._jobs.get(run_id)
