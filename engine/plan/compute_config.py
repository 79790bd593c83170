"""How a node spends test-time compute: its strategy, selector, budget, and the plan's policy.

These are plain typed settings saved with the plan; the UI's sliders read their bounds. What
they *do* lives elsewhere: ``engine.run.strategies`` runs a strategy around single model calls,
``engine.run.allocation`` turns a policy into per-node budgets, and the executor enforces them.
Kept free of other engine imports so ``engine.plan`` can use them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from engine.plan.model_settings import ModelRef

StrategyKind = Literal["single", "best_of_n", "self_consistency", "self_refine"]
SelectorKind = Literal["judge", "regex", "json_schema", "expression"]
VoteOn = Literal["auto", "number", "text", "first_line"]
PolicyKind = Literal["uniform", "difficulty", "fast_deliberate"]
DecaySchedule = Literal["constant", "linear", "polynomial", "exponential", "cosine"]

STRATEGY_LABELS: dict[str, str] = {
    "single": "single call",
    "best_of_n": "best-of-N",
    "self_consistency": "self-consistency vote",
    "self_refine": "self-refine",
}


class SelectorConfig(BaseModel):
    """How best-of-N picks its answer: an LLM judge, or a check the analyst writes.

    A check scores each sample 1 (passes) or 0 (fails); ties, including "none pass", go to the
    earliest sample. A judge scores each sample 0-10 on the judge model.
    """

    kind: SelectorKind = Field("judge", description="judge, regex, json_schema or expression.")
    judge_model: ModelRef | None = Field(
        None, description="Model that judges the samples; None uses the node's own model."
    )
    pattern: str | None = Field(
        None, max_length=2000, description="regex: a sample passes if the pattern is found."
    )
    json_schema: str | None = Field(
        None,
        max_length=20_000,
        description="json_schema: a sample passes if it is valid JSON for it.",
    )
    expression: str | None = Field(
        None,
        max_length=2000,
        description="expression: a small Python-like expression over output, length, number,"
        " lines; a true or positive value passes (the value is the score).",
    )

    @model_validator(mode="after")
    def _has_what_its_kind_needs(self) -> SelectorConfig:
        needed = {"regex": self.pattern, "json_schema": self.json_schema}
        needed["expression"] = self.expression
        if self.kind in needed and not (needed[self.kind] or "").strip():
            field = {"regex": "pattern", "json_schema": "json_schema"}.get(self.kind, self.kind)
            raise ValueError(f"a {self.kind} selector needs its {field!r} set")
        return self


class StrategyConfig(BaseModel):
    """A node's test-time strategy. Each wraps single calls of the node's model."""

    kind: StrategyKind = Field("single", description="How the node's answer is produced.")
    samples: int = Field(
        5,
        ge=1,
        le=32,
        description="best-of-N: samples drawn; self-consistency: most samples drawn.",
    )
    temperature: float | None = Field(
        0.8,
        ge=0.0,
        le=2.0,
        description="Sampling temperature of the samples; None keeps the node's own.",
    )
    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    vote_on: VoteOn = Field(
        "auto",
        description="self-consistency: what is compared: the last number, normalised text,"
        " the first line, or auto (a number if every sample has one, else text).",
    )
    early_stop: bool = Field(
        True, description="self-consistency: stop sampling once the vote is settled."
    )
    confidence: float = Field(
        0.95,
        ge=0.5,
        le=1.0,
        description="self-consistency: stop when the leader wins with this probability.",
    )
    min_samples: int = Field(
        3, ge=1, le=32, description="self-consistency: samples drawn before stopping early."
    )
    refine_rounds: int = Field(
        2, ge=1, le=5, description="self-refine: most critique-and-revise rounds."
    )

    @property
    def label(self) -> str:
        if self.kind in ("best_of_n", "self_consistency"):
            return f"{STRATEGY_LABELS[self.kind]} ×{self.samples}"
        if self.kind == "self_refine":
            return f"{STRATEGY_LABELS[self.kind]} ×{self.refine_rounds}"
        return STRATEGY_LABELS[self.kind]

    @property
    def most_calls(self) -> int:
        """Upper bound on model calls of the node itself (a judge's calls come on top)."""
        if self.kind in ("best_of_n", "self_consistency"):
            return self.samples
        if self.kind == "self_refine":
            return 1 + 2 * self.refine_rounds
        return 1


SINGLE_CALL = StrategyConfig(kind="single", samples=1)

_SPEC_KINDS = {"bo": "best_of_n", "sc": "self_consistency", "refine": "self_refine"}


def strategy_from_spec(spec: str) -> StrategyConfig:
    """A strategy from a short name, as the command line takes it.

    ``single``; ``boN`` best-of-N judged by the node's model; ``scN`` self-consistency with up
    to N samples (early stop on); ``refineK`` self-refine with up to K rounds.
    """
    text = spec.strip().lower()
    if text == "single":
        return SINGLE_CALL.model_copy()
    for prefix, kind in _SPEC_KINDS.items():
        number = text.removeprefix(prefix)
        if number != text and number.isdigit():
            count = int(number)
            if kind == "self_refine":
                return StrategyConfig(kind=kind, refine_rounds=count)
            return StrategyConfig(kind=kind, samples=count, min_samples=min(3, count))
    raise ValueError(
        f"unknown strategy {spec!r}: use single, boN (best-of-N), scN (self-consistency) or"
        " refineK (self-refine), e.g. sc5"
    )


class NodeBudget(BaseModel):
    """Manual caps for one node; they override whatever the allocation policy would give."""

    tokens: int | None = Field(
        None, ge=16, le=1_000_000, description="Most tokens (input + output) the node may use."
    )
    cost_usd: float | None = Field(
        None, ge=0.0, le=1000.0, description="Most dollars the node may spend."
    )


class AllocationPolicy(BaseModel):
    """How the run's budget is shared among nodes before manual overrides.

    uniform: every node the same share and the plan's default strategy. difficulty
    (Plan-and-Budget): shares and output limits by difficulty level, shaped by a decay schedule
    over the execution order. fast_deliberate (SCALE): easy nodes a cheap model and one call,
    hard nodes a stronger model and more samples.
    """

    kind: PolicyKind = Field("uniform", description="uniform, difficulty or fast_deliberate.")
    level_tokens: list[int] = Field(
        default_factory=lambda: [200, 250, 350, 450, 600],
        min_length=5,
        max_length=5,
        description="difficulty: output tokens per call for levels 1-5 (Plan-and-Budget).",
    )
    decay: DecaySchedule = Field(
        "constant", description="difficulty: how budgets shrink along the execution order."
    )
    unrated_difficulty: int = Field(
        3, ge=1, le=5, description="Difficulty assumed for nodes nobody rated."
    )
    threshold: int = Field(
        4, ge=2, le=5, description="fast_deliberate: this difficulty and above is deliberate."
    )
    fast_model: ModelRef | None = Field(
        None, description="fast_deliberate: model of easy nodes; None keeps the node's model."
    )
    deliberate_model: ModelRef | None = Field(
        None, description="fast_deliberate: model of hard nodes; None keeps the node's model."
    )
    deliberate_strategy: StrategyConfig = Field(
        default_factory=lambda: StrategyConfig(kind="self_consistency", samples=5),
        description="fast_deliberate: strategy of hard nodes (easy ones make one call).",
    )


__all__ = [
    "SINGLE_CALL",
    "STRATEGY_LABELS",
    "AllocationPolicy",
    "DecaySchedule",
    "NodeBudget",
    "PolicyKind",
    "SelectorConfig",
    "SelectorKind",
    "StrategyConfig",
    "StrategyKind",
    "VoteOn",
    "strategy_from_spec",
]
