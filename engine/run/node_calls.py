"""The single-call node executor that every strategy wraps.

A ``NodeCalls`` makes (or replays) the model calls of one node: each call is looked up in the
call cache when the node may reuse recorded calls, reserves its tokens and dollars from the
node's own meter before it starts, watches the run's halt event between tokens, and is kept as a
``CallRecord`` that becomes one traced ``ModelCallFinished``. Strategies only decide *which*
calls to make and what to do with the answers; budgets, caching and tracing live here once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.errors import CallCancelled, NodeBudgetExhausted, user_message
from engine.models.base import Backend, ChatMessage, Completion, Usage
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.run.budget import Grant, Meter
from engine.run.call_cache import CachedCall, CallCache, call_cache_key
from engine.run.events import ModelCallFinished

# Chat templates add a few tokens per message that plain tokenisation of the text misses.
TEMPLATE_TOKENS_PER_MESSAGE = 8


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CallRecord:
    """One call of a node, made or replayed; strategies fill in score, vote and selected."""

    role: str
    sample_index: int
    model: str
    messages: list[ChatMessage]
    output: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    status: str  # ok | error | cancelled
    error: str | None
    started_at: datetime
    finished_at: datetime
    seed: int | None = None
    cache_key: str | None = None
    cost_usd: float = 0.0
    finish_reason: str | None = None
    reused_from: str | None = None
    #: What a replayed call cost when it was made (its tokens here are 0: nothing was spent).
    replayed_tokens: int = 0
    replayed_cost_usd: float = 0.0
    score: float | None = None
    vote: str | None = None
    selected: bool | None = None
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_event(self, run_id: str, node_id: str) -> ModelCallFinished:
        return ModelCallFinished(
            run_id=run_id,
            node_id=node_id,
            call_id=self.call_id,
            model=self.model,
            prompt=json.dumps(self.messages, ensure_ascii=False),
            output=self.output,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_s=self.latency_s,
            status=self.status,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            sample_index=self.sample_index,
            seed=self.seed,
            cache_key=self.cache_key,
            cost_usd=self.cost_usd,
            finish_reason=self.finish_reason,
            role=self.role,
            score=self.score,
            vote=self.vote,
            selected=self.selected,
            reused_from=self.reused_from,
        )


@dataclass(frozen=True)
class Caller:
    """A model to call: the node's own, or a judge's."""

    backend: Backend
    ref: ModelRef
    #: How this model's judge, critique and revise prompts are written ("chat" or "base");
    #: None: as the node's own calls (``GenerationConfig.prompt_format``).
    style: str | None = None


def prompt_estimate(backend: Backend, messages: list[ChatMessage]) -> int:
    """Tokens the messages will take, template overhead included (before the call)."""
    text = "\n".join(message["content"] for message in messages)
    return backend.count_tokens(text) + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)


def rough_prompt_estimate(messages: list[ChatMessage]) -> int:
    """``prompt_estimate`` without a tokenizer (about 3 characters a token)."""
    text = "\n".join(message["content"] for message in messages)
    return max(1, len(text) // 3) + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)


def sample_seeds(base: int | None, first_index: int, count: int) -> list[int]:
    """Deterministic seeds for samples ``first_index ..``: recorded samples replay exactly.

    A node without a seed still gets fixed sample seeds, so an evaluation run twice hits the
    call cache instead of drawing new samples.
    """
    start = 4_194_304 if base is None else base
    return [start + 7919 * index for index in range(first_index, first_index + count)]


class NodeCalls:
    """Calls of one node within its meter; thread-confined to the worker running the node."""

    def __init__(
        self,
        caller: Caller,
        config: GenerationConfig,
        meter: Meter,
        *,
        halt: threading.Event,
        cache: CallCache | None = None,
        on_text: Callable[[str], None] | None = None,
    ):
        self.caller = caller
        self.config = config
        self.meter = meter
        self.halt = halt
        self.cache = cache
        self.on_text = on_text
        self.records: list[CallRecord] = []
        self.cache_problem: str | None = None

    # -- helpers ---------------------------------------------------------------------------
    def prompt_estimate(self, messages: list[ChatMessage], backend: Backend | None = None) -> int:
        return prompt_estimate(backend or self.caller.backend, messages)

    def _config(
        self,
        seed: int | None,
        temperature: float | None,
        max_tokens: int | None,
        **changes: Any,
    ) -> GenerationConfig:
        update: dict[str, Any] = {"seed": seed, **changes}
        if temperature is not None:
            update["temperature"] = temperature
        if max_tokens is not None:
            # A judge's or critic's own limit, not the node's: a node answering in 8 tokens
            # still needs room for a critique (the meter bounds what it may spend).
            update["max_tokens"] = max(1, max_tokens)
        return self.config.model_copy(update=update)

    def _lookup(self, keys: list[str]) -> dict[str, CachedCall]:
        if self.cache is None or not keys:
            return {}
        try:
            return dict(self.cache.lookup(keys))
        except Exception as exc:  # a cache that cannot answer means calling the model
            self.cache_problem = f"call cache unavailable, nothing reused: {exc}"
            return {}

    def _replayed(
        self,
        caller: Caller,
        messages: list[ChatMessage],
        config: GenerationConfig,
        hit: CachedCall,
        role: str,
        index: int,
    ) -> CallRecord:
        now = _now()
        usage = Usage(hit.input_tokens, hit.output_tokens)
        record = CallRecord(
            role=role,
            sample_index=index,
            model=caller.backend.label,
            messages=messages,
            output=hit.output,
            input_tokens=0,
            output_tokens=0,
            latency_s=0.0,
            status="ok",
            error=None,
            started_at=now,
            finished_at=now,
            seed=config.seed,
            # No key: a later lookup must find the call that was really made, with its usage.
            cache_key=None,
            finish_reason=hit.finish_reason,
            reused_from=hit.run_id,
            replayed_tokens=usage.total,
            replayed_cost_usd=caller.backend.cost(usage),
        )
        self.records.append(record)
        return record

    def _reserve(self, caller: Caller, prompt_tokens: int, wanted: int) -> Grant | None:
        backend = caller.backend
        return self.meter.reserve(
            prompt_tokens,
            wanted,
            price_in_per_m=backend.price_in_per_m,
            price_out_per_m=backend.price_out_per_m,
        )

    def _finished(
        self,
        caller: Caller,
        messages: list[ChatMessage],
        config: GenerationConfig,
        key: str | None,
        grant: Grant,
        completion: Completion,
        role: str,
        index: int,
        started: datetime,
        *,
        full_grant: bool = True,
    ) -> CallRecord:
        cost = caller.backend.cost(completion.usage)
        self.meter.settle_grant(grant, completion.usage.total, cost)
        # Only a call made with the parameters its key names, that gave text, is reusable; a
        # call granted less than its output limit that stopped on its own before that grant ran
        # out gave what the full limit would have given, so it is reusable too (a run stopped
        # on a cap continues from it).
        stopped_early = (
            completion.finish_reason == "stop"
            and completion.usage.output_tokens < config.max_tokens
        )
        reusable = bool(completion.text.strip()) and (full_grant or stopped_early)
        record = CallRecord(
            role=role,
            sample_index=index,
            model=completion.model,
            messages=messages,
            output=completion.text,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            latency_s=completion.latency_s,
            status="ok",
            error=None,
            started_at=started,
            finished_at=_now(),
            seed=config.seed,
            cache_key=key if reusable else None,
            cost_usd=cost,
            finish_reason=completion.finish_reason,
        )
        self.records.append(record)
        return record

    def _failed(
        self,
        caller: Caller,
        messages: list[ChatMessage],
        config: GenerationConfig,
        role: str,
        index: int,
        started: datetime,
        clock: float,
        status: str,
        error: str,
        partial: str = "",
    ) -> CallRecord:
        record = CallRecord(
            role=role,
            sample_index=index,
            model=caller.backend.label,
            messages=messages,
            output=partial,
            input_tokens=0,
            output_tokens=0,
            latency_s=time.perf_counter() - clock,
            status=status,
            error=error,
            started_at=started,
            finished_at=_now(),
            seed=config.seed,
        )
        self.records.append(record)
        return record

    # -- calls -----------------------------------------------------------------------------
    def call(
        self,
        messages: list[ChatMessage],
        *,
        role: str = "answer",
        sample_index: int = 0,
        seed: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        caller: Caller | None = None,
        keep_seed: bool = False,
        prompt_format: str | None = None,
        stop: list[str] | None = None,
    ) -> CallRecord:
        """Make (or replay) one call and return its record.

        Raises ``NodeBudgetExhausted`` when the meter cannot grant the minimum output,
        ``CallCancelled`` when the run halts, and whatever the backend raises on failure
        (the failed call is recorded first). ``keep_seed`` keeps the node's own seed.
        ``prompt_format`` and ``stop`` replace the node's (a judge's or critic's own prompt).
        """
        caller = caller or self.caller
        changes: dict[str, Any] = {}
        if prompt_format is not None:
            changes["prompt_format"] = prompt_format
        if stop is not None:
            changes["stop"] = stop
        config = self._config(
            self.config.seed if keep_seed else seed, temperature, max_tokens, **changes
        )
        key = call_cache_key(messages, caller.ref, config, sample_index, json_schema)
        hit = self._lookup([key]).get(key)
        if hit is not None:
            return self._replayed(caller, messages, config, hit, role, sample_index)
        estimate = self.prompt_estimate(messages, caller.backend)
        grant = self._reserve(caller, estimate, config.max_tokens)
        if grant is None:
            raise NodeBudgetExhausted(
                f"no room for a {role} call: about {estimate} prompt tokens plus at least 16"
                f" output tokens; {self.meter.available} tokens left"
            )
        full_grant = grant.output_tokens >= config.max_tokens
        if not full_grant:
            config = config.model_copy(update={"max_tokens": grant.output_tokens})
        started, clock = _now(), time.perf_counter()
        label = f"[{role} {sample_index + 1}] " if role != "answer" else ""
        streamed: list[str] = []

        def on_token(piece: str) -> None:
            streamed.append(piece)
            if self.on_text is not None:
                self.on_text(label + "".join(streamed))

        try:
            completion = caller.backend.complete(
                messages, config, json_schema=json_schema, on_token=on_token, cancel=self.halt
            )
        except BaseException as exc:
            self.meter.settle_grant(grant, 0, 0.0)
            if isinstance(exc, CallCancelled):
                partial = exc.partial or "".join(streamed)
                self._failed(
                    caller, messages, config, role, sample_index, started, clock,
                    "cancelled", str(exc), partial,
                )  # fmt: skip
            elif isinstance(exc, Exception):
                self._failed(
                    caller, messages, config, role, sample_index, started, clock,
                    "error", user_message(exc),
                )  # fmt: skip
            raise
        return self._finished(
            caller, messages, config, key, grant, completion, role, sample_index, started,
            full_grant=full_grant,
        )  # fmt: skip

    def samples(
        self,
        messages: list[ChatMessage],
        count: int,
        *,
        first_index: int = 0,
        temperature: float | None = None,
        role: str = "sample",
    ) -> list[CallRecord]:
        """Up to ``count`` samples of the same prompt, decoded together where the backend can.

        Recorded samples are replayed; the rest reserve their budget one by one and as many
        as the meter allows are drawn (fewer than asked near a cap; ``NodeBudgetExhausted``
        if not even one fits). Raises ``CallCancelled`` if the run halts mid-batch.
        """
        caller = self.caller
        seeds = sample_seeds(self.config.seed, first_index, count)
        configs = [self._config(seed, temperature, None) for seed in seeds]
        keys = [
            call_cache_key(messages, caller.ref, config, first_index + i, None)
            for i, config in enumerate(configs)
        ]
        hits = self._lookup(keys)
        drawn: list[CallRecord | None] = [None] * count
        missing: list[int] = []
        for i, key in enumerate(keys):
            if key in hits:
                drawn[i] = self._replayed(
                    caller, messages, configs[i], hits[key], role, first_index + i
                )
            else:
                missing.append(i)
        if missing:
            self._draw(messages, missing, configs, keys, drawn, role, first_index)
        return [record for record in drawn if record is not None]

    def _draw(
        self,
        messages: list[ChatMessage],
        missing: list[int],
        configs: list[GenerationConfig],
        keys: list[str],
        drawn: list[CallRecord | None],
        role: str,
        first_index: int,
    ) -> None:
        caller = self.caller
        backend = caller.backend
        estimate = self.prompt_estimate(messages)
        wanted = configs[0].max_tokens
        grants: list[Grant] = []
        for position in range(len(missing)):
            pays_prompt = position % max(1, backend.samples_per_prompt) == 0
            grant = self._reserve(caller, estimate if pays_prompt else 0, wanted)
            if grant is None or grant.output_tokens < wanted:
                if grant is not None:
                    self.meter.settle_grant(grant, 0, 0.0)
                break
            grants.append(grant)
        if not grants:
            if any(record is not None for record in drawn):
                return
            raise NodeBudgetExhausted(
                f"no room for a sample: about {estimate} prompt tokens plus {wanted} output"
                f" tokens; {self.meter.available} tokens left"
            )
        chosen = missing[: len(grants)]
        started, clock = _now(), time.perf_counter()
        if self.on_text is not None:
            self.on_text(f"[drawing {len(chosen)} {role}s together]")
        try:
            completions = backend.complete_samples(
                messages, configs[chosen[0]], [configs[i].seed for i in chosen], cancel=self.halt
            )
        except BaseException as exc:
            for grant in grants:
                self.meter.settle_grant(grant, 0, 0.0)
            if isinstance(exc, Exception):
                status = "cancelled" if isinstance(exc, CallCancelled) else "error"
                partial = exc.partial if isinstance(exc, CallCancelled) else ""
                self._failed(
                    caller, messages, configs[chosen[0]], role, first_index + chosen[0],
                    started, clock, status, user_message(exc), partial,
                )  # fmt: skip
            raise
        for i, grant, completion in zip(chosen, grants, completions, strict=True):
            drawn[i] = self._finished(
                caller, messages, configs[i], keys[i], grant, completion, role,
                first_index + i, started,
            )  # fmt: skip


__all__ = [
    "TEMPLATE_TOKENS_PER_MESSAGE",
    "CallRecord",
    "Caller",
    "NodeBudgetExhausted",
    "NodeCalls",
    "prompt_estimate",
    "rough_prompt_estimate",
    "sample_seeds",
]
