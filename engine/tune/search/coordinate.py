"""Coordinate descent: one node at a time to its best option, with pair trades at the budget."""

from __future__ import annotations

import threading

from engine.tune.search.space import Assignment, SearchSpace
from engine.tune.search.trials import (
    Evaluator,
    SearchResult,
    SearchStopped,
    TrialCallback,
    TrialLog,
    is_better,
)


def _by_cost(space: SearchSpace, node: str) -> list[int]:
    """The node's option indices, cheapest first by ``relative_cost``."""
    options = space.options[node]
    return sorted(range(len(options)), key=lambda i: (options[i].relative_cost, i))


def _exchanges(space: SearchSpace, current: Assignment) -> list[Assignment]:
    """Pair moves: one node one step cheaper, another one step dearer (by ``relative_cost``)."""
    moves = []
    ranks = {node: _by_cost(space, node) for node in space.nodes}
    for down in space.nodes:
        position = ranks[down].index(current[down])
        if position == 0:
            continue
        for up in space.nodes:
            up_position = ranks[up].index(current[up])
            if up == down or up_position + 1 >= len(ranks[up]):
                continue
            moves.append(
                {
                    **current,
                    down: ranks[down][position - 1],
                    up: ranks[up][up_position + 1],
                }
            )
    return moves


def coordinate_descent(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    budget: float,
    max_trials: int,
    start: Assignment | None = None,
    on_trial: TrialCallback | None = None,
    cancel: threading.Event | None = None,
    exchanges: bool = True,
) -> SearchResult:
    """Improve one node at a time, starting from the cheapest assignment (or ``start``).

    A sweep visits the nodes in order; for each it tries every option with the other nodes
    fixed and moves to the best one (``is_better``). The search stops when a whole sweep
    brings no improvement, after ``max_trials`` evaluations, or when ``cancel`` is set.

    One-node moves get stuck at the budget: once an early node holds an expensive option, no
    single move can give that budget to a later node. So with ``exchanges``, when a sweep
    brings nothing the search also tries pair moves (one node one option cheaper, another one
    option dearer, by ``relative_cost``); the first that improves is taken and sweeps resume.
    """
    trials = TrialLog(space, evaluator, budget, max_trials, on_trial, cancel)
    current = space.check(start) if start is not None else space.cheapest()
    try:
        best = trials.evaluate(current, note="start")
        sweep = 0
        while True:
            sweep += 1
            improved = False
            for node in space.nodes:
                for index in range(len(space.options[node])):
                    if index == current[node]:
                        continue
                    candidate = {**current, node: index}
                    result = trials.evaluate(candidate, note=f"sweep {sweep}: neighbour")
                    if is_better(result, best, budget):
                        best, improved = result, True
                current = dict(best.assignment)
            if not improved and exchanges:
                for candidate in _exchanges(space, current):
                    result = trials.evaluate(candidate, note=f"sweep {sweep}: exchange")
                    if is_better(result, best, budget):
                        best, improved = result, True
                        current = dict(best.assignment)
                        break
            if not improved:
                return trials.result("coordinate descent", "converged")
    except SearchStopped as stop:
        return trials.result("coordinate descent", stop.reason)


__all__ = ["coordinate_descent"]
