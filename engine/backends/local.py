"""Local GGUF models through llama-cpp-python.

A loaded ``Llama`` is not thread-safe, so each one lives in the process-wide cache with its own
lock; every call holds that lock. Loading is lazy (first call) because it costs memory and time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from engine.backends.base import Backend, ChatMessage, Completion, Usage
from engine.errors import ModelCallFailed, ModelUnavailable
from engine.plan import GenerationConfig

GGUF_MAGIC = b"GGUF"
DEFAULT_CONTEXT = 8192

# Architectures whose GGUF often ships without a chat template, mapped to llama-cpp-python's
# built-in formats. Without this, llama-cpp-python falls back to llama-2 and output degrades.
CHAT_FORMAT_BY_ARCHITECTURE = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "phi3": "chatml",
    "llama": "llama-3",
    "mistral": "mistral-instruct",
}


class _LoadedModel:
    def __init__(self, llama: Any):
        self.llama = llama
        self.lock = threading.Lock()


_cache: dict[str, _LoadedModel] = {}
_cache_lock = threading.Lock()


def detect_chat_format(metadata: dict[str, str]) -> str | None:
    """None when the file carries its own template (llama-cpp-python then uses it)."""
    if metadata.get("tokenizer.chat_template"):
        return None
    return CHAT_FORMAT_BY_ARCHITECTURE.get(metadata.get("general.architecture", ""), "chatml")


def check_gguf_file(path: Path) -> None:
    """Refuse a missing or non-GGUF file with a message that names it."""
    if not path.exists():
        raise ModelUnavailable(
            f"Model file not found: {path}. Check the path, or use the bundled model."
        )
    if not path.is_file():
        raise ModelUnavailable(f"Model path is not a file: {path}.")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelUnavailable(f"{path} is not a GGUF model file (wrong magic bytes).")


def _load(path: Path) -> _LoadedModel:
    key = str(path.resolve())
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is not None:
            return loaded
        check_gguf_file(path)
        from llama_cpp import Llama  # heavy import, deferred to first use

        try:
            llama = Llama(
                model_path=key,
                n_ctx=DEFAULT_CONTEXT,
                n_threads=os.cpu_count() or 1,
                n_threads_batch=os.cpu_count() or 1,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailable(f"llama.cpp could not load {path}: {exc}") from exc
        chat_format = detect_chat_format(llama.metadata)
        if chat_format is not None:
            llama.chat_format = chat_format
        loaded = _cache[key] = _LoadedModel(llama)
        return loaded


class LocalBackend(Backend):
    """A GGUF file run in-process. Instances are cheap; the loaded model is shared and locked."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.label = self.path.name

    def _model(self) -> _LoadedModel:
        return _load(self.path)

    def check(self) -> str:
        self._model()
        return self.label

    def count_tokens(self, text: str) -> int:
        model = self._model()
        with model.lock:
            return len(model.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        model = self._model()
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        with model.lock:
            started = time.perf_counter()
            try:
                result = model.llama.create_chat_completion(**kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise ModelCallFailed(f"{self.label}: {exc}") from exc
            latency = time.perf_counter() - started
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            latency_s=latency,
            model=self.label,
            finish_reason=choice.get("finish_reason"),
        )
