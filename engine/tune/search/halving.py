"""Successive halving: random affordable-looking assignments on a few examples, the better half
kept on more examples, until the survivors have seen all of them."""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Sequence

from engine.tune.search.space import Assignment, SearchSpace
from engine.tune.search.trials import (
    Evaluator,
    SearchResult,
    SearchStopped,
    TrialCallback,
    TrialLog,
    TrialResult,
    merge_trials,
    ranked,
)

#: Fewest examples the first halving round sees; fewer make the first cut close to random.
MIN_FIRST_ROUND = 4
MAX_HALVING_ROUNDS = 5
#: Between rounds a candidate counts as within budget up to this much over it, times the share
#: of examples it has not run yet (a subset's mean cost is noisy; the last round is exact).
SUBSET_COST_SLACK = 0.1
#: Candidates whose cost estimate exceeds the budget by more than this factor are not drawn.
ESTIMATE_SLACK = 1.25


def _halving_schedule(n_examples: int, rounds: int) -> list[int]:
    """Cumulative example counts per round: halving from the end, the last round all of them."""
    sizes = [max(1, math.ceil(n_examples / 2 ** (rounds - 1 - r))) for r in range(rounds)]
    sizes[-1] = n_examples
    return sizes


def _halving_work(schedule: list[int], count: int, n_examples: int) -> float:
    """Full-dataset evaluations ``count`` candidates cost under ``schedule``."""
    total, alive, seen = 0, count, 0
    for cumulative in schedule:
        total += alive * (cumulative - seen)
        seen, alive = cumulative, max(1, math.ceil(alive / 2))
    return total / n_examples


def _halving_plan(n_examples: int, pool: int, trials_left: float) -> tuple[list[int], int]:
    """The schedule and candidate count for ``pool`` candidates within ``trials_left``.

    Fewer rounds mean more examples before the first cut; more rounds afford more candidates.
    Takes the fewest rounds that afford the whole pool, else the most rounds (at least
    ``MIN_FIRST_ROUND`` examples in the first) and as many candidates as they afford.
    """
    best: tuple[list[int], int] = ([n_examples], 1)
    for rounds in range(1, MAX_HALVING_ROUNDS + 1):
        schedule = _halving_schedule(n_examples, rounds)
        if rounds > 1 and schedule[0] < min(MIN_FIRST_ROUND, n_examples):
            break
        low, high = 1, pool
        while low < high:  # the most candidates whose work fits
            middle = (low + high + 1) // 2
            if _halving_work(schedule, middle, n_examples) <= trials_left + 1e-9:
                low = middle
            else:
                high = middle - 1
        if low > best[1]:
            best = (schedule, low)
        if low >= pool:
            break
    return best


def _cost_estimator(
    space: SearchSpace, reference: Assignment, reference_cost: float
) -> Callable[[Sequence[int]], float] | None:
    """Assignment key -> estimated cost, by scaling summed ``relative_cost`` to one measurement."""
    reference_hint = sum(
        space.options[node][index].relative_cost for node, index in reference.items()
    )
    if reference_hint <= 0 or reference_cost <= 0:
        return None
    scale = reference_cost / reference_hint
    hints = [[option.relative_cost for option in opts] for opts in space.options.values()]

    def estimate(key: Sequence[int]) -> float:
        return scale * sum(hints[position][index] for position, index in enumerate(key))

    return estimate


def _draw_candidates(
    space: SearchSpace,
    rng: random.Random,
    count: int,
    plausible: Callable[[Sequence[int]], bool],
    exclude: tuple[int, ...],
) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct random keys that look affordable (never ``exclude``)."""
    if space.size <= 50_000:
        pool = [
            key
            for key in itertools.product(*(range(len(o)) for o in space.options.values()))
            if key != exclude and plausible(key)
        ]
        return pool if len(pool) <= count else rng.sample(pool, count)
    keys: set[tuple[int, ...]] = set()
    drawn: list[tuple[int, ...]] = []
    for _ in range(200 * count):
        key = tuple(rng.randrange(len(opts)) for opts in space.options.values())
        if key != exclude and key not in keys and plausible(key):
            keys.add(key)
            drawn.append(key)
            if len(drawn) >= count:
                break
    return drawn


def successive_halving(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    budget: float,
    max_trials: int,
    seed: int = 0,
    on_trial: TrialCallback | None = None,
    cancel: threading.Event | None = None,
) -> SearchResult:
    """Random assignments on growing example subsets, keeping the better half each round.

    The examples are shuffled (seeded); each round runs the surviving candidates on the next
    slice, merges that with what they ran before (an example runs once per assignment), and
    keeps the better half by ``is_better`` on the examples seen so far; the last round has run
    all of them. The candidates are the cheapest assignment and distinct random ones, as many
    as ``max_trials`` full-dataset evaluations afford. The cheapest assignment's cost on the
    first few examples calibrates the options' ``relative_cost``; random assignments estimated
    at more than ``ESTIMATE_SLACK`` × budget are not drawn, so trials go to affordable ones.
    When few are affordable, fewer rounds with more examples each are used instead.
    """
    trials = TrialLog(space, evaluator, budget, max_trials, on_trial, cancel)
    rng = random.Random(seed)
    n = trials.n_examples
    order = list(range(n))
    rng.shuffle(order)
    parts: dict[tuple[int, ...], list[TrialResult]] = {}

    def run(key: tuple[int, ...], upto: int, note: str) -> TrialResult:
        done = sum(part.n_examples for part in parts.get(key, []))
        if upto > done:
            chunk = order[done:upto]
            parts.setdefault(key, []).append(trials.evaluate(space.from_key(key), chunk, note))
        return merge_trials(parts[key], note)

    def full_results(note: str) -> list[TrialResult]:
        done = [p for p in parts.values() if sum(t.n_examples for t in p) == n]
        return ranked([merge_trials(p, note) for p in done], budget)

    cheapest = space.key(space.cheapest())
    try:
        probe = run(cheapest, min(n, MIN_FIRST_ROUND), "halving: cost probe of the cheapest")
        estimate = _cost_estimator(space, space.from_key(cheapest), probe.cost)

        def plausible(key: Sequence[int]) -> bool:
            return estimate is None or estimate(key) <= budget * ESTIMATE_SLACK

        left = max_trials - trials.spent
        _, most = _halving_plan(n, space.size, left)
        drawn = _draw_candidates(space, rng, most - 1, plausible, cheapest)
        if not drawn:  # the estimate rules everything out; trust the trials instead
            drawn = _draw_candidates(space, rng, most - 1, lambda key: True, cheapest)
        schedule, count = _halving_plan(n, len(drawn) + 1, left)
        candidates = [cheapest, *drawn[: count - 1]]
        for round_number, cumulative in enumerate(schedule, start=1):
            note = f"halving round {round_number} ({cumulative} of {n} examples)"
            merged = [run(key, cumulative, note) for key in candidates]
            if cumulative == n:
                return trials.result(
                    "successive halving", "halving finished", ranked(merged, budget)
                )
            # A cost measured on part of the examples is noisy: one close to the budget may
            # still fit on all of them, so it is not cut yet.
            survivors = ranked(merged, budget * (1 + SUBSET_COST_SLACK * (1 - cumulative / n)))
            keep = max(1, math.ceil(len(survivors) / 2))
            candidates = [space.key(trial.assignment) for trial in survivors[:keep]]
        return trials.result("successive halving", "halving finished", full_results("halving"))
    except SearchStopped as stop:
        return trials.result("successive halving", stop.reason, full_results("halving (stopped)"))


__all__ = ["successive_halving"]
