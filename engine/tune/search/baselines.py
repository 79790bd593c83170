"""The baselines: every assignment (the optimum), the best uniform assignment, and random
search (as many distinct assignments drawn at random as a method is allowed trials: the bar a
search method must clear to be worth its logic)."""

from __future__ import annotations

import random

from engine.tune.search.space import SearchSpace
from engine.tune.search.trials import Evaluator, SearchResult, TrialLog


def exhaustive(space: SearchSpace, evaluator: Evaluator, *, budget: float) -> SearchResult:
    """Every assignment on every example: the optimum, at the price of ``space.size`` trials."""
    trials = TrialLog(space, evaluator, budget, None, None, None)
    for assignment in space.all_assignments():
        trials.evaluate(assignment, note="exhaustive")
    return trials.result("exhaustive", "space exhausted")


def best_uniform(space: SearchSpace, evaluator: Evaluator, *, budget: float) -> SearchResult:
    """The best "same option on every node" assignment: the uniform-allocation baseline.

    Raises ValueError unless every node has the same option labels in the same order.
    """
    labels = list(space.labels().values())
    if any(node_labels != labels[0] for node_labels in labels[1:]):
        raise ValueError(
            "best_uniform needs every node to offer the same options (same labels, same order)"
        )
    trials = TrialLog(space, evaluator, budget, None, None, None)
    for index in range(len(labels[0])):
        trials.evaluate({node: index for node in space.nodes}, note=f"uniform option {index}")
    return trials.result("uniform", "space exhausted")


def random_search(
    space: SearchSpace, evaluator: Evaluator, *, budget: float, max_trials: int, seed: int = 0
) -> SearchResult:
    """``max_trials`` distinct assignments drawn uniformly at random (seeded), each on every
    example; the best one within ``budget`` wins."""
    if max_trials < 1:
        raise ValueError(f"max_trials must be at least 1, not {max_trials!r}")
    trials = TrialLog(space, evaluator, budget, max_trials, None, None)
    everything = list(space.all_assignments())
    for assignment in random.Random(seed).sample(everything, min(max_trials, len(everything))):
        trials.evaluate(assignment, note="random")
    return trials.result("random search", "max_trials")


__all__ = ["best_uniform", "exhaustive", "random_search"]
