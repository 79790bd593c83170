"""Evaluations and allocation searches, set up the same way for the Evaluate page and the CLI.

``run.py eval`` / ``run.py search`` and the page's background jobs (``app.services.jobs``) turn
their inputs into engine objects here: the dataset (a shipped name, a file or an upload), the
pool the runs execute on, the configurations to compare, the search space. Running an
evaluation or a search and saving its report to the trace store happens here too, so both
presenters store the same thing: an evaluation under its id (and the session), every trial
of a search with kind ``search`` and, in its summary's ``extra``, the search id, the trial
number, the method, the budget and the assignment.

Nothing here imports Streamlit or prints.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assets import asset_path
from engine.models import Backend, registry_backend_factory
from engine.plan import ModelRef, Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.tune.datasets import GENERATED_PREFIX, GeneratedSpec, generate_dataset, is_generated
from engine.tune.dev_search import CostUnit, DatasetEvaluator, SearchMethod, run_search
from engine.tune.evaluation import (
    CheckerConfig,
    Dataset,
    DatasetError,
    EvaluationReport,
    ExampleOutcome,
    PlanConfiguration,
    PlanRunner,
    evaluate,
    load_dataset,
    shipped_datasets,
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
#: The registry name that stands for the bundled model where no registry entry is needed.
BUNDLED = "bundled"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


# -- inputs -> engine objects ----------------------------------------------------------------
def dataset_named(
    name_or_path: str,
    *,
    seed: int = 0,
    levels: Sequence[int] | None = None,
    per_level: int = 10,
    split: str | None = None,
) -> Dataset:
    """A generated dataset (``gym:word_sorting``: ``per_level`` examples at each of ``levels``
    from ``seed``), a shipped one by name (``capitals``, ``arithmetic`` ...), or the
    analyst's CSV / JSONL / Parquet file or Hugging Face layout folder (``split``)."""
    if is_generated(name_or_path):
        family = name_or_path[len(GENERATED_PREFIX) :]
        spec = GeneratedSpec(family, seed, tuple(levels or (1,)), per_level)
        return generate_dataset(spec)
    shipped = shipped_datasets()
    return load_dataset(shipped.get(name_or_path, name_or_path), split=split)


def load_upload(data_dir: Path, name: str, data: bytes) -> Dataset:
    """Write an uploaded dataset to ``<data_dir>/uploads/`` and load it.

    Raises ``DatasetError`` (the message names the upload, not the stored copy) when it is not
    a usable ``.csv``, ``.jsonl`` or ``.parquet`` file.
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


def first_examples(dataset: Dataset, limit: int | None) -> Dataset:
    """``dataset`` cut to its first ``limit`` examples (all when ``limit`` is None or 0)."""
    if not limit:
        return dataset
    return Dataset(dataset.name, dataset.examples[:limit], dataset.source)


def pool(workspace: Workspace, *, ray_address: str | None = None, workers: int = 1) -> PlanRunner:
    """Where the runs of an evaluation or search execute: Ray at ``ray_address`` (or
    ``$ARBOR_RAY_ADDRESS``), else a local pool of ``workers``."""
    return pool_from_settings(workspace, ray_address=ray_address, workers=workers)


def backend_factory(workspace: Workspace) -> Callable[[ModelRef], Backend]:
    """Backends with their registry entries' prices and limits; plain ones if it is broken."""
    return registry_backend_factory(workspace.root)[0]


def own_strategy_nodes(plan: Plan) -> list[str]:
    """Nodes whose own strategy a configuration's default strategy does not change."""
    return [node.id for node, _ in plan.iter_nodes() if node.strategy is not None]


def configurations_for(
    plan: Plan, choices: Sequence[str], caps: RunCaps
) -> list[PlanConfiguration]:
    """One configuration per choice: ``AS_IS`` runs ``plan`` unchanged (named ``plan``); a
    strategy spec (``single``, ``sc5`` ...) becomes the plan's default strategy under a uniform
    allocation. Raises ``ValueError`` for an unknown spec."""
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


def search_space(
    plan: Plan,
    models: Sequence[tuple[str, ModelRef]],
    strategy_specs: Sequence[str],
    max_tokens: Sequence[int],
    nodes: Sequence[str] | None = None,
) -> SearchSpace:
    """The assignments a search may try: every (model, strategy, output limit) per node of
    ``nodes`` (all when None). Raises ``ValueError`` for an unknown strategy spec."""
    return SearchSpace.from_choices(
        plan,
        list(models),
        [strategy_from_spec(spec) for spec in strategy_specs],
        list(max_tokens),
        nodes=list(nodes) if nodes else None,
    )


def models_named(workspace: Workspace, names: Sequence[str]) -> list[tuple[str, ModelRef]]:
    """``(name, reference)`` of registry models; ``bundled`` needs no registry."""
    from engine.models.registry import Registry

    registry = None
    models = []
    for name in names:
        if name == BUNDLED:
            models.append((name, ModelRef()))
            continue
        registry = registry or Registry.in_data_dir(workspace.root)
        models.append((name, registry.get(name).ref))
    return models


# -- reading reports -------------------------------------------------------------------------
def best_result(report: EvaluationReport, cost: CostUnit):
    """The most accurate configuration that finished an example, the cheaper on ties."""
    measured = [result for result in report.results if result.n]
    if not measured:
        return None
    key = "mean_cost_usd" if cost == "usd" else "mean_tokens"
    return min(measured, key=lambda r: (-r.accuracy, getattr(r, key)))


def cost_unit_of(report: EvaluationReport) -> CostUnit:
    """Dollars when any configuration cost money, else tokens (local models are free)."""
    return "usd" if report.cost_unit() == "usd" else "tokens"


# -- running and saving ----------------------------------------------------------------------
def run_evaluation(
    workspace: Workspace,
    dataset: Dataset,
    configurations: Sequence[PlanConfiguration],
    checker: CheckerConfig,
    *,
    runner: PlanRunner | None = None,
    evaluation_id: str | None = None,
    on_outcome: Callable[[ExampleOutcome], None] | None = None,
    cancel: threading.Event | None = None,
    limit: int | None = None,
    session_id: str | None = None,
) -> EvaluationReport:
    """Evaluate ``configurations`` on ``dataset`` (its first ``limit`` examples) through
    ``runner`` (default: the workspace's pool) and save the report under ``session_id``.

    Evaluation runs are not filed under the session: they would crowd its run list.
    """
    report = evaluate(
        dataset,
        list(configurations),
        checker,
        runner=runner if runner is not None else pool(workspace),
        evaluation_id=evaluation_id,
        on_outcome=on_outcome,
        cancel=cancel,
        limit=limit,
    )
    save_report(workspace.traces, report, session_id=session_id)
    return report


def new_search_id() -> str:
    return f"search-{uuid.uuid4().hex[:10]}"


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
class SearchRun:
    """One search of ``request``, set up at once so that bad input refuses before anything
    runs (an unusable proposer model raises here); ``run()`` searches and saves the reports."""

    workspace: Workspace
    request: SearchRequest
    search_id: str = field(default_factory=new_search_id)
    runner: PlanRunner | None = None
    cancel: threading.Event | None = None
    session_id: str | None = None
    #: The trials so far, in order (one evaluation report each, in ``evaluator.reports``).
    trials: list[TrialResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        request = self.request
        self.evaluator = DatasetEvaluator(
            request.plan,
            request.space,
            request.dataset,
            request.checker,
            self.runner if self.runner is not None else pool(self.workspace),
            request.caps,
            cost_unit=request.cost_unit,
            cancel=self.cancel,
        )
        self.proposer: Backend | None = None
        if request.method == "llm":
            self.proposer = backend_factory(self.workspace)(request.proposer or ModelRef())

    def run(self, on_trial: Callable[[TrialResult], None] | None = None) -> SearchResult:
        """Search; every trial's report is saved (also when the search fails or is cancelled)
        with kind ``search`` and the search id, trial number and assignment in ``extra``."""

        def record(trial: TrialResult) -> None:
            self.trials.append(trial)
            if on_trial is not None:
                on_trial(trial)

        request = self.request
        try:
            return run_search(
                request.method,
                self.evaluator,
                budget=request.budget,
                max_trials=request.max_trials,
                proposer=self.proposer,
                on_trial=record,
                cancel=self.cancel,
            )
        finally:
            self.save_reports()

    def save_reports(self) -> None:
        request = self.request
        # One report per trial, in the same order: on_trial follows each evaluator call.
        for number, (trial, report) in enumerate(
            zip(list(self.trials), self.evaluator.reports, strict=False), start=1
        ):
            extra = {
                "search_id": self.search_id,
                "method": request.method,
                "budget": request.budget,
                "cost_unit": request.cost_unit,
                "trial": number,
                "note": trial.note,
                "assignment": request.space.describe(trial.assignment),
            }
            save_report(
                self.workspace.traces,
                report,
                session_id=self.session_id,
                kind="search",
                extra=extra,
            )


__all__ = [
    "AS_IS",
    "BUNDLED",
    "SearchRequest",
    "SearchRun",
    "backend_factory",
    "best_result",
    "configurations_for",
    "cost_unit_of",
    "dataset_named",
    "first_examples",
    "load_upload",
    "models_named",
    "new_search_id",
    "own_strategy_nodes",
    "pool",
    "run_evaluation",
    "search_space",
    "shipped_eval_plans",
]
