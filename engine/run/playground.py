"""The playground's pure part: one node's prompt from recorded upstream outputs, and variants of
it (messages, model, generation settings, strategy) run one after another.

A variant is run through the same single-call executor (``NodeCalls``) and strategies as a plan
run, so a best-of-N or self-refine variant makes the calls the node would make, each recorded as
a ``CallRecord`` with tokens, latency and cost. Nothing here reads the trace store: the upstream
outputs are given (``app.services.playground`` takes them from a recorded run), so the nodes
upstream are never run again. The call cache is not consulted: a playground variant always calls
its model (that is what the analyst asked for).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CallCancelled, user_message
from engine.language import detect_language
from engine.models.base import Backend, ChatMessage
from engine.output_check import check_output, suspect_reason
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.compute_config import StrategyConfig
from engine.prompts import (
    MAX_UPSTREAM_CHARS,
    PromptStyle,
    base_prompt_stops,
    merge_stops,
    node_messages,
    prompt_style,
)
from engine.run.budget import Meter
from engine.run.node_calls import Caller, CallRecord, NodeCalls
from engine.run.strategies import strategy_for

#: A variant may spend at most this many tokens (prompt and output, all its calls together).
VARIANT_TOKEN_LIMIT = 200_000
#: The most variants one playground run compares.
MAX_VARIANTS = 8


@dataclass
class Variant:
    """One way to run the node: what the analyst changed, all in one place.

    ``messages`` (when set) are sent as they are: a prompt edited by hand. Otherwise the prompt
    is rendered from ``instruction`` (None: the node's own) with the recorded upstream outputs.
    ``generation`` is the node's settings with the variant's changes (temperature, max tokens,
    seed, prompt style); ``strategy`` how the node's answer is produced.
    """

    model: ModelRef
    generation: GenerationConfig
    strategy: StrategyConfig
    instruction: str | None = None
    messages: list[ChatMessage] | None = None

    def describe(self) -> str:
        """One line: model, temperature, output limit, seed, strategy, what was edited."""
        gen = self.generation
        parts = [self.model.label, f"temperature {gen.temperature:g}", f"max {gen.max_tokens}"]
        if gen.seed is not None:
            parts.append(f"seed {gen.seed}")
        parts.append(self.strategy.label)
        if self.messages is not None:
            parts.append("prompt edited")
        elif self.instruction is not None:
            parts.append("instruction edited")
        return " · ".join(part for part in parts if part)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings, for the trace store's ``detail``."""
        return {
            "model": self.model.model_dump(exclude_none=True),
            "generation": self.generation.model_dump(),
            "strategy": self.strategy.model_dump(exclude_none=True),
            "instruction": self.instruction,
            "messages_edited": self.messages is not None,
        }


@dataclass
class VariantResult:
    """What one variant gave: its output, every call it made and their totals."""

    index: int
    variant: Variant
    messages: list[ChatMessage]
    output: str = ""
    records: list[CallRecord] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    #: Why the output does not look like an answer (an echo, a loop, cut off), or None.
    suspect: str | None = None
    cancelled: bool = False

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.records)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.records)

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.records)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.index + 1,
            "settings": self.variant.describe(),
            "output": self.output,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": round(self.seconds, 3),
            "cost_usd": self.cost_usd,
            "calls": len(self.records),
            "error": self.error,
            "suspect": self.suspect,
        }


def resolved_style(variant: Variant, declared_kind: str = "auto") -> PromptStyle:
    """The style the variant's prompt is written in (``auto`` asks the model's kind)."""
    return prompt_style(variant.model, variant.generation, declared_kind)


def variant_node(node: Node, variant: Variant) -> Node:
    """The node as the variant runs it (its instruction replaced when the variant has one)."""
    if variant.instruction is None:
        return node
    return node.model_copy(update={"instruction": variant.instruction})


def render_prompt(
    plan: Plan, node_id: str, outputs: dict[str, str], variant: Variant, declared_kind: str = "auto"
) -> list[ChatMessage]:
    """The messages the variant sends: its hand-edited ones, or the node's prompt rendered with
    its instruction and the recorded upstream ``outputs`` (node id -> output).

    A broken instruction template raises ``TemplateProblem``.
    """
    if variant.messages is not None:
        return [ChatMessage(role=m["role"], content=m["content"]) for m in variant.messages]
    node = variant_node(plan.node(node_id), variant)
    style = resolved_style(variant, declared_kind)
    return node_messages(plan, node, outputs, style=style)


def call_config(
    plan: Plan, node_id: str, variant: Variant, declared_kind: str = "auto"
) -> GenerationConfig:
    """The generation settings of the variant's calls: its style resolved, a base prompt's stop
    strings added (as a run adds them)."""
    style = resolved_style(variant, declared_kind)
    node = plan.node(node_id)
    return variant.generation.model_copy(
        update={
            "prompt_format": style,
            "stop": merge_stops(variant.generation.stop, base_prompt_stops(style, node)),
        }
    )


def upstream_of(plan: Plan, node_id: str) -> list[str]:
    """The nodes whose outputs a node's prompt quotes: its dependencies and its children."""
    node = plan.node(node_id)
    return [*node.depends_on, *(child.id for child in node.children)]


def output_problem(
    output: str,
    messages: list[ChatMessage],
    instruction: str,
    quoted: list[str],
    finish_reason: str | None = None,
    language: str | None = None,
) -> str | None:
    """Why ``output`` is not an answer to ``messages`` (None: it looks like one). Upstream
    outputs the prompt quotes (``quoted``) are taken out first, as a run's check does;
    ``language`` is the task's (None: not checked)."""
    problems = check_output(
        output,
        prompt=prompt_without(messages, quoted),
        instruction=instruction,
        finish_reason=finish_reason,
        expected_language=language,
    )
    return suspect_reason(problems)


def run_variant(
    plan: Plan,
    node_id: str,
    outputs: dict[str, str],
    variant: Variant,
    index: int,
    backend_factory: Callable[[ModelRef], Backend],
    *,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> VariantResult:
    """Run one variant of ``node_id`` with the recorded upstream ``outputs``; never raises.

    ``on_text`` hears the text streamed so far (a strategy's samples are prefixed with their
    role and number, as in a run). A failure or cancel is in the result's ``error``.
    """
    halt = cancel or threading.Event()
    result = VariantResult(index, variant, [])
    clock = time.perf_counter()
    try:
        backend = backend_factory(variant.model)
        declared = backend.declared_kind
        result.messages = render_prompt(plan, node_id, outputs, variant, declared)
        config = call_config(plan, node_id, variant, declared)
        judge = None
        selector = variant.strategy.selector
        if variant.strategy.kind == "best_of_n" and selector.kind == "judge":
            judge_ref = selector.judge_model or variant.model
            judge_backend = backend_factory(judge_ref)
            judge_style = prompt_style(judge_ref, variant.generation, judge_backend.declared_kind)
            judge = Caller(judge_backend, judge_ref, judge_style)
    except Exception as exc:  # a bad template or a model that cannot exist: this variant fails
        result.error = user_message(exc)
        return result
    calls = NodeCalls(
        Caller(backend, variant.model),
        config,
        Meter(VARIANT_TOKEN_LIMIT),
        halt=halt,
        cache=None,
        on_text=on_text,
    )
    strategy = strategy_for(variant.strategy, judge)
    node = variant_node(plan.node(node_id), variant)
    quoted = [outputs.get(upstream, "") for upstream in upstream_of(plan, node_id)]
    language = detect_language(plan.task)
    strategy.output_check = lambda output, finish: check_output(  # as a run checks samples
        output, prompt=prompt_without(result.messages, quoted), instruction=node.instruction,
        finish_reason=finish, expected_language=language,
    )  # fmt: skip
    try:
        answer = strategy.run(calls, result.messages)
        result.output = answer.output
        if answer.interrupted:
            result.cancelled, result.error = True, "cancelled"
    except CallCancelled as exc:
        result.cancelled, result.error = True, str(exc) or "cancelled"
    except Exception as exc:  # any backend failure fails this variant only
        result.error = user_message(exc)
    result.records = calls.records
    result.seconds = time.perf_counter() - clock
    if result.error is None:
        chosen = [r for r in calls.records if r.ok and (r.selected or r.output == result.output)]
        finish = chosen[-1].finish_reason if chosen else None
        result.suspect = output_problem(
            result.output, result.messages, node.instruction, quoted, finish, language
        )
    return result


def prompt_without(messages: list[ChatMessage], quoted: list[str]) -> str:
    """The prompt's text without the upstream outputs it quotes (whole, or clipped as the
    prompt clips them): what an answer must not merely copy."""
    texts = [q.strip() for q in quoted if q and q.strip()]
    texts += [q[:MAX_UPSTREAM_CHARS] for q in texts if len(q) > MAX_UPSTREAM_CHARS]
    texts = sorted(set(texts), key=len, reverse=True)
    parts = []
    for message in messages:
        content = str(message.get("content") or "")
        for text in texts:
            content = content.replace(text, " ")
        parts.append(content)
    return "\n\n".join(parts)


def varied_seeds(base: int | None, count: int) -> list[int]:
    """Distinct seeds for ``count`` otherwise equal variants (the spread of one setting)."""
    start = 1 if base is None else base
    return [start + index for index in range(count)]


def is_hand_edited(messages: list[ChatMessage], rendered: list[ChatMessage]) -> bool:
    """Whether ``messages`` differ from the rendered prompt (whitespace at the ends aside)."""
    if len(messages) != len(rendered):
        return True
    return any(
        a.get("role") != b.get("role")
        or re.sub(r"\s+$", "", a.get("content", "")) != re.sub(r"\s+$", "", b.get("content", ""))
        for a, b in zip(messages, rendered, strict=True)
    )


__all__ = [
    "MAX_VARIANTS",
    "Variant",
    "VariantResult",
    "call_config",
    "is_hand_edited",
    "output_problem",
    "prompt_without",
    "render_prompt",
    "run_variant",
    "upstream_of",
    "varied_seeds",
]
