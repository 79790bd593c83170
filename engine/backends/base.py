"""The one model interface: messages in, text plus usage and latency out.

Local GGUF files and OpenAI-compatible endpoints are two implementations; adding a backend means
adding one module here that subclasses ``Backend``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class Backend(ABC):
    """A model that can answer chat messages. Implementations must be safe to call from threads."""

    #: Human-readable model name recorded in traces.
    label: str

    @abstractmethod
    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Answer ``messages``; with ``json_schema`` the output must be JSON matching it."""

    def count_tokens(self, text: str) -> int:
        """Estimate of tokens in ``text``; backends with a tokenizer override it."""
        return max(1, len(text) // 3)

    def check(self) -> str:
        """Cheap readiness check; raises ``ModelUnavailable`` saying what is wrong."""
        return self.label
