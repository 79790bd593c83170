"""Allocation search on a dev set: the search algorithms of ``engine.tune.search`` fed by real runs.

``DatasetEvaluator`` is the search's ``Evaluator`` for a plan and a dataset: an assignment
(one option per node) becomes a plan with those models, strategies and output limits as the
nodes' own settings, which is run on the dev examples through a ``PlanRunner`` and checked. Runs
go through the call cache when the runner has one (``storage.pools.LocalPool`` does), so
evaluating an assignment again, or one that shares nodes' calls with an earlier one, replays
recorded outcomes instead of calling models; a repeated search costs no model calls.
``run_search`` picks the method and returns the best assignment with the trials used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from engine.models.base import Backend
from engine.plan import Plan
from engine.run.budget import RunCaps
from engine.tune.evaluation import (
    CheckerConfig,
    Dataset,
    EvaluationReport,
    PlanConfiguration,
    PlanRunner,
    evaluate,
    new_evaluation_id,
)
from engine.tune.search import (
    SearchResult,
    SearchSpace,
    TrialResult,
    coordinate_descent,
    llm_guided_search,
    successive_halving,
)

SearchMethod = Literal["coordinate", "halving", "llm"]
CostUnit = Literal["usd", "tokens"]


@dataclass
class DatasetEvaluator:
    """Evaluates assignments of ``space`` on ``dataset`` by running ``plan`` for real."""

    plan: Plan
    space: SearchSpace
    dataset: Dataset
    checker: CheckerConfig
    runner: PlanRunner
    caps: RunCaps
    cost_unit: CostUnit = "tokens"
    judge: Backend | None = None
    cancel: threading.Event | None = None
    #: Every evaluation report made, in order (what the UI and the store show).
    reports: list[EvaluationReport] = field(default_factory=list)

    @property
    def n_examples(self) -> int:
        return len(self.dataset.examples)

    def __call__(
        self, assignment: Mapping[str, int], examples: Sequence[int] | None = None
    ) -> TrialResult:
        label = " | ".join(f"{n}: {o}" for n, o in self.space.describe(assignment).items())
        configuration = PlanConfiguration(label, self.space.apply(self.plan, assignment), self.caps)
        ids = None
        if examples is not None:
            ids = [self.dataset.examples[index].id for index in examples]
        report = evaluate(
            self.dataset,
            [configuration],
            self.checker,
            runner=self.runner,
            judge=self.judge,
            cancel=self.cancel,
            example_ids=ids,
            evaluation_id=new_evaluation_id(),
        )
        self.reports.append(report)
        [result] = report.results
        cost = result.mean_cost_usd if self.cost_unit == "usd" else result.mean_tokens
        return TrialResult(
            assignment=dict(assignment),
            accuracy=result.accuracy,
            cost=cost,
            tokens=result.mean_tokens,
            latency_s=result.mean_latency_s,
            n_examples=result.n,
        )


def run_search(
    method: SearchMethod,
    evaluator: DatasetEvaluator,
    *,
    budget: float,
    max_trials: int,
    proposer: Backend | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
) -> SearchResult:
    """Search ``evaluator.space`` for the most accurate assignment whose mean cost per example
    stays within ``budget``; ``proposer`` is the model of the LLM-guided search."""
    space = evaluator.space
    if method == "llm":
        if proposer is None:
            raise ValueError("the LLM-guided search needs a proposer model")
        return llm_guided_search(
            space, evaluator, budget=budget, max_trials=max_trials, backend=proposer,
            on_trial=on_trial, cancel=cancel, seed=seed,
        )  # fmt: skip
    if method == "halving":
        return successive_halving(
            space, evaluator, budget=budget, max_trials=max_trials, seed=seed,
            on_trial=on_trial, cancel=cancel,
        )  # fmt: skip
    return coordinate_descent(
        space, evaluator, budget=budget, max_trials=max_trials, on_trial=on_trial, cancel=cancel
    )


__all__ = ["CostUnit", "DatasetEvaluator", "SearchMethod", "run_search"]
