"""One node of a run: prepared by the coordinator, then run on a worker thread.

``NodeRunner.prepare`` renders the node's prompt from its upstream outputs, resolves its backend
(and a best-of-N judge's) and, for a single-call node, the key its call is looked up by in the
call cache. ``NodeRunner.run`` calls the node's strategy through a ``NodeCalls`` that spends from
the node's allowance (``engine.run.allowances``) and returns an ``Outcome``; it never raises,
since the coordinator waits for every outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine.errors import CallCancelled, user_message
from engine.language import detect_language
from engine.models import Backend, BackendFactory, ChatMessage
from engine.output_check import OutputProblem, check_output, suspect_reason
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.prompts import (
    MAX_UPSTREAM_CHARS,
    base_prompt_stops,
    merge_stops,
    node_messages,
    prompt_style,
)
from engine.run.allocation import Allocation, NodeAllocation
from engine.run.allowances import limited_by_node, top_up
from engine.run.budget import Grant, Meter
from engine.run.call_cache import CachedCall, CallCache, call_cache_key
from engine.run.node_calls import (
    Caller,
    CallRecord,
    NodeBudgetExhausted,
    NodeCalls,
    rough_prompt_estimate,
)
from engine.run.strategies import StrategyResult, strategy_for

CANCELLED_BY_USER = "cancelled by the user"
TIME_CAP_NODE = "stopped by the run's time cap"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Prepared:
    """A ready node with everything its calls need, computed once by the coordinator."""

    node: Node
    allocation: NodeAllocation
    ref: ModelRef | None = None
    backend: Backend | None = None
    judge: Caller | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    generation: GenerationConfig | None = None
    #: Key of a single-call node's call, looked up by the coordinator before it starts.
    cache_key: str | None = None
    #: Whether the node's calls may be replayed from recorded ones (strategy nodes look up
    #: each call themselves).
    may_reuse: bool = False
    #: Tokens and dollars set aside for the node when it started.
    block: Grant | None = None
    cost_cap_usd: float | None = None
    error: str | None = None  # preparing failed: a bad template, a backend that cannot exist


@dataclass
class Outcome:
    node_id: str
    started_at: datetime
    error: str | None
    records: list[CallRecord] = field(default_factory=list)
    result: StrategyResult | None = None
    budget_exhausted: bool = False
    cancelled: bool = False
    #: Tokens and dollars the node was allowed, and what it spent of them.
    token_cap: int | None = None
    cost_cap_usd: float | None = None
    spent_tokens: int = 0
    spent_usd: float = 0.0
    extra_block: Grant | None = None
    #: Why the node's output does not look like an answer (``engine.output_check``), if so.
    suspect: str | None = None


class NodeRunner:
    """Prepares and runs the nodes of one run; shared by the coordinator and the workers.

    ``meter`` is the run's; ``halt`` is set on a cancel or when the time cap passes (running
    calls watch it), with ``time_cap_hit`` saying which. ``warnings`` is the run's list of
    problems that did not stop it; ``partials`` each running node's latest streamed text.
    """

    def __init__(
        self,
        plan: Plan,
        allocation: Allocation,
        backend_factory: BackendFactory,
        meter: Meter,
        cache: CallCache | None,
        warnings: list[str],
        deadline: float | None = None,
    ):
        self.plan = plan
        #: The run's time-cap deadline (``time.monotonic()``); rendering a prompt counts to it.
        self.deadline = deadline
        self.nodes = plan.nodes()
        self.allocation = allocation
        self.backend_factory = backend_factory
        self.meter = meter
        self.cache = cache
        self.warnings = warnings
        self.halt = threading.Event()
        self.time_cap_hit = False
        self.partials: dict[str, list[str]] = {}
        self._backends: dict[str, Backend] = {}
        #: The run's finished nodes' outputs (the coordinator's dict, read here only for the
        #: upstream outputs of a node whose inputs are all final) and the task's language.
        self.outputs: dict[str, str] = {}
        self._task_language: tuple[str | None] | None = None

    def stop_calls(self, *, time_cap: bool) -> None:
        """Halt running calls: the user cancelled or (``time_cap``) the time cap passed."""
        if time_cap:
            self.time_cap_hit = True
        self.halt.set()

    def warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def backend(self, ref: ModelRef) -> Backend:
        key = ref.model_dump_json()
        if key not in self._backends:
            self._backends[key] = self.backend_factory(ref)
        return self._backends[key]

    # -- coordinator side ------------------------------------------------------------------
    def prepare(self, node: Node, outputs: dict[str, str]) -> Prepared:
        """Messages, backend and cache key of a node whose inputs are all final."""
        allocation = self.allocation.nodes[node.id]
        prepared = Prepared(node, allocation)
        try:
            prepared.ref = allocation.model
            prepared.backend = self.backend(prepared.ref)
            generation = self.plan.generation_for(node)
            # auto becomes chat or base by the model's kind (its registry entry may say).
            style = prompt_style(prepared.ref, generation, prepared.backend.declared_kind)
            selector = allocation.strategy.selector
            if allocation.strategy.kind == "best_of_n" and selector.kind == "judge":
                judge_ref = selector.judge_model or prepared.ref
                judge_backend = self.backend(judge_ref)
                judge_style = prompt_style(judge_ref, generation, judge_backend.declared_kind)
                prepared.judge = Caller(judge_backend, judge_ref, judge_style)
            prepared.messages = node_messages(
                self.plan, node, outputs, self.nodes, deadline=self.deadline, style=style
            )
        except Exception as exc:  # a backend bug must fail this node, not the run
            prepared.error = user_message(exc)
            return prepared
        # The resolved style and the base prompt's stops are part of the call (and its key).
        prepared.generation = generation.model_copy(
            update={
                "max_tokens": allocation.max_tokens,
                "prompt_format": style,
                "stop": merge_stops(generation.stop, base_prompt_stops(style, node)),
            }
        )
        if allocation.strategy.kind == "single":
            prepared.cache_key = call_cache_key(
                prepared.messages, prepared.ref, prepared.generation
            )
        return prepared

    def lookup(self, prepared: list[Prepared]) -> dict[str, CachedCall]:
        """Recorded calls of single-call nodes, by node id (no cache or none found: empty)."""
        if self.cache is None or not prepared:
            return {}
        # Several nodes can render the same prompt (siblings with one instruction): each of
        # them reuses the recorded call, not only the last one listed under the key.
        nodes_by_key: dict[str, list[str]] = {}
        for p in prepared:
            if p.cache_key:
                nodes_by_key.setdefault(p.cache_key, []).append(p.node.id)
        if not nodes_by_key:
            return {}
        try:
            found = self.cache.lookup(list(nodes_by_key))
        except Exception as exc:  # a cache that cannot answer means calling the model
            self.warn(f"call cache unavailable, nothing reused: {user_message(exc)}")
            return {}
        return {
            node_id: call for key, call in found.items() for node_id in nodes_by_key.get(key, ())
        }

    # -- worker side -----------------------------------------------------------------------
    def run(self, prepared: Prepared) -> Outcome:
        """The node's outcome; never raises (the coordinator waits for every outcome)."""
        try:
            outcome = self._run_strategy(prepared)
        except Exception as exc:
            return Outcome(prepared.node.id, now(), user_message(exc))
        if outcome.error is None and outcome.result is not None:
            outcome.suspect = self.suspect(prepared, outcome.result.output, outcome.records)
        return outcome

    def task_language(self) -> str | None:
        """The plan's task's language, detected once per run (None: too short or unclear)."""
        if self._task_language is None:
            self._task_language = (detect_language(self.plan.task),)
        return self._task_language[0]

    def output_check(self, prepared: Prepared) -> Callable[[str, str | None], list[OutputProblem]]:
        """The node's output check: (output, finish reason) -> problems.

        The prompt it must not copy is the node's messages without the upstream outputs
        embedded in them: a parent quoting its children, or a step quoting the step it reads,
        is not an echo. Built once per node (samples of a strategy share it).
        """
        node = prepared.node
        upstream = [*node.depends_on, *(child.id for child in node.children)]
        quoted = [self.outputs.get(node_id, "").strip() for node_id in upstream]
        quoted = [q for q in quoted if q]
        clipped = [q[:MAX_UPSTREAM_CHARS] for q in quoted if len(q) > MAX_UPSTREAM_CHARS]
        prompt_parts = []
        for message in prepared.messages:
            content = str(message.get("content") or "")
            for text in sorted({*quoted, *clipped}, key=len, reverse=True):
                content = content.replace(text, " ")
            prompt_parts.append(content)
        prompt = "\n\n".join(prompt_parts)
        instruction = node.instruction
        language = self.task_language()

        def check(output: str, finish_reason: str | None) -> list[OutputProblem]:
            return check_output(
                output,
                prompt=prompt,
                instruction=instruction,
                finish_reason=finish_reason,
                expected_language=language,
            )

        return check

    def suspect(
        self,
        prepared: Prepared,
        output: str,
        records: list[CallRecord] | None = None,
        finish_reason: str | None = None,
    ) -> str | None:
        """Why ``output`` does not look like an answer to the node's prompt, or None; the
        finish reason is the selected call's (the one that gave the output) when ``records``
        are given."""
        try:
            if records:
                chosen = [r for r in records if r.ok and r.selected]
                chosen = chosen or [r for r in records if r.ok and r.output == output]
                finish_reason = chosen[-1].finish_reason if chosen else None
            problems = self.output_check(prepared)(output, finish_reason)
        except Exception:  # a check must never fail the node (or the run) it checks
            return None
        return suspect_reason(problems)

    def _run_strategy(self, prepared: Prepared) -> Outcome:
        node, backend, generation = prepared.node, prepared.backend, prepared.generation
        assert backend is not None and generation is not None and prepared.ref is not None
        assert prepared.block is not None
        outcome = Outcome(node.id, now(), None, cost_cap_usd=prepared.cost_cap_usd)
        parts = self.partials.setdefault(node.id, [])

        def show(text: str) -> None:
            parts[:] = [text]

        block = prepared.block.tokens
        try:
            # The base class's rough count: a node whose calls are all replayed never needs
            # its model's tokenizer (which would load a local model for nothing).
            estimate = rough_prompt_estimate(prepared.messages)
        except Exception as exc:
            outcome.error = user_message(exc)
            return outcome
        # A node's share may be too small for even one full call (a parent reading long
        # outputs): it may take that much more from the run, within its manual cap.
        manual = prepared.allocation.token_cap
        extra = top_up(block, estimate + generation.max_tokens, manual)
        # ... but never from what the allocation holds back for the root.
        extra = min(extra, max(0, self.allocation.spendable(node.id, self.meter.available)))
        if extra:
            outcome.extra_block = self.meter.reserve_block(extra, 0.0)
            block += outcome.extra_block.tokens
        outcome.token_cap = block
        meter = Meter(block, prepared.cost_cap_usd)
        calls = NodeCalls(
            Caller(backend, prepared.ref),
            generation,
            meter,
            halt=self.halt,
            cache=self.cache if prepared.may_reuse and prepared.cache_key is None else None,
            on_text=show,
        )
        strategy = strategy_for(prepared.allocation.strategy, prepared.judge)
        try:
            strategy.output_check = self.output_check(prepared)
        except Exception:  # without the node's own check, samples are checked as they are
            strategy.output_check = None
        try:
            outcome.result = strategy.run(calls, prepared.messages)
        except NodeBudgetExhausted as exc:
            if limited_by_node(block, manual) or any(r.ok for r in calls.records):
                outcome.error = f"node budget of {block} tokens exhausted: {exc}"
            else:
                outcome.budget_exhausted = True
        except CallCancelled as exc:
            outcome.cancelled = True
            outcome.error = TIME_CAP_NODE if self.time_cap_hit else str(exc)
        except Exception as exc:  # any backend failure fails this node, never the whole run
            outcome.error = user_message(exc)
        outcome.records = calls.records
        outcome.spent_tokens, outcome.spent_usd = meter.used, meter.cost_used
        if calls.cache_problem:
            self.warn(calls.cache_problem)
        result = outcome.result
        if result is not None and outcome.error is None:
            if result.interrupted and not self.time_cap_hit:
                outcome.cancelled, outcome.error = True, CANCELLED_BY_USER
            elif not result.output.strip():
                outcome.error = "the model returned an empty answer"
        return outcome


__all__ = ["CANCELLED_BY_USER", "TIME_CAP_NODE", "NodeRunner", "Outcome", "Prepared", "now"]
