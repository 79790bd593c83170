"""The baselines: every assignment (the optimum) and the best uniform assignment."""

from __future__ import annotations

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


__all__ = ["best_uniform", "exhaustive"]
