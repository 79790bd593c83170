"""Background evaluations and allocation searches for the Evaluate page.

The same pattern as ``app.jobs``: a worker thread runs ``engine.tune.evaluation.evaluate`` or
``engine.tune.dev_search.run_search`` through the workspace's pool (traced runs with the call cache,
so repeating an evaluation replays recorded calls) and records progress in an ``EvalJob`` under
its lock; the page polls a snapshot from an ``st.fragment``. Worker threads never call ``st.*``.
The manager is held in ``st.cache_resource`` (``manager()``), shared by every browser session,
so it is thread-safe. Helpers that turn page inputs into engine objects live here too, so tests
call them without a page.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from assets import asset_path
from engine.errors import user_message
from engine.models import Backend, registry_backend_factory
from engine.plan import ModelRef, Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.tune.dev_search import CostUnit, DatasetEvaluator, SearchMethod, run_search
from engine.tune.evaluation import (
    CheckerConfig,
    Dataset,
    DatasetError,
    EvaluationError,
    EvaluationReport,
    ExampleOutcome,
    PlanConfiguration,
    evaluate,
    load_dataset,
    new_evaluation_id,
    select_examples,
)
from engine.tune.search import SearchResult, SearchSpace, TrialResult
from storage.evaluations import save_report
from storage.pools import pool_from_settings
from storage.workspace import Workspace

#: The configuration that runs the plan with its own strategies and allocation.
AS_IS = "as the plan is"
#: One-node plans written for the bundled (base) model, one per shipped dataset family.
EVAL_PLANS_DIR = asset_path("examples", "eval_plans")
UPLOADS_DIR = "uploads"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

JobKind = Literal["evaluation", "search"]


# -- page inputs -> engine objects -----------------------------------------------------------
def load_upload(data_dir: Path, name: str, data: bytes) -> Dataset:
    """Write an uploaded dataset to ``<data_dir>/uploads/`` and load it.

    Raises ``DatasetError`` (the message names the upload, not the stored copy) when it is not
    a usable ``.csv`` or ``.jsonl`` file.
    """
    safe = _UNSAFE_NAME.sub("_", Path(name).name).strip("._") or "upload"
    target = Path(data_dir) / UPLOADS_DIR / safe
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    try:
        return load_dataset(target)
    except DatasetError as exc:
        raise DatasetError(str(exc).replace(str(target), name)) from exc


def shipped_eval_plans() -> dict[str, Path]:
    """The ready-made evaluation plans (``assets/examples/eval_plans/``), by name."""
    return {path.stem: path for path in sorted(EVAL_PLANS_DIR.glob("*.json"))}


def own_strategy_nodes(plan: Plan) -> list[str]:
    """Nodes whose own strategy a configuration's default strategy does not change."""
    return [node.id for node, _ in plan.iter_nodes() if node.strategy is not None]


def configurations_for(
    plan: Plan, choices: Sequence[str], caps: RunCaps
) -> list[PlanConfiguration]:
    """One configuration per choice: ``AS_IS`` runs ``plan`` unchanged; a strategy spec
    (``single``, ``sc5`` ...) becomes the plan's default strategy under a uniform allocation
    (as ``run.py eval --strategy`` does). Raises ``ValueError`` for an unknown spec."""
    configurations = []
    for choice in choices:
        variant = plan.model_copy(deep=True)
        if choice == AS_IS:
            configurations.append(PlanConfiguration("plan", variant, caps))
            continue
        variant.default_strategy = strategy_from_spec(choice)
        variant.allocation = variant.allocation.model_copy(update={"kind": "uniform"})
        configurations.append(PlanConfiguration(choice, variant, caps))
    return configurations


def first_examples(dataset: Dataset, limit: int | None) -> Dataset:
    """``dataset`` cut to its first ``limit`` examples (all when ``limit`` is None or 0)."""
    if not limit:
        return dataset
    return Dataset(dataset.name, dataset.examples[:limit], dataset.source)


def best_result(report: EvaluationReport, cost: CostUnit):
    """The most accurate configuration that finished an example, the cheaper on ties."""
    measured = [result for result in report.results if result.n]
    if not measured:
        return None
    key = "mean_cost_usd" if cost == "usd" else "mean_tokens"
    return min(measured, key=lambda r: (-r.accuracy, getattr(r, key)))


def cost_unit_of(report: EvaluationReport) -> CostUnit:
    """Dollars when any configuration cost money, else tokens (local models are free)."""
    return "usd" if any(result.mean_cost_usd for result in report.results) else "tokens"


# -- jobs ------------------------------------------------------------------------------------
@dataclass
class SearchRequest:
    """Everything one allocation search needs, fixed when it starts."""

    plan: Plan
    space: SearchSpace
    dataset: Dataset
    checker: CheckerConfig
    caps: RunCaps
    method: SearchMethod
    budget: float
    cost_unit: CostUnit
    max_trials: int
    #: The model proposing assignments (LLM-guided search only); None: the bundled model.
    proposer: ModelRef | None = None


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


def _backend_factory(workspace: Workspace) -> Callable[[ModelRef], Backend]:
    """Backends with their registry entries' prices and limits; plain ones if it is broken."""
    return registry_backend_factory(workspace.root)[0]


class EvalJobManager:
    """Runs evaluations and searches in the background, ``workers`` at once."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="arbor-eval-job")
        self._jobs: dict[str, EvalJob] = {}
        self._lock = threading.Lock()

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
            # Evaluation runs are not filed under the session: they would crowd its run list.
            report = evaluate(
                dataset,
                configurations,
                checker,
                runner=pool_from_settings(workspace),
                evaluation_id=job.job_id,
                on_outcome=job.add_outcome,
                cancel=job.cancel,
                limit=limit or None,
            )
            save_report(workspace.traces, report, session_id=session_id)
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
            job_id=f"search-{uuid.uuid4().hex[:10]}",
            kind="search",
            total=request.max_trials,
            search=request,
        )
        evaluator = DatasetEvaluator(
            request.plan,
            request.space,
            request.dataset,
            request.checker,
            pool_from_settings(workspace),
            request.caps,
            cost_unit=request.cost_unit,
            cancel=job.cancel,
        )
        proposer = None
        if request.method == "llm":
            proposer = _backend_factory(workspace)(request.proposer or ModelRef())

        def save_trials() -> None:
            with job.lock:
                trials = list(job.trials)
            # One report per trial, in the same order: on_trial follows each evaluator call.
            for number, (trial, report) in enumerate(
                zip(trials, evaluator.reports, strict=False), start=1
            ):
                extra = {
                    "search_id": job.job_id,
                    "method": request.method,
                    "budget": request.budget,
                    "cost_unit": request.cost_unit,
                    "trial": number,
                    "note": trial.note,
                    "assignment": request.space.describe(trial.assignment),
                }
                save_report(
                    workspace.traces, report, session_id=session_id, kind="search", extra=extra
                )

        def work() -> SearchResult:
            try:
                result = run_search(
                    request.method,
                    evaluator,
                    budget=request.budget,
                    max_trials=request.max_trials,
                    proposer=proposer,
                    on_trial=job.add_trial,
                    cancel=job.cancel,
                )
            finally:
                save_trials()
            with job.lock:
                job.result = result
            return result

        return self._submit(job, work)

    def _submit(self, job: EvalJob, work: Callable[[], object]) -> EvalJob:
        with self._lock:
            self._jobs[job.job_id] = job

        def run() -> None:
            try:
                work()
            except Exception as exc:  # shown on the page; the store keeps the finished runs
                with job.lock:
                    job.error = user_message(exc)
            finally:
                with job.lock:
                    job.finished = True

        self._pool.submit(run)
        return job

    def get(self, job_id: str | None) -> EvalJob | None:
        if job_id is None:
            return None
        with self._lock:
            return self._jobs.get(job_id)


@st.cache_resource
def manager() -> EvalJobManager:
    """The process-wide job manager."""
    return EvalJobManager()


__all__ = [
    "AS_IS",
    "EvalJob",
    "EvalJobManager",
    "SearchRequest",
    "best_result",
    "configurations_for",
    "cost_unit_of",
    "first_examples",
    "load_upload",
    "manager",
    "own_strategy_nodes",
    "shipped_eval_plans",
]
