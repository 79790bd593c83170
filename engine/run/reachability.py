"""Whether a run's caps can reach the answer, said before the run.

A run stops when a cap runs out; the answer is the root's, and the root runs last (it reads
every other node's output), so caps that look generous in the allocation table can still stop
the run one node short of the answer. This module checks the caps against the plan's structure
before anything is spent:

* **Tokens.** Every call spends its prompt and its output from the run's ``total_tokens``. A
  node's *full need* is its strategy's calls at their output limit, each with its prompt
  (estimated from the rendered prompt, with every upstream output at its own limit); its
  *floor* is one short call (prompt + ``MIN_OUTPUT_TOKENS``). The root's full need is held back
  for it (``engine.run.allocation`` reserves it), so the caps can reach the root only if the
  root's need plus every other node's floor fits; they surely do if every full need fits.
* **Time.** Seconds per call come from recorded runs of each model (``CallProfile``); the run
  takes at least its critical path, and calls to one local model queue behind each other.
* **Money.** Each model's prices, on the same calls.

``check_reachability`` is pure: the caller passes the plan, the caps, the allocation and what
it knows about each model; nothing here reads the trace store or the model registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import networkx as nx

from engine.plan import Node, Plan
from engine.plan.compute_config import StrategyConfig
from engine.run.budget import MIN_OUTPUT_TOKENS, RunCaps

if TYPE_CHECKING:
    from engine.run.allocation import Allocation

Verdict = Literal["reachable", "at_risk", "cannot_reach"]
CapName = Literal["total_tokens", "node_tokens", "wall_time_s", "total_cost_usd"]

#: Suggested caps leave this much room over the estimate (prompts vary, samples vary).
HEADROOM = 1.2
#: A time cap below this multiple of the expected duration is at risk.
TIME_RISK = 1.5
#: Tokens a judge call adds on top of the sample it reads (its own instructions and score).
JUDGE_OVERHEAD_TOKENS = 160
#: Stands in for an upstream output the prompt will quote (about 3 characters a token, as the
#: rough prompt estimate counts).
_FILLER = "result "


@dataclass(frozen=True)
class CallProfile:
    """What one model is expected to cost per call, from recorded runs and its registry entry.

    ``seconds_per_call`` and ``output_tokens_per_call`` are None when nothing was recorded.
    """

    seconds_per_call: float | None = None
    output_tokens_per_call: float | None = None
    recorded_calls: int = 0
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    #: Calls the model serves at once (a local file: 1).
    max_concurrent: int = 1


@dataclass(frozen=True)
class NodeNeed:
    """One node's expected spending."""

    node_id: str
    calls: int
    prompt_tokens: int
    max_tokens: int
    full_tokens: int
    """All the strategy's calls at their output limit, each with its prompt."""
    floor_tokens: int
    """One short call: the prompt plus ``MIN_OUTPUT_TOKENS``."""
    seconds: float | None
    full_cost_usd: float
    floor_cost_usd: float


@dataclass(frozen=True)
class Finding:
    """One cap's verdict with a one-line reason and the least cap that would do."""

    cap: CapName
    verdict: Verdict
    reason: str
    suggested: float | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class Reachability:
    verdict: Verdict
    findings: list[Finding]
    root_id: str
    root_tokens: int
    """The root's full need: the share the allocation holds back for it."""
    needed_tokens: int
    """Every node's full need."""
    floor_tokens: int
    """The root's full need plus one short call of every other node."""
    expected_seconds: float | None
    needs: dict[str, NodeNeed] = field(default_factory=dict)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict != "reachable"]

    def headline(self) -> str:
        """One sentence for a banner; the reasons follow it."""
        if self.verdict == "reachable":
            return "These caps can reach the answer."
        if self.verdict == "cannot_reach":
            return "These caps cannot reach the answer."
        return "These caps may not reach the answer."

    def suggested_caps(self, caps: RunCaps) -> RunCaps:
        """``caps`` with every cap a finding names raised to its suggestion (within bounds)."""
        update: dict[str, object] = {}
        for finding in self.problems:
            if finding.suggested is None or finding.cap == "node_tokens":
                continue
            if finding.cap == "total_tokens":
                update["total_tokens"] = min(
                    200_000, max(caps.total_tokens, int(finding.suggested))
                )
            elif finding.cap == "wall_time_s":
                update["wall_time_s"] = min(86_400.0, float(finding.suggested))
            elif finding.cap == "total_cost_usd":
                update["total_cost_usd"] = min(10_000.0, float(finding.suggested))
        return caps.model_copy(update=update)


def nice_ceiling(value: float, step: int = 100) -> int:
    """``value`` rounded up to a multiple of ``step`` (a cap a person would type)."""
    return int(math.ceil(max(value, 0) / step) * step)


def prompt_tokens(plan: Plan, node: Node, upstream_tokens: Mapping[str, int]) -> int:
    """The node's rendered prompt, with each upstream output at ``upstream_tokens`` (about 3
    characters a token), counted as the run's rough estimate counts it.

    A prompt that cannot be rendered (a broken template) is estimated from its texts: the run
    will fail that node anyway, with its own message.
    """
    from engine.prompts import node_messages
    from engine.run.node_calls import rough_prompt_estimate

    upstream = [*node.depends_on, *(child.id for child in node.children)]
    outputs = {
        node_id: (_FILLER * (1 + 3 * upstream_tokens.get(node_id, 0) // len(_FILLER)))[
            : 3 * upstream_tokens.get(node_id, 0)
        ]
        for node_id in upstream
    }
    try:
        return rough_prompt_estimate(node_messages(plan, node, outputs))
    except Exception:
        text = f"{plan.task}\n{node.title}\n{node.instruction}"
        return len(text) // 3 + sum(upstream_tokens.get(n, 0) for n in upstream) + 64


def node_full_tokens(strategy: StrategyConfig, limit: int, prompt: int) -> int:
    """All the node's calls at their output limit ``limit``, each with its ``prompt``.

    Self-refine's critique and revise calls also read the answer; a judge reads each sample.
    """
    if strategy.kind == "self_refine":
        first = prompt + limit
        return first + 2 * strategy.refine_rounds * (prompt + 2 * limit)
    total = strategy.most_calls * (prompt + limit)
    if strategy.kind == "best_of_n" and strategy.selector.kind == "judge":
        total += strategy.samples * (limit + JUDGE_OVERHEAD_TOKENS)
    return total


def root_full_tokens(plan: Plan, allocation: Allocation) -> int:
    """The root's full need, with every child's output at its limit (what ``allocate``
    reserves for the root)."""
    root = plan.root
    limits = {node_id: item.max_tokens for node_id, item in allocation.nodes.items()}
    item = allocation.nodes[root.id]
    return node_full_tokens(item.strategy, item.max_tokens, prompt_tokens(plan, root, limits))


def check_reachability(
    plan: Plan,
    caps: RunCaps,
    allocation: Allocation,
    profiles: Mapping[str, CallProfile] | None = None,
) -> Reachability:
    """Whether ``caps`` can reach ``plan``'s root, per cap, with the least caps that would.

    ``profiles`` maps a model's label (``ModelRef.label``, as traces name it) to what is known
    about it; a model without one has no time estimate and no prices.
    """
    profiles = profiles or {}
    nodes = plan.nodes()
    root_id = plan.root.id
    limits = {node_id: item.max_tokens for node_id, item in allocation.nodes.items()}
    needs: dict[str, NodeNeed] = {}
    for node_id, item in allocation.nodes.items():
        profile = profiles.get(item.model.label) or CallProfile()
        prompt = prompt_tokens(plan, nodes[node_id], limits)
        full = node_full_tokens(item.strategy, item.max_tokens, prompt)
        calls = item.strategy.most_calls
        seconds = None
        if profile.seconds_per_call is not None:
            seconds = calls * profile.seconds_per_call
        output_cost = item.max_tokens * profile.price_out_per_m
        full_cost = calls * (prompt * profile.price_in_per_m + output_cost) / 1e6
        floor_cost = (
            prompt * profile.price_in_per_m + MIN_OUTPUT_TOKENS * profile.price_out_per_m
        ) / 1e6
        needs[node_id] = NodeNeed(
            node_id=node_id,
            calls=calls,
            prompt_tokens=prompt,
            max_tokens=item.max_tokens,
            full_tokens=full,
            floor_tokens=prompt + MIN_OUTPUT_TOKENS,
            seconds=seconds,
            full_cost_usd=full_cost,
            floor_cost_usd=floor_cost,
        )
    root = needs[root_id]
    others = [need for node_id, need in needs.items() if node_id != root_id]
    needed = sum(need.full_tokens for need in needs.values())
    floor = root.full_tokens + sum(need.floor_tokens for need in others)
    findings: list[Finding | None] = [_token_finding(caps, root, others, needed, floor)]
    findings += _node_cap_findings(allocation, needs)
    expected = _expected_seconds(plan, caps, allocation, needs, profiles)
    findings.append(_time_finding(caps, expected, allocation, profiles))
    findings.append(_money_finding(caps, needs, root_id))
    found = [f for f in findings if f is not None]
    verdicts = {f.verdict for f in found}
    verdict: Verdict = (
        "cannot_reach"
        if "cannot_reach" in verdicts
        else "at_risk"
        if "at_risk" in verdicts
        else "reachable"
    )
    return Reachability(
        verdict=verdict,
        findings=found,
        root_id=root_id,
        root_tokens=root.full_tokens,
        needed_tokens=needed,
        floor_tokens=floor,
        expected_seconds=expected,
        needs=needs,
    )


def _token_finding(
    caps: RunCaps, root: NodeNeed, others: list[NodeNeed], needed: int, floor: int
) -> Finding:
    total = caps.total_tokens
    suggested = nice_ceiling(needed * HEADROOM)
    count = len(others)
    shape = f"the answer (root {root.node_id!r}) needs about {root.full_tokens:,} tokens" + (
        f" and the {count} other node{'s' if count != 1 else ''} at least "
        f"{floor - root.full_tokens:,} more"
        if count
        else ""
    )
    if total < floor:
        return Finding(
            "total_tokens",
            "cannot_reach",
            f"{shape}; {total:,} tokens allowed. Raise total tokens to at least {suggested:,}.",
            suggested,
        )
    if total < needed:
        return Finding(
            "total_tokens",
            "at_risk",
            f"every node at its output limit needs about {needed:,} tokens; with {total:,} some "
            f"outputs will be cut short or the run may stop. Raise total tokens to {suggested:,}.",
            suggested,
        )
    return Finding(
        "total_tokens",
        "reachable",
        f"about {needed:,} tokens needed at most; {total:,} allowed.",
    )


def _node_cap_findings(allocation: Allocation, needs: Mapping[str, NodeNeed]) -> list[Finding]:
    findings = []
    for node_id, item in allocation.nodes.items():
        need = needs[node_id]
        if item.token_cap is not None and item.token_cap < need.floor_tokens:
            findings.append(
                Finding(
                    "node_tokens",
                    "cannot_reach",
                    f"node {node_id!r} has its own cap of {item.token_cap:,} tokens, less than "
                    f"one call (about {need.floor_tokens:,}); raise it to "
                    f"{nice_ceiling(need.full_tokens, 50):,} or remove it.",
                    nice_ceiling(need.full_tokens, 50),
                    node_id,
                )
            )
    return findings


def _expected_seconds(
    plan: Plan,
    caps: RunCaps,
    allocation: Allocation,
    needs: Mapping[str, NodeNeed],
    profiles: Mapping[str, CallProfile],
) -> float | None:
    """The run's expected duration: its critical path, or the longest queue of calls to one
    model (a local file serves one call at a time), whichever is longer; None if a model on
    the way has no recorded calls."""
    seconds = {node_id: need.seconds for node_id, need in needs.items()}
    if any(value is None for value in seconds.values()):
        return None
    graph = plan.validate_graph()
    longest: dict[str, float] = {}
    for node_id in nx.topological_sort(graph):
        before = [longest[p] for p in graph.predecessors(node_id) if p in longest]
        longest[node_id] = max(before, default=0.0) + float(seconds[node_id] or 0.0)
    critical = max(longest.values(), default=0.0)
    queues: dict[str, float] = {}
    for node_id, item in allocation.nodes.items():
        label = item.model.label
        queues[label] = queues.get(label, 0.0) + float(seconds[node_id] or 0.0)
    busiest = 0.0
    for label, queued in queues.items():
        profile = profiles.get(label) or CallProfile()
        lanes = max(1, min(profile.max_concurrent, caps.max_parallel))
        busiest = max(busiest, queued / lanes)
    return max(critical, busiest)


def _time_finding(
    caps: RunCaps,
    expected: float | None,
    allocation: Allocation,
    profiles: Mapping[str, CallProfile],
) -> Finding | None:
    if caps.wall_time_s is None:
        return None
    if expected is None:
        unknown = sorted(
            {
                item.model.label
                for item in allocation.nodes.values()
                if (profiles.get(item.model.label) or CallProfile()).seconds_per_call is None
            }
        )
        return Finding(
            "wall_time_s",
            "reachable",
            f"time cap not checked: no recorded calls of {', '.join(unknown)} yet.",
        )
    suggested = float(nice_ceiling(expected * TIME_RISK, 10))
    wall = caps.wall_time_s
    if wall < expected:
        return Finding(
            "wall_time_s",
            "cannot_reach",
            f"recorded runs of these models suggest about {expected:,.0f} s to the answer; "
            f"the time cap is {wall:g} s. Raise it to at least {suggested:g} s.",
            suggested,
        )
    if wall < expected * TIME_RISK:
        return Finding(
            "wall_time_s",
            "at_risk",
            f"about {expected:,.0f} s expected to the answer; a {wall:g} s time cap leaves "
            f"little room. Raise it to {suggested:g} s.",
            suggested,
        )
    return Finding(
        "wall_time_s", "reachable", f"about {expected:,.0f} s expected; {wall:g} s allowed."
    )


def _money_finding(caps: RunCaps, needs: Mapping[str, NodeNeed], root_id: str) -> Finding | None:
    if caps.total_cost_usd is None:
        return None
    full = sum(need.full_cost_usd for need in needs.values())
    if full <= 0:
        return Finding("total_cost_usd", "reachable", "these models cost nothing per call.")
    floor = needs[root_id].full_cost_usd + sum(
        need.floor_cost_usd for node_id, need in needs.items() if node_id != root_id
    )
    suggested = math.ceil(full * HEADROOM * 100) / 100
    money = caps.total_cost_usd
    if money < floor:
        return Finding(
            "total_cost_usd",
            "cannot_reach",
            f"the calls to the answer cost at least ${floor:.4f}; the money cap is "
            f"${money:g}. Raise it to at least ${suggested:.2f}.",
            suggested,
        )
    if money < full:
        return Finding(
            "total_cost_usd",
            "at_risk",
            f"every call at its limit costs about ${full:.4f}; the money cap is ${money:g}. "
            f"Raise it to ${suggested:.2f}.",
            suggested,
        )
    return Finding("total_cost_usd", "reachable", f"about ${full:.4f} at most; ${money:g} allowed.")


__all__ = [
    "CallProfile",
    "Finding",
    "NodeNeed",
    "Reachability",
    "Verdict",
    "check_reachability",
    "nice_ceiling",
    "node_full_tokens",
    "prompt_tokens",
    "root_full_tokens",
]
