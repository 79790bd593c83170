"""Background work for the UI: plan runs, evaluations and searches on thread pools, each with a
progress record the page polls.

Worker threads never touch Streamlit (nothing here imports it). A ``RunJob`` or ``EvalJob`` is
updated under its lock; a page reads a snapshot from an ``st.fragment`` that reruns every
second. The managers are held in ``st.cache_resource`` (``app.ui.state``), so they are shared by
all browser sessions and must be thread-safe. Evaluations and searches are set up and saved by
``app.services.tuning``, as the command line's are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from app.services.background import BackgroundJobs
from app.services.tuning import SearchRequest, SearchRun, new_search_id, run_evaluation
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
from engine.tune.evaluation import (
    CheckerConfig,
    Dataset,
    EvaluationError,
    EvaluationReport,
    ExampleOutcome,
    PlanConfiguration,
    new_evaluation_id,
    select_examples,
)
from engine.tune.search import SearchResult, TrialResult
from storage.workspace import Workspace

JobKind = Literal["evaluation", "search"]


@dataclass
class RunJob:
    run_id: str
    node_titles: dict[str, str]
    node_status: dict[str, str] = field(default_factory=dict)
    #: Text each running node has streamed so far (from ``NodeProgress``).
    partial: dict[str, str] = field(default_factory=dict)
    reused: set[str] = field(default_factory=set)
    #: Finished nodes whose output failed the output check, with the reason.
    suspect: dict[str, str] = field(default_factory=dict)
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
                if event.suspect:
                    self.suspect[event.node_id] = event.suspect
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
                "suspect": dict(self.suspect),
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


# -- evaluations and searches ----------------------------------------------------------------
@dataclass
class EvalJob:
    """Progress of one background evaluation or search, read by the page through
    ``snapshot()``."""

    job_id: str
    kind: JobKind
    #: Attempts an evaluation will make, or the trials a search may use.
    total: int
    search: SearchRequest | None = None
    outcomes: list[ExampleOutcome] = field(default_factory=list)
    trials: list[TrialResult] = field(default_factory=list)
    report: EvaluationReport | None = None
    result: SearchResult | None = None
    error: str | None = None
    finished: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_outcome(self, outcome: ExampleOutcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def add_trial(self, trial: TrialResult) -> None:
        with self.lock:
            self.trials.append(trial)

    @property
    def done(self) -> bool:
        with self.lock:
            return self.finished

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job_id": self.job_id,
                "kind": self.kind,
                "total": self.total,
                "outcomes": list(self.outcomes),
                "trials": list(self.trials),
                "report": self.report,
                "result": self.result,
                "error": self.error,
                "finished": self.finished,
                "cancelled": self.cancel.is_set(),
            }


class EvalJobManager(BackgroundJobs[EvalJob]):
    """Runs evaluations and searches in the background, ``workers`` at once."""

    def __init__(self, workers: int = 2):
        super().__init__(workers, "arbor-eval-job")

    def start_evaluation(
        self,
        workspace: Workspace,
        dataset: Dataset,
        configurations: Sequence[PlanConfiguration],
        checker: CheckerConfig,
        *,
        limit: int | None = None,
        session_id: str | None = None,
    ) -> EvalJob:
        """Evaluate ``configurations`` on ``dataset`` (its first ``limit`` examples) and save
        the report in the trace store under ``session_id``. The job id is the evaluation id.

        Inputs are checked before anything starts: ``EvaluationError`` for no configurations or
        a bad limit."""
        if not configurations:
            raise EvaluationError("Nothing to evaluate: choose at least one configuration.")
        examples = select_examples(dataset, limit=limit or None)
        configurations = list(configurations)
        job = EvalJob(
            job_id=new_evaluation_id(),
            kind="evaluation",
            total=len(examples) * len(configurations),
        )

        def work() -> EvaluationReport:
            report = run_evaluation(
                workspace,
                dataset,
                configurations,
                checker,
                evaluation_id=job.job_id,
                on_outcome=job.add_outcome,
                cancel=job.cancel,
                limit=limit or None,
                session_id=session_id,
            )
            with job.lock:
                job.report = report
            return report

        return self._submit(job, work)

    def start_search(
        self, workspace: Workspace, request: SearchRequest, *, session_id: str | None = None
    ) -> EvalJob:
        """Search ``request.space`` on the dataset; each trial's report is saved with kind
        ``search`` (its summary's ``extra`` names the search, the trial and the assignment)."""
        job = EvalJob(
            job_id=new_search_id(),
            kind="search",
            total=request.max_trials,
            search=request,
        )
        search = SearchRun(
            workspace, request, search_id=job.job_id, cancel=job.cancel, session_id=session_id
        )

        def work() -> SearchResult:
            result = search.run(on_trial=job.add_trial)
            with job.lock:
                job.result = result
            return result

        return self._submit(job, work)
