"""The search space: each searched node's options, and assignments (one option per node)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field, model_validator

from engine.plan import Plan
from engine.plan.compute_config import StrategyConfig
from engine.plan.model_settings import ModelRef

Assignment = dict[str, int]
"""Node id -> index into that node's options in a ``SearchSpace``."""


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
        return {node: _cheapest_index(opts) for node, opts in self.options.items()}

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


def _cheapest_index(options: Sequence[NodeOption]) -> int:
    return min(range(len(options)), key=lambda i: (options[i].relative_cost, i))


__all__ = ["Assignment", "NodeOption", "SearchSpace", "strategy_short_label"]
