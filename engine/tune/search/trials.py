"""Trials and results: what one evaluation of an assignment found, how trials compare, and the
cache and trial counter every search shares (``TrialLog``)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from engine.tune.search.space import Assignment, SearchSpace

#: Trials are compared on cost with this relative slack, so rounding never makes an assignment
#: that costs exactly the budget infeasible.
COST_TOLERANCE = 1e-9

#: Called after every real evaluation (not after cache hits), e.g. to update a progress view.
TrialCallback = Callable[["TrialResult"], None]


@dataclass(frozen=True)
class TrialResult:
    """One evaluation of one assignment on some dev examples (means are per example)."""

    assignment: Assignment
    accuracy: float
    #: Mean cost per example, in the evaluator's unit (dollars or tokens).
    cost: float
    tokens: float
    latency_s: float
    n_examples: int
    #: How the search came to try it: "llm proposal", "neighbour", "halving round 2" ...
    note: str = ""

    def feasible(self, budget: float) -> bool:
        return self.cost <= budget + COST_TOLERANCE * max(1.0, abs(budget))


class Evaluator(Protocol):
    """Runs an assignment on dev examples (all of them when ``examples`` is None)."""

    @property
    def n_examples(self) -> int: ...

    def __call__(
        self, assignment: Mapping[str, int], examples: Sequence[int] | None = None
    ) -> TrialResult: ...


@dataclass
class SearchResult:
    """What a search tried and the best feasible assignment it found."""

    method: str
    budget: float
    #: Best assignment within the budget on all examples; None if none was found.
    best: TrialResult | None
    #: Every real evaluation, in order (cache hits are not repeated here).
    trials: list[TrialResult]
    exhaustive_size: int
    #: Examples in the dev set (0 when unknown).
    n_examples: int = 0
    #: Why the search ended: "converged", "max_trials", "cancelled", "space exhausted" ...
    stop_reason: str = ""
    #: Full-dataset results of the assignments the search ranked at the end (successive
    #: halving merges its partial evaluations here); the others leave it empty.
    finalists: list[TrialResult] = field(default_factory=list)

    @property
    def trials_used(self) -> int:
        """Distinct assignments evaluated on the whole dev set (their partial runs summed)."""
        seen: dict[tuple[tuple[str, int], ...], int] = {}
        for trial in self.trials:
            key = tuple(sorted(trial.assignment.items()))
            seen[key] = seen.get(key, 0) + trial.n_examples
        full = self.n_examples or max((t.n_examples for t in self.trials), default=0)
        return sum(1 for count in seen.values() if count >= full)

    @property
    def evaluations(self) -> float:
        """Work done, in full-dataset evaluations: examples run / dev-set size."""
        if not self.n_examples:
            return float(len(self.trials))
        return sum(trial.n_examples for trial in self.trials) / self.n_examples


def is_better(a: TrialResult, b: TrialResult | None, budget: float) -> bool:
    """True when ``a`` beats ``b``: feasible beats infeasible, then higher accuracy, then cheaper.

    Anything beats None; an exact tie is not better.
    """
    if b is None:
        return True
    a_ok, b_ok = a.feasible(budget), b.feasible(budget)
    if a_ok != b_ok:
        return a_ok
    if a.accuracy != b.accuracy:
        return a.accuracy > b.accuracy
    return a.cost < b.cost


def best_of(trials: Iterable[TrialResult], budget: float) -> TrialResult | None:
    best: TrialResult | None = None
    for trial in trials:
        if is_better(trial, best, budget):
            best = trial
    return best


def merge_trials(parts: Sequence[TrialResult], note: str = "") -> TrialResult:
    """One result for one assignment from evaluations on disjoint example sets."""
    total = sum(part.n_examples for part in parts)
    if not parts or total == 0:
        raise ValueError("merge_trials needs at least one evaluation with examples")

    def mean(attribute: str) -> float:
        return sum(getattr(p, attribute) * p.n_examples for p in parts) / total

    return TrialResult(
        assignment=dict(parts[0].assignment),
        accuracy=mean("accuracy"),
        cost=mean("cost"),
        tokens=mean("tokens"),
        latency_s=mean("latency_s"),
        n_examples=total,
        note=note or parts[-1].note,
    )


class SearchStopped(Exception):
    """Raised inside a search when it must end; carries the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class TrialLog:
    """The cache and the trial counter every search shares.

    ``max_trials`` is counted in full-dataset evaluations, so running 15 of 60 examples costs a
    quarter of a trial; cache hits cost nothing.
    """

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator,
        budget: float,
        max_trials: float | None,
        on_trial: TrialCallback | None,
        cancel: threading.Event | None,
    ):
        if budget < 0 or not math.isfinite(budget):
            raise ValueError(f"budget must be a finite number >= 0, not {budget!r}")
        if max_trials is not None and max_trials < 1:
            raise ValueError(f"max_trials must be at least 1, not {max_trials!r}")
        self.space = space
        self.evaluator = evaluator
        self.n_examples = int(evaluator.n_examples)
        if self.n_examples < 1:
            raise ValueError("the evaluator has no examples")
        self.budget = budget
        self.max_trials = max_trials
        self.on_trial = on_trial
        self.cancel = cancel
        self.cache: dict[tuple[tuple[int, ...], tuple[int, ...] | None], TrialResult] = {}
        self.trials: list[TrialResult] = []
        self.spent = 0.0

    def cost_of(self, examples: Sequence[int] | None) -> float:
        return 1.0 if examples is None else len(examples) / self.n_examples

    def can_afford(self, examples: Sequence[int] | None = None) -> bool:
        if self.max_trials is None:
            return True
        return self.spent + self.cost_of(examples) <= self.max_trials + 1e-9

    def tried(self, assignment: Mapping[str, int]) -> bool:
        return (self.space.key(assignment), None) in self.cache

    def evaluate(
        self, assignment: Mapping[str, int], examples: Sequence[int] | None = None, note: str = ""
    ) -> TrialResult:
        """The (cached) result; raises ``SearchStopped`` when cancelled or out of trials."""
        checked = self.space.check(assignment)
        if examples is not None:
            examples = tuple(examples)
            if len(examples) == self.n_examples and sorted(examples) == list(
                range(self.n_examples)
            ):
                examples = None
        key = (self.space.key(checked), examples)
        if key in self.cache:
            return self.cache[key]
        if self.cancel is not None and self.cancel.is_set():
            raise SearchStopped("cancelled")
        if not self.can_afford(examples):
            raise SearchStopped("max_trials")
        raw = self.evaluator(dict(checked), None if examples is None else list(examples))
        result = replace(raw, assignment=dict(checked), note=note or raw.note)
        self.spent += self.cost_of(examples)
        self.cache[key] = result
        self.trials.append(result)
        if self.on_trial is not None:
            self.on_trial(result)
        return result

    def best(self) -> TrialResult | None:
        full = [trial for (_, examples), trial in self.cache.items() if examples is None]
        best = best_of(full, self.budget)
        return best if best is not None and best.feasible(self.budget) else None

    def result(
        self, method: str, stop_reason: str, finalists: list[TrialResult] | None = None
    ) -> SearchResult:
        best = self.best()
        if finalists:
            candidate = best_of(finalists, self.budget)
            if candidate is not None and candidate.feasible(self.budget):
                best = candidate if is_better(candidate, best, self.budget) else best
        return SearchResult(
            method=method,
            budget=self.budget,
            best=best,
            trials=list(self.trials),
            exhaustive_size=self.space.size,
            n_examples=self.n_examples,
            stop_reason=stop_reason,
            finalists=list(finalists or []),
        )


def ranked(results: list[TrialResult], budget: float) -> list[TrialResult]:
    """Best first by ``is_better`` (feasible, accuracy, cost)."""
    return sorted(results, key=lambda t: (not t.feasible(budget), -t.accuracy, t.cost))


__all__ = [
    "COST_TOLERANCE",
    "Evaluator",
    "SearchResult",
    "SearchStopped",
    "TrialCallback",
    "TrialLog",
    "TrialResult",
    "best_of",
    "is_better",
    "merge_trials",
    "ranked",
]
