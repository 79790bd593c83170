"""The one model interface: messages in, text plus usage and latency out.

Local GGUF files and OpenAI-compatible endpoints are two implementations; adding a backend means
adding one module here that subclasses ``Backend``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from engine.plan import GenerationConfig


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed, as the backend counted them."""

    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """What a model call returns: the text, its token usage and wall-clock latency."""

    text: str
    usage: Usage
    latency_s: float
    model: str
    finish_reason: str | None = None


#: Prompt formats whose one message is sent as raw text (no chat template): Arbor's few-shot
#: base prompts and the analyst's own completion prompts.
RAW_PROMPT_FORMATS = ("base", "completion")

#: Called with each piece of text as it is generated (streaming).
TokenCallback = Callable[[str], None]


class Backend(ABC):
    """A model that can answer chat messages. Implementations must be safe to call from threads.

    Besides answering, a backend tells the executor how calls to it may overlap
    (``resource_key`` and ``max_concurrent``) and what its tokens cost (``price_*_per_m``).
    """

    #: Human-readable model name recorded in traces.
    label: str
    #: Calls sharing a resource key share ``max_concurrent`` slots: one loaded GGUF file serves
    #: one call at a time; an endpoint serves up to its configured limit.
    max_concurrent: int = 1
    #: US dollars per million input / output tokens (0 for local models).
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    #: ``complete_samples`` reads the prompt once per this many samples (budgets reserve the
    #: prompt's tokens that often); 1 means every sample pays for its prompt.
    samples_per_prompt: int = 1
    #: The model's kind as its registry entry declares it ("auto": detect it, see
    #: ``engine.models.model_kind``); set by ``registry.apply_entry_settings``.
    declared_kind: str = "auto"

    @property
    def resource_key(self) -> str:
        return self.label

    @abstractmethod
    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Answer ``messages``; with ``json_schema`` the output must be JSON matching it.

        ``on_token`` receives text as it streams in. When ``cancel`` is set the call stops
        promptly and raises ``CallCancelled`` carrying the partial text.
        """

    def complete_samples(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        seeds: list[int | None],
        *,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        """One completion per seed for the same prompt (best-of-N, votes).

        The default makes the calls one after another; backends that can share the prompt's
        work across samples (a KV prefix, a batched decode) override it.
        """
        return [
            self.complete(messages, config.model_copy(update={"seed": seed}), cancel=cancel)
            for seed in seeds
        ]

    def cost(self, usage: Usage) -> float:
        """Dollars a call with ``usage`` costs at this backend's prices."""
        return (
            usage.input_tokens * self.price_in_per_m + usage.output_tokens * self.price_out_per_m
        ) / 1_000_000

    def count_tokens(self, text: str) -> int:
        """Estimate of tokens in ``text``; backends with a tokenizer override it."""
        return max(1, len(text) // 3)

    def check(self) -> str:
        """Cheap readiness check; raises ``ModelUnavailable`` saying what is wrong."""
        return self.label
