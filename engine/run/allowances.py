"""Per-node allowances: how much of the run's budget a node may use, and where unspent budget goes.

Pure arithmetic, with no IO, threads or clock reads (the caller passes what the meter has left
and what time it is), so the rules can be tested on their own:

* When a node starts it gets its weight's share of what the run has left, among itself and the
  nodes not started yet (``PendingShares``), never more than its manual cap (``engine.run
  .allocation``'s water-filling) and never more than what is left.
* A node whose share is too small for even one full call may take the difference from the run,
  within its manual cap (``top_up``).
* When it ends, its allowance is settled to what it spent (``settlement``): the rest goes back
  to the run, so later nodes share it.
"""

from __future__ import annotations

import math

from engine.run.allocation import Allocation
from engine.run.budget import Grant

#: An empty reservation: what a node that reserved nothing (yet) holds.
NO_GRANT = Grant(0, 0, 0.0)


class PendingShares:
    """The nodes not started yet, with their summed weight, kept up to date incrementally.

    ``share`` is called once per node start; without manual caps among the pending nodes it is
    one division (a 2000-node plan must not pay a pass over every node per start); with them the
    allocation's water-filling gives capped nodes' excess to the others.
    """

    def __init__(self, allocation: Allocation):
        self.allocation = allocation
        nodes = allocation.nodes
        self.pending = set(nodes)
        self.pending_weight = sum(a.weight for a in nodes.values())
        self.token_capped = {n for n, a in nodes.items() if a.token_cap is not None}
        self.cost_capped = {n for n, a in nodes.items() if a.cost_cap_usd is not None}

    def leave(self, node_id: str) -> None:
        """``node_id`` started (or will never run): it no longer takes part in the sharing."""
        if node_id in self.pending:
            self.pending.discard(node_id)
            self.pending_weight -= self.allocation.nodes[node_id].weight
            self.token_capped.discard(node_id)
            self.cost_capped.discard(node_id)

    def start(
        self, node_id: str, available_tokens: int, available_cost: float | None
    ) -> tuple[int, float | None]:
        """The node leaves the pending set and gets its allowance: ``(tokens, dollars)``.

        ``available_*`` is what the run has left now (``None`` dollars: the run has no money
        cap, and the node may spend up to its own manual dollar cap, or without limit if None).
        """
        self.leave(node_id)
        return self.allowance(node_id, available_tokens, available_cost)

    def allowance(
        self, node_id: str, available_tokens: int, available_cost: float | None
    ) -> tuple[int, float | None]:
        """``node_id``'s share of what is available, among itself and the pending nodes."""
        mine = self.allocation.nodes[node_id]
        tokens = self.token_share(node_id, available_tokens)
        if available_cost is None:
            return tokens, mine.cost_cap_usd
        return tokens, self.cost_share(node_id, available_cost)

    def token_share(self, node_id: str, available: int) -> int:
        if self.token_capped:
            return self.allocation.node_token_cap(node_id, int(available), self.pending)
        # Other nodes share what is not held back for the root (``Allocation.spendable``),
        # among themselves.
        allocation = self.allocation
        amount = allocation.spendable(node_id, available)
        if amount <= 0:
            return 0
        holding = allocation.root_reserve_tokens > 0 and node_id != allocation.root_id
        root_weight = 0.0
        if holding and allocation.root_id in self.pending:
            root_weight = allocation.nodes[str(allocation.root_id)].weight
        weight = allocation.nodes[node_id].weight
        others = max(0.0, self.pending_weight - root_weight)
        share = min(math.floor(amount * weight / (weight + others)), amount)
        cap = self.allocation.nodes[node_id].token_cap
        return min(share, cap) if cap is not None else share

    def cost_share(self, node_id: str, available: float) -> float:
        if self.cost_capped:
            return self.allocation.node_cost_cap(node_id, available, self.pending)
        if available <= 0:
            return 0.0
        share = self._proportional(node_id, available)
        cap = self.allocation.nodes[node_id].cost_cap_usd
        return min(share, cap) if cap is not None else share

    def _proportional(self, node_id: str, available: float) -> float:
        weight = self.allocation.nodes[node_id].weight
        return available * weight / (weight + max(0.0, self.pending_weight))


def top_up(allowance: int, need: int, manual_cap: int | None) -> int:
    """Tokens a node whose allowance cannot pay for one full call (``need``: its prompt estimate
    plus its output limit) may take from the run on top, within its manual cap; 0 if none."""
    if allowance < need and (manual_cap is None or allowance < manual_cap):
        return need - allowance if manual_cap is None else min(need, manual_cap) - allowance
    return 0


def limited_by_node(allowance: int, manual_cap: int | None) -> bool:
    """Whether running out of ``allowance`` is the node's own cap (not the run's) speaking."""
    return manual_cap is not None and allowance >= manual_cap


def settlement(block: Grant | None, extra: Grant | None) -> Grant:
    """Everything a node had reserved from the run: its allowance and any top-up."""
    block = block or NO_GRANT
    extra = extra or NO_GRANT
    return Grant(block.tokens + extra.tokens, 0, block.cost_usd + extra.cost_usd)


def deadline(start: float, wall_time_s: float | None) -> float | None:
    """When the run's time cap passes, on the clock ``start`` was read from; None: no cap."""
    return start + wall_time_s if wall_time_s is not None else None


def past_deadline(now: float, when: float | None) -> bool:
    return when is not None and now > when


def time_cap_reason(elapsed_s: float, wall_time_s: float | None) -> str:
    return f"time cap reached: {elapsed_s:.1f} s of {wall_time_s:g} s allowed"


def token_cap_reason(
    used: int,
    total_tokens: int,
    cost_used: float,
    total_cost_usd: float | None,
    node_id: str,
    title: str,
) -> str:
    """Why the run stopped when a node could not get enough of what was left."""
    money = ""
    if total_cost_usd is not None:
        money = f" and ${cost_used:.4f} of ${total_cost_usd:g}"
    return (
        f"token cap reached: {used} of {total_tokens} tokens used"
        f"{money}, not enough left for node {node_id!r} ({title})"
    )


__all__ = [
    "NO_GRANT",
    "PendingShares",
    "deadline",
    "limited_by_node",
    "past_deadline",
    "settlement",
    "time_cap_reason",
    "token_cap_reason",
    "top_up",
]
