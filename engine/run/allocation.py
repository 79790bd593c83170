"""Per-node budgets from a plan's allocation policy, shown before a run and enforced during it.

The analyst has to see, before spending anything, which model and strategy each node will get and
how much of the run's caps it may use; the executor needs the same numbers at run time, adjusted
for what earlier nodes really spent. Both come from one ``Allocation`` so the table the analyst
approves and the caps the executor applies cannot drift apart.

Policies (``AllocationPolicy.kind``):

* ``uniform``: every node the plan's default strategy and its own output limit.
* ``difficulty`` (Plan-and-Budget, arXiv 2505.16122): the output limit of a call comes from the
  node's difficulty level (``level_tokens``), scaled by a decay schedule over the execution order.
* ``fast_deliberate`` (SCALE, arXiv 2512.00466): nodes at or above ``threshold`` get the
  deliberate model and strategy, the others the fast model and a single call.

Whatever the analyst set on a node (``strategy``, ``model``, ``generation``, ``budget``) wins over
the policy, and ``NodeAllocation.source`` says so.

Shares: each node's *weight* is its expected output volume, ``max_tokens × strategy.most_calls``.
A run cap is shared by weight with water-filling: a node whose proportional share exceeds its
manual cap gets the cap, and the rest is shared again among the others, until nothing is clipped.
So a manual cap is a ceiling, never a reservation, and the planned shares never add up to more
than the cap. At run time ``node_token_cap`` applies the same sharing to what is still available
among the nodes not yet started, which is how unspent budget flows to later nodes.

The root first: the answer is the root's, and the root runs last, reading every other node's
output, so nodes that each take their share (and top up to one full call) can together leave the
root too little. ``allocate`` therefore holds the root's full need (``engine.run.reachability``:
its calls at their output limit, its prompt quoting every child at its limit) back from the
others before sharing (at most half the total: the need assumes every child writes up to its
limit): the root is planned ``max(its weight's share, its reserve)`` and the other nodes share
the rest; at run time no other node's allowance or top-up dips into what is held
(``Allocation.spendable``). The reachability check says before the run when caps cannot
cover the root's need and a call of every other node.

Prices live in the model registry, which this module does not read: the dollar cap is shared by
the same weights as tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from engine.errors import PlanError
from engine.plan import Node, Plan
from engine.plan.compute_config import AllocationPolicy, DecaySchedule, StrategyConfig
from engine.plan.model_settings import ModelRef
from engine.run.budget import MIN_OUTPUT_TOKENS, RunCaps

#: Every decay schedule ends at or above this, so the last nodes (the root's synthesis) still
#: get a usable output limit.
DECAY_FLOOR = 0.25


@dataclass(frozen=True)
class NodeAllocation:
    """What one node gets: its effective model, strategy, output limit and share of the caps."""

    node_id: str
    title: str
    difficulty: int
    """The node's rating, or ``policy.unrated_difficulty`` when nobody rated it."""
    model: ModelRef
    """Effective model: the node's own, else the policy's choice, else the plan's default."""
    strategy: StrategyConfig
    """Effective strategy: the node's own, else the policy's choice."""
    max_tokens: int
    """Output-token limit of each call of this node."""
    weight: float
    """Share weight (> 0): expected output volume, ``max_tokens × strategy.most_calls``."""
    planned_tokens: int
    """This node's share of ``caps.total_tokens`` before the run."""
    planned_cost_usd: float | None
    """This node's share of ``caps.total_cost_usd``; None when the run has no money cap."""
    token_cap: int | None
    """The analyst's hard cap (``node.budget.tokens``); None if not set."""
    cost_cap_usd: float | None
    """The analyst's hard cap (``node.budget.cost_usd``); None if not set."""
    source: str
    """Why the node got this, in words: ``"uniform"``, ``"difficulty 4 × decay 0.83"``,
    ``"fast (difficulty 2)"``, ``"manual strategy"``, ... joined by ``", "``."""


@dataclass(frozen=True)
class Allocation:
    """A plan's per-node allocation; ``nodes`` is in execution order."""

    policy: AllocationPolicy
    nodes: dict[str, NodeAllocation]
    total_tokens: int
    total_cost_usd: float | None
    root_id: str | None = None
    root_reserve_tokens: int = 0
    """Tokens held back for the root until it starts (its full need, at most the total)."""

    def spendable(self, node_id: str, available_tokens: int) -> int:
        """What ``node_id`` may draw from ``available_tokens``: all of it for the root, the
        rest after the root's reserve for any other node (the root starts last)."""
        if node_id == self.root_id:
            return available_tokens
        return available_tokens - self.root_reserve_tokens

    def node_token_cap(self, node_id: str, available_tokens: int, pending: Iterable[str]) -> int:
        """Tokens ``node_id`` may use, decided when it starts.

        ``available_tokens`` is what the run has left now; ``pending`` the nodes not started yet
        (``node_id`` may be among them or not). The node gets its weight's share of what is
        available among ``pending ∪ {node_id}``, floored, and never more than its manual cap;
        pending nodes' manual caps that are smaller than their share leave the excess to the
        others (water-filling). The result is between 0 and ``max(available_tokens, 0)``.
        """
        group = self._group(node_id, pending)
        amount = self.spendable(node_id, available_tokens)
        if self.root_reserve_tokens and len(group) > 1:
            if node_id == self.root_id:  # never alongside others in a run; within its reserve
                amount = min(amount, self.root_reserve_tokens)
            else:  # the others share what is not held back for the root
                group = [key for key in group if key != self.root_id]
        if amount <= 0:
            return 0
        weights = {key: self.nodes[key].weight for key in group}
        caps = {key: self.nodes[key].token_cap for key in group}
        share = _water_fill(Fraction(amount), weights, caps)[node_id]
        return min(math.floor(share), amount)

    def node_cost_cap(self, node_id: str, available_usd: float, pending: Iterable[str]) -> float:
        """Dollars ``node_id`` may spend, decided when it starts; as ``node_token_cap``."""
        if not available_usd > 0:  # also refuses NaN
            return 0.0
        group = self._group(node_id, pending)
        weights = {key: self.nodes[key].weight for key in group}
        caps = {key: self.nodes[key].cost_cap_usd for key in group}
        share = _water_fill(Fraction(available_usd), weights, caps)[node_id]
        return min(_float_floor(share), available_usd)

    def rows(self) -> list[dict[str, object]]:
        """One row per node, in execution order, for the UI's and the CLI's tables."""
        return [
            {
                "node": item.node_id,
                "title": item.title,
                "difficulty": item.difficulty,
                "model": item.model.label,
                "strategy": item.strategy.label,
                "max_tokens": item.max_tokens,
                "planned_tokens": item.planned_tokens,
                "planned_usd": item.planned_cost_usd,
                "token_cap": item.token_cap,
                "cost_cap_usd": item.cost_cap_usd,
                "source": item.source,
            }
            for item in self.nodes.values()
        ]

    def _group(self, node_id: str, pending: Iterable[str]) -> list[str]:
        """``pending ∪ {node_id}``; an id outside the plan is the caller's bug, so it is named."""
        group = dict.fromkeys([node_id, *pending])
        unknown = [key for key in group if key not in self.nodes]
        if unknown:
            raise PlanError(
                f"Node(s) {', '.join(map(repr, unknown))} are not in this allocation; "
                "allocate the plan again after editing it."
            )
        return list(group)


def decay_factor(schedule: DecaySchedule, position: int, count: int) -> float:
    """Scale of the output limit of the node at ``position`` (0-based) of ``count`` in order.

    With ``t = position / (count - 1)`` (and 1.0 whenever ``count == 1``):

    * constant: ``1``
    * linear: ``1 - 0.5 t`` (ends at 0.5)
    * polynomial: ``0.25 + 0.75 (1 - t)²`` (drops fast early, ends at 0.25)
    * exponential: ``0.5 ** (2 t)`` = ``0.25 ** t`` (ends at 0.25)
    * cosine: ``0.25 + 0.75 (1 + cos(π t)) / 2`` (flat at both ends, ends at 0.25)

    Each starts at 1.0, never increases along the order and stays at or above ``DECAY_FLOOR``,
    so late nodes, which synthesise earlier outputs, still get something.
    """
    if count < 1 or not 0 <= position < count:
        raise ValueError(f"position {position} is not within 0..{count - 1}")
    if count == 1:
        return 1.0
    t = position / (count - 1)
    if schedule == "constant":
        factor = 1.0
    elif schedule == "linear":
        factor = 1.0 - 0.5 * t
    elif schedule == "polynomial":
        factor = DECAY_FLOOR + (1.0 - DECAY_FLOOR) * (1.0 - t) ** 2
    elif schedule == "exponential":
        factor = 0.5 ** (2.0 * t)
    elif schedule == "cosine":
        factor = DECAY_FLOOR + (1.0 - DECAY_FLOOR) * (1.0 + math.cos(math.pi * t)) / 2.0
    else:
        raise ValueError(f"unknown decay schedule {schedule!r}")
    return min(1.0, max(DECAY_FLOOR, factor))


def allocate(plan: Plan, caps: RunCaps, *, order: Sequence[str] | None = None) -> Allocation:
    """Each node's model, strategy, output limit and planned share of ``caps``.

    ``order`` is the plan's execution order when the caller has it (the executor, which has
    validated the graph already; validating twice is a third of a 1000-node run's overhead).
    Raises ``PlanError`` (or ``CycleError``) when the plan's graph is invalid.
    """
    order = list(order) if order is not None else plan.execution_order()  # validates the graph
    by_id = plan.nodes()
    policy = plan.allocation
    drafts = [
        _draft(plan, by_id[node_id], position, len(order), caps)
        for position, node_id in enumerate(order)
    ]
    weights = {draft.node_id: draft.weight for draft in drafts}
    token_caps = {draft.node_id: draft.token_cap for draft in drafts}
    token_shares = _water_fill(Fraction(caps.total_tokens), weights, token_caps)
    root_id = plan.root.id
    reserve = _root_reserve(plan, drafts, caps)
    if len(drafts) > 1 and token_shares[root_id] < reserve:
        # The root first: it keeps its need, the others share what is left.
        others = {key: weight for key, weight in weights.items() if key != root_id}
        token_shares = _water_fill(Fraction(caps.total_tokens - reserve), others, token_caps)
        token_shares[root_id] = Fraction(reserve)
    cost_shares: dict[str, Fraction] | None = None
    if caps.total_cost_usd is not None:
        cost_shares = _water_fill(
            Fraction(caps.total_cost_usd),
            weights,
            {draft.node_id: draft.cost_cap_usd for draft in drafts},
        )
    nodes = {
        draft.node_id: NodeAllocation(
            node_id=draft.node_id,
            title=draft.title,
            difficulty=draft.difficulty,
            model=draft.model,
            strategy=draft.strategy,
            max_tokens=draft.max_tokens,
            weight=draft.weight,
            planned_tokens=math.floor(token_shares[draft.node_id]),
            planned_cost_usd=(
                None if cost_shares is None else _float_floor(cost_shares[draft.node_id])
            ),
            token_cap=draft.token_cap,
            cost_cap_usd=draft.cost_cap_usd,
            source=draft.source,
        )
        for draft in drafts
    }
    return Allocation(
        policy=policy,
        nodes=nodes,
        total_tokens=caps.total_tokens,
        total_cost_usd=caps.total_cost_usd,
        root_id=root_id if len(drafts) > 1 else None,
        root_reserve_tokens=reserve if len(drafts) > 1 else 0,
    )


#: The root's reserve is at most this share of the total: its need assumes every child writes
#: up to its limit, which they rarely do, and an over-estimate must not keep the others from
#: running at all (the reachability check warns about such caps before the run).
ROOT_RESERVE_MAX_SHARE = Fraction(1, 2)


def _root_reserve(plan: Plan, drafts: list[_Draft], caps: RunCaps) -> int:
    """The root's full need, within its manual cap and ``ROOT_RESERVE_MAX_SHARE`` of the total."""
    from engine.run.reachability import node_full_tokens, prompt_tokens

    by_id = {draft.node_id: draft for draft in drafts}
    root = by_id[plan.root.id]
    limits = {draft.node_id: draft.max_tokens for draft in drafts}
    prompt = prompt_tokens(plan, plan.root, limits)
    need = node_full_tokens(root.strategy, root.max_tokens, prompt)
    if root.token_cap is not None:
        need = min(need, root.token_cap)
    return max(0, min(need, math.floor(caps.total_tokens * ROOT_RESERVE_MAX_SHARE)))


@dataclass(frozen=True)
class _Draft:
    """A node's allocation before the run's caps are shared."""

    node_id: str
    title: str
    difficulty: int
    model: ModelRef
    strategy: StrategyConfig
    max_tokens: int
    weight: float
    token_cap: int | None
    cost_cap_usd: float | None
    source: str


def _draft(plan: Plan, node: Node, position: int, count: int, caps: RunCaps) -> _Draft:
    """Apply the policy to one node, then let the analyst's own settings win."""
    policy = plan.allocation
    rated = node.difficulty is not None
    difficulty = node.difficulty if node.difficulty is not None else policy.unrated_difficulty
    rating = ("" if rated else "unrated ") + f"difficulty {difficulty}"
    own_limit = min(plan.generation_for(node).max_tokens, caps.max_tokens_per_node)

    strategy = plan.default_strategy
    model = plan.default_model
    max_tokens = own_limit
    if policy.kind == "difficulty":
        factor = decay_factor(policy.decay, position, count)
        if node.generation is None:
            scaled = round(policy.level_tokens[difficulty - 1] * factor)
            max_tokens = min(max(scaled, MIN_OUTPUT_TOKENS), caps.max_tokens_per_node)
            parts = [f"{rating} × decay {factor:.2f}"]
        else:
            parts = [f"{rating}, manual max tokens"]
    elif policy.kind == "fast_deliberate":
        if difficulty >= policy.threshold:
            strategy = policy.deliberate_strategy
            model = policy.deliberate_model or plan.default_model
            parts = [f"deliberate ({rating})"]
        else:
            strategy = StrategyConfig(kind="single", samples=1)  # own copy: the UI may edit it
            model = policy.fast_model or plan.default_model
            parts = [f"fast ({rating})"]
    else:
        parts = ["uniform"]

    if node.strategy is not None:
        strategy = node.strategy
        parts.append("manual strategy")
    if node.model is not None:
        model = node.model
        parts.append("manual model")
    token_cap = node.budget.tokens if node.budget is not None else None
    cost_cap = node.budget.cost_usd if node.budget is not None else None
    if token_cap is not None or cost_cap is not None:
        parts.append("manual cap")
    return _Draft(
        node_id=node.id,
        title=node.title,
        difficulty=difficulty,
        model=model,
        strategy=strategy,
        max_tokens=max_tokens,
        weight=float(max_tokens * strategy.most_calls),
        token_cap=token_cap,
        cost_cap_usd=cost_cap,
        source=", ".join(parts),
    )


def _water_fill(
    amount: Fraction, weights: Mapping[str, float], caps: Mapping[str, float | None]
) -> dict[str, Fraction]:
    """Share ``amount`` by weight, clipping each key at its cap and resharing the excess.

    Exact arithmetic, so the shares never add up to more than ``amount`` by a rounding slip.
    Every key whose share at the current level reaches its cap is clipped at once: removing
    clipped keys only raises the others' level, so a clipped key never needs unclipping.
    """
    shares: dict[str, Fraction] = {}
    free = {key: Fraction(weight) for key, weight in weights.items()}
    left = max(amount, Fraction(0))
    while free:
        total_weight = sum(free.values(), Fraction(0))
        clipped = {
            key: Fraction(cap)
            for key, weight in free.items()
            if (cap := caps.get(key)) is not None and Fraction(cap) <= left * weight / total_weight
        }
        if not clipped:
            shares.update({key: left * weight / total_weight for key, weight in free.items()})
            break
        for key, clip in clipped.items():
            shares[key] = clip
            left -= clip
            del free[key]
    return shares


def _float_floor(value: Fraction) -> float:
    """The largest float not above ``value``, so dollar shares never round up past the cap."""
    result = float(value)
    if Fraction(result) > value:
        result = math.nextafter(result, -math.inf)
    return result


__all__ = [
    "DECAY_FLOOR",
    "ROOT_RESERVE_MAX_SHARE",
    "Allocation",
    "NodeAllocation",
    "allocate",
    "decay_factor",
]
