"""Automatic search for each node's model, strategy and token budget under a global cost budget.

AgentTTS (arXiv 2508.00890) observed that in a multi-step task each step may want a different
model and budget, that extra compute has diminishing returns, and that an early step's budget
changes what later steps need. So the per-node choices interact, and the space (options per
node to the power of the number of nodes) is too big to try exhaustively on a dev set. This
module searches it from feedback: each *trial* runs one full assignment on dev examples and
observes accuracy and mean cost per example; the objective is the highest dev accuracy whose
mean cost per example stays within the budget.

Searches here know nothing about how a trial is run: an ``Evaluator`` does that (a real plan
runner, or ``engine.tune.outcome_table.TableEvaluator`` over recorded outcomes). The methods:

* ``coordinate_descent``: from the cheapest assignment, move one node at a time to its best
  option (and, when stuck at the budget, trade one step of cost between two nodes); stops
  when a sweep changes nothing.
* ``successive_halving``: many random affordable-looking assignments on a few examples, the
  better half kept on more examples, until the survivors have seen all of them.
* ``llm_guided_search``: AgentTTS-style: a model reads the trial history and proposes the next
  assignment; unusable proposals become mutations of the best so far.
* ``best_uniform`` (every node the same option) and ``exhaustive``: the baselines.

Every search caches trials, so the same assignment is never run twice on the same examples, and
stops at ``max_trials`` (counted in full-dataset evaluations) or when ``cancel`` is set.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel, Field, model_validator

from engine.models.base import Backend, ChatMessage
from engine.plan import Plan
from engine.plan.compute_config import StrategyConfig
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.prompts import as_user_turn

#: Trials are compared on cost with this relative slack, so rounding never makes an assignment
#: that costs exactly the budget infeasible.
COST_TOLERANCE = 1e-9

Assignment = dict[str, int]
"""Node id -> index into that node's options in a ``SearchSpace``."""

#: Called after every real evaluation (not after cache hits), e.g. to update a progress view.
TrialCallback = Callable[["TrialResult"], None]


# -- the space ----------------------------------------------------------------------------------


def strategy_short_label(strategy: StrategyConfig) -> str:
    """``single``, ``self-consistency ×5``, ``best-of-N ×4``, ``self-refine ×2``."""
    if strategy.kind == "single":
        return "single"
    return strategy.label.replace(" vote", "")


class NodeOption(BaseModel):
    """One choice for one node: which model, which strategy, how many output tokens per call."""

    label: str = Field(min_length=1, max_length=120, description="e.g. 'small · single · 128'.")
    model: ModelRef
    strategy: StrategyConfig
    max_tokens: int = Field(ge=1, le=8192, description="Output tokens per call of the node.")
    cost_hint: float | None = Field(
        None,
        ge=0.0,
        description="Relative cost estimate in any unit, used only to rank a node's options"
        " (the search starts from the cheapest). None: calls × max_tokens.",
    )

    @property
    def relative_cost(self) -> float:
        """``cost_hint`` if set, else most calls × max_tokens (model prices are unknown here)."""
        if self.cost_hint is not None:
            return self.cost_hint
        return float(self.strategy.most_calls * self.max_tokens)


class SearchSpace(BaseModel):
    """The options of every searched node; an assignment picks one index per node."""

    options: dict[str, list[NodeOption]] = Field(
        description="Node id -> its options; insertion order is the order nodes are searched."
    )

    @model_validator(mode="after")
    def _every_node_has_distinct_options(self) -> SearchSpace:
        if not self.options:
            raise ValueError("a search space needs at least one node")
        for node_id, options in self.options.items():
            if not options:
                raise ValueError(f"node {node_id!r} has no options; give it at least one")
            labels = [option.label for option in options]
            if len(set(labels)) != len(labels):
                raise ValueError(f"node {node_id!r} has options with the same label: {labels}")
        return self

    @property
    def nodes(self) -> list[str]:
        return list(self.options)

    @property
    def size(self) -> int:
        """Number of distinct assignments: what an exhaustive search evaluates."""
        return math.prod(len(options) for options in self.options.values())

    def labels(self) -> dict[str, list[str]]:
        return {node: [option.label for option in opts] for node, opts in self.options.items()}

    def check(self, assignment: Mapping[str, int]) -> Assignment:
        """``assignment`` as a plain dict in node order; ValueError naming what is wrong."""
        missing = [node for node in self.options if node not in assignment]
        extra = [node for node in assignment if node not in self.options]
        if missing or extra:
            raise ValueError(
                f"assignment must give exactly the nodes {self.nodes}; "
                f"missing {missing}, unknown {extra}"
            )
        checked: Assignment = {}
        for node, options in self.options.items():
            index = assignment[node]
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"node {node!r}: option index {index!r} is not an integer")
            if not 0 <= index < len(options):
                raise ValueError(
                    f"node {node!r}: option index {index} is out of range 0..{len(options) - 1}"
                )
            checked[node] = index
        return checked

    def key(self, assignment: Mapping[str, int]) -> tuple[int, ...]:
        """The assignment as a tuple in node order (hashable; the cache and tables use it)."""
        return tuple(assignment[node] for node in self.options)

    def from_key(self, key: Sequence[int]) -> Assignment:
        return dict(zip(self.options, key, strict=True))

    def all_assignments(self) -> Iterable[Assignment]:
        """Every assignment, the last node varying fastest."""
        ranges = [range(len(options)) for options in self.options.values()]
        for key in itertools.product(*ranges):
            yield self.from_key(key)

    def cheapest(self) -> Assignment:
        """Each node's option with the lowest ``relative_cost`` (the first one on ties)."""
        return {
            node: min(range(len(opts)), key=lambda i, opts=opts: (opts[i].relative_cost, i))
            for node, opts in self.options.items()
        }

    def describe(self, assignment: Mapping[str, int]) -> dict[str, str]:
        """Node id -> the chosen option's label."""
        checked = self.check(assignment)
        return {node: self.options[node][index].label for node, index in checked.items()}

    def apply(self, plan: Plan, assignment: Mapping[str, int]) -> Plan:
        """A deep copy of ``plan`` whose searched nodes carry the assignment as manual overrides.

        Sets each node's ``model``, ``strategy`` and ``generation`` (the node's current
        generation settings with the option's ``max_tokens``); ``plan`` is left untouched.
        Raises ``PlanError`` if a searched node is not in the plan.
        """
        checked = self.check(assignment)
        result = plan.model_copy(deep=True)
        for node_id, index in checked.items():
            option = self.options[node_id][index]
            node = result.node(node_id)
            generation = result.generation_for(node).model_copy(
                update={"max_tokens": option.max_tokens}, deep=True
            )
            node.model = option.model.model_copy(deep=True)
            node.strategy = option.strategy.model_copy(deep=True)
            node.generation = generation
        return result

    @classmethod
    def from_choices(
        cls,
        plan: Plan,
        models: list[tuple[str, ModelRef]],
        strategies: list[StrategyConfig],
        max_tokens: list[int],
        nodes: list[str] | None = None,
    ) -> SearchSpace:
        """Every (model, strategy, max_tokens) combination for each node.

        ``models`` pairs a short name (used in labels) with a reference; list them cheapest
        first, since ties in ``relative_cost`` go to the earlier option. ``nodes`` defaults to
        every node of the plan, in execution order.
        """
        if not models or not strategies or not max_tokens:
            raise ValueError("from_choices needs at least one model, strategy and max_tokens")
        node_ids = nodes if nodes is not None else plan.execution_order()
        for node_id in node_ids:
            plan.node(node_id)  # PlanError for an unknown node
        options = [
            NodeOption(
                label=f"{name} · {strategy_short_label(strategy)} · {tokens}",
                model=model,
                strategy=strategy,
                max_tokens=tokens,
            )
            for name, model in models
            for strategy in strategies
            for tokens in max_tokens
        ]
        return cls(options={node_id: [o.model_copy() for o in options] for node_id in node_ids})


# -- trials and results -------------------------------------------------------------------------


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

    n_examples: int

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


def _best_of(trials: Iterable[TrialResult], budget: float) -> TrialResult | None:
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


class _Stop(Exception):
    """Raised inside a search when it must end; carries the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class _Trials:
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
        """The (cached) result; raises ``_Stop`` when cancelled or out of trials."""
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
            raise _Stop("cancelled")
        if not self.can_afford(examples):
            raise _Stop("max_trials")
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
        best = _best_of(full, self.budget)
        return best if best is not None and best.feasible(self.budget) else None

    def result(
        self, method: str, stop_reason: str, finalists: list[TrialResult] | None = None
    ) -> SearchResult:
        best = self.best()
        if finalists:
            candidate = _best_of(finalists, self.budget)
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


# -- baselines ------------------------------------------------------------------------------------


def exhaustive(space: SearchSpace, evaluator: Evaluator, *, budget: float) -> SearchResult:
    """Every assignment on every example: the optimum, at the price of ``space.size`` trials."""
    trials = _Trials(space, evaluator, budget, None, None, None)
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
    trials = _Trials(space, evaluator, budget, None, None, None)
    for index in range(len(labels[0])):
        trials.evaluate({node: index for node in space.nodes}, note=f"uniform option {index}")
    return trials.result("uniform", "space exhausted")


# -- coordinate descent ---------------------------------------------------------------------------


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
    trials = _Trials(space, evaluator, budget, max_trials, on_trial, cancel)
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
    except _Stop as stop:
        return trials.result("coordinate descent", stop.reason)


# -- successive halving ---------------------------------------------------------------------------


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
    trials = _Trials(space, evaluator, budget, max_trials, on_trial, cancel)
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
        return _ranked([merge_trials(p, note) for p in done], budget)

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
                    "successive halving", "halving finished", _ranked(merged, budget)
                )
            # A cost measured on part of the examples is noisy: one close to the budget may
            # still fit on all of them, so it is not cut yet.
            ranked = _ranked(merged, budget * (1 + SUBSET_COST_SLACK * (1 - cumulative / n)))
            keep = max(1, math.ceil(len(ranked) / 2))
            candidates = [space.key(trial.assignment) for trial in ranked[:keep]]
        return trials.result("successive halving", "halving finished", full_results("halving"))
    except _Stop as stop:
        return trials.result("successive halving", stop.reason, full_results("halving (stopped)"))


def _ranked(results: list[TrialResult], budget: float) -> list[TrialResult]:
    """Best first by ``is_better`` (feasible, accuracy, cost)."""
    return sorted(results, key=lambda t: (not t.feasible(budget), -t.accuracy, t.cost))


# -- LLM-guided search (AgentTTS) ------------------------------------------------------------------

#: Output tokens of one proposal call: an assignment and a short reason fit comfortably.
PROPOSAL_MAX_TOKENS = 160
#: The prompt (space, insights, history) is kept under about this many tokens.
PROMPT_TOKEN_BUDGET = 1500
PROPOSAL_TEMPERATURE = 0.7
MAX_REASON_CHARS = 200

SEARCH_INSTRUCTIONS = """You tune a multi-step LLM pipeline. Each step (node) must get one \
option: a model, a strategy and a token budget. Goal: the highest accuracy on the dev set \
while the mean cost per example stays at or below the budget.

What is known about such pipelines:
1. Different steps prefer different models: the largest model is not best everywhere.
2. Extra compute (more samples, more tokens) has diminishing returns: spend it where it helps.
3. Early steps' budgets change what later steps need: a stronger early step can let a later \
step be cheaper.

Propose ONE new assignment that has not been tried yet. Answer with JSON only: an \
"assignment" object that maps every node to an option index, and a "reason" of a few words."""


def _option_lines(space: SearchSpace) -> list[str]:
    lines = []
    for node, options in space.options.items():
        choices = "; ".join(f"{i} = {option.label}" for i, option in enumerate(options))
        lines.append(f"- {node}: {choices}")
    return lines


def _trial_line(trial: TrialResult, budget: float) -> str:
    verdict = "within budget" if trial.feasible(budget) else "OVER budget"
    assignment = json.dumps(trial.assignment, separators=(",", ":"))
    return f"{assignment} -> accuracy {trial.accuracy:.3f}, cost {trial.cost:.6g} ({verdict})"


def proposal_prompt(
    space: SearchSpace,
    history: Sequence[TrialResult],
    budget: float,
    *,
    count_tokens: Callable[[str], int] | None = None,
    token_budget: int = PROMPT_TOKEN_BUDGET,
) -> str:
    """The request for the next assignment: options, budget and the history, best first.

    History lines are dropped from the worst end until the prompt fits ``token_budget``
    (counted with ``count_tokens``, default about 3 characters per token).
    """
    count = count_tokens or (lambda text: max(1, len(text) // 3))
    head = "\n".join(
        [
            f"Budget: mean cost per example <= {budget:.6g}.",
            "Options per node (index = option):",
            *_option_lines(space),
            "",
            "Trials so far, best first (assignment -> accuracy, mean cost per example):",
        ]
    )
    tail = "Propose the next assignment as JSON."
    used = count(head) + count(tail) + 16
    lines: list[str] = []
    ranked = _ranked(list(history), budget)
    for trial in ranked:
        line = _trial_line(trial, budget)
        cost = count(line) + 1
        if used + cost > token_budget:
            break
        lines.append(line)
        used += cost
    if len(lines) < len(ranked):
        lines.append(f"({len(ranked) - len(lines)} worse trials not shown)")
    if not lines:
        lines.append("(none yet)")
    return "\n".join([head, *lines, "", tail])


def proposal_schema(space: SearchSpace) -> dict[str, Any]:
    """JSON schema of a proposal: every node an integer index in range, and a short reason.

    ``enum`` repeats ``minimum``/``maximum`` because llama-cpp-python's grammar builder ignores
    the bounds; the enum is what actually keeps a local model's indices in range.
    """
    properties = {
        node: {
            "type": "integer",
            "minimum": 0,
            "maximum": len(options) - 1,
            "enum": list(range(len(options))),
        }
        for node, options in space.options.items()
    }
    return {
        "type": "object",
        "properties": {
            "assignment": {
                "type": "object",
                "properties": properties,
                "required": space.nodes,
                "additionalProperties": False,
            },
            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
        },
        "required": ["assignment"],
    }


_ASSIGNMENT_OBJECT = re.compile(r'"assignment"\s*:\s*(\{[^{}]*\})')


def parse_proposal(text: str, space: SearchSpace) -> tuple[Assignment, str]:
    """The proposed assignment and reason; ValueError saying why the text is unusable.

    An answer cut off inside its reason still yields its assignment.
    """
    try:
        payload = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        match = _ASSIGNMENT_OBJECT.search(text)
        if match is None:
            raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from exc
        try:
            payload = {"assignment": json.loads(match.group(1))}
        except json.JSONDecodeError:
            raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("assignment"), dict):
        raise ValueError("no 'assignment' object")
    reason = payload.get("reason")
    reason = " ".join(reason.split())[:MAX_REASON_CHARS] if isinstance(reason, str) else ""
    return space.check(payload["assignment"]), reason


def _mutation(
    space: SearchSpace, base: Assignment, trials: _Trials, rng: random.Random
) -> Assignment | None:
    """``base`` with one node changed to another option, untried if possible.

    When every one-node change of ``base`` has been tried, a random untried assignment; None
    when the whole space has been tried.
    """
    moves = [
        {**base, node: index}
        for node, options in space.options.items()
        for index in range(len(options))
        if index != base[node]
    ]
    untried = [move for move in moves if not trials.tried(move)]
    if untried:
        return rng.choice(untried)
    if space.size <= 100_000:
        rest = [a for a in space.all_assignments() if not trials.tried(a)]
        return rng.choice(rest) if rest else None
    for _ in range(1000):
        key = tuple(rng.randrange(len(opts)) for opts in space.options.values())
        if not trials.tried(space.from_key(key)):
            return space.from_key(key)
    return None


def llm_guided_search(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    budget: float,
    max_trials: int,
    backend: Backend,
    on_trial: TrialCallback | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
) -> SearchResult:
    """AgentTTS-style search: a model proposes each next assignment from the trial history.

    Starts with the cheapest assignment. Each round the model sees the options, the budget,
    the history (best first, cut to fit about ``PROMPT_TOKEN_BUDGET`` tokens) and AgentTTS's
    three observations, and answers JSON under ``proposal_schema``. A proposal that is not
    JSON, is out of range or was already tried, and a model call that raises, become a
    mutation of the best assignment so far; the trial's note says which and why. Each round is
    one evaluation, so the model is called at most ``max_trials - 1`` times.
    """
    trials = _Trials(space, evaluator, budget, max_trials, on_trial, cancel)
    rng = random.Random(seed)
    schema = proposal_schema(space)

    def count_tokens(text: str) -> int:
        try:
            return backend.count_tokens(text)
        except Exception:  # a tokenizer that cannot load must not end the search
            return max(1, len(text) // 3)

    try:
        trials.evaluate(space.cheapest(), note="start: cheapest")
        round_number = 0
        while True:
            if trials.cancel is not None and trials.cancel.is_set():
                raise _Stop("cancelled")
            if not trials.can_afford():
                raise _Stop("max_trials")
            if len(trials.trials) >= space.size:
                raise _Stop("space exhausted")
            round_number += 1
            prompt = proposal_prompt(space, trials.trials, budget, count_tokens=count_tokens)
            messages: list[ChatMessage] = as_user_turn(SEARCH_INSTRUCTIONS, prompt)
            config = GenerationConfig(
                temperature=PROPOSAL_TEMPERATURE,
                max_tokens=PROPOSAL_MAX_TOKENS,
                seed=seed * 1000 + round_number,
            )
            problem = ""
            proposal: Assignment | None = None
            reason = ""
            try:
                completion = backend.complete(
                    messages, config, json_schema=schema, cancel=trials.cancel
                )
            except Exception as exc:  # the model failing must not end the search
                problem = f"model error: {type(exc).__name__}: {exc}"
            else:
                try:
                    proposal, reason = parse_proposal(completion.text, space)
                except ValueError as exc:
                    problem = f"proposal invalid: {exc}"
            if proposal is not None and trials.tried(proposal):
                problem = f"proposal already tried: {json.dumps(proposal)}"
                proposal = None
            if proposal is not None:
                note = "llm proposal" + (f": {reason}" if reason else "")
                trials.evaluate(proposal, note=note[:300])
                continue
            best = trials.best() or _best_of(trials.trials, budget)
            base = dict(best.assignment) if best is not None else space.cheapest()
            mutation = _mutation(space, base, trials, rng)
            if mutation is None:
                raise _Stop("space exhausted")
            trials.evaluate(mutation, note=f"fallback: {problem}; mutated the best so far"[:300])
    except _Stop as stop:
        return trials.result("llm-guided", stop.reason)


__all__ = [
    "Assignment",
    "Evaluator",
    "NodeOption",
    "SearchResult",
    "SearchSpace",
    "TrialCallback",
    "TrialResult",
    "best_uniform",
    "coordinate_descent",
    "exhaustive",
    "is_better",
    "llm_guided_search",
    "merge_trials",
    "parse_proposal",
    "proposal_prompt",
    "proposal_schema",
    "successive_halving",
]
