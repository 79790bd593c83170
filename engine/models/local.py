"""Local GGUF models through llama-cpp-python: a memory-bounded cache, one lock per model.

A loaded model costs memory and about a second to load, so each GGUF file is loaded once per
process and kept in a cache bounded in bytes (``set_memory_limit``; default from
``ARBOR_MODEL_MEMORY_MB``, else half the machine's RAM). When a load would cross the bound, the
least recently used models that no call is using are unloaded first; a model a call holds is
never unloaded (the load waits for it instead). Each model has one lock and every call holds
it: one ``llama_context`` must never be used by two threads.

A model is loaded with the smallest context that fits (a power of two, at least
``MIN_CONTEXT``) and reloaded bigger when a request needs more, up to the context it was
trained on; beyond that the call fails and says the numbers.

Generation runs on llama.cpp's low-level batch API (``engine.models.batch_decode``): tokens
stream to ``on_token``, ``cancel`` is checked between tokens, and ``complete_samples`` decodes a
node's N samples as one batch over a prompt decoded once. A loaded model keeps up to
``KEPT_CONTEXTS`` more contexts holding other prompts already read (``kept_prompts``), counted
in its memory estimate.

Over 500 lines: the memory-bounded model cache and the backend that takes models from it share
one lock discipline and are read together.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelCallFailed, ModelUnavailable
from engine.models.base import (
    RAW_PROMPT_FORMATS,
    Backend,
    ChatMessage,
    Completion,
    TokenCallback,
    Usage,
)
from engine.models.gguf import GGUF_MAGIC, detect_chat_format, read_gguf_info
from engine.plan import GenerationConfig

#: Smallest context a model is loaded with; most calls fit, so most models load once.
MIN_CONTEXT = 2048
#: Sequences one batched decode holds (the context is built for this many). More samples
#: than this run in groups.
MAX_SEQUENCES = 8
#: Contexts a loaded model keeps besides its own, each holding another prompt already read
#: (``engine.models.kept_prompts``): a few-shot plan's draft, check and final prompts each keep
#: their worked examples. Fewer where the memory limit has no room for them.
KEPT_CONTEXTS = 3
#: Share of physical memory the model cache may use when ``ARBOR_MODEL_MEMORY_MB`` is unset;
#: the rest is left to the UI, DuckDB and the operating system.
DEFAULT_MEMORY_FRACTION = 0.5
#: How long a load waits for busy models to finish before giving up on making room.
ROOM_WAIT_S = 600.0
#: llama.cpp's scratch (compute) buffers and the ``Llama`` object's own arrays, beyond weights,
#: KV cache and logits. Calibrated on the bundled model: the estimate is 349 MB at n_ctx 2048
#: where the process grew 380 MB on first load (Python imports included), and 457 MB at 8192
#: where it grew 411 MB (KV pages not yet written are not resident).
COMPUTE_OVERHEAD_BYTES = 64 * 1024 * 1024
_MB = 1024 * 1024


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


# -- memory estimate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The sizes from a GGUF header that decide how much memory a loaded model takes."""

    file_size: int
    n_ctx_train: int | None
    #: Bytes of KV cache per token of context (all layers, K and V, f16).
    kv_bytes_per_token: int
    n_vocab: int


def read_model_shape(path: Path) -> ModelShape:
    """Sizes from ``path``'s header, without loading it; zeros where the header is unreadable.

    The estimate must exist *before* loading, because that is when room is made.
    """
    file_size = path.stat().st_size
    try:
        info = read_gguf_info(path)
    except ModelUnavailable:  # llama.cpp will say what is wrong when it tries to load
        return ModelShape(file_size, None, 0, 0)
    meta = info.metadata
    arch = info.architecture or ""

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values (e.g. head_count_kv): take the largest
            value = max((v for v in value if isinstance(v, int)), default=None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    layers = info.layer_count or 0
    heads = number("attention.head_count") or 0
    heads_kv = number("attention.head_count_kv") or heads
    head_dim = (info.embedding_length or 0) // heads if heads else 0
    key_length = number("attention.key_length") or head_dim
    value_length = number("attention.value_length") or head_dim
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if isinstance(tokens, list) else 0
    if isinstance(tokens, str) and (match := re.search(r"(\d+)", tokens)):
        n_vocab = int(match.group(1))  # long arrays are summarised as "<array of N>"
    return ModelShape(
        file_size=file_size,
        n_ctx_train=info.context_length,
        kv_bytes_per_token=layers * heads_kv * (key_length + value_length) * 2,
        n_vocab=n_vocab,
    )


def estimate_context_bytes(shape: ModelShape, n_ctx: int) -> int:
    """Memory one ``llama_context`` of ``n_ctx`` tokens takes: KV cache + logits + scratch."""
    kv = shape.kv_bytes_per_token * n_ctx
    logits = shape.n_vocab * 4 * MAX_SEQUENCES
    if shape.kv_bytes_per_token == 0:  # unreadable header: assume a quarter more than the file
        kv = shape.file_size // 4
    return kv + logits + COMPUTE_OVERHEAD_BYTES


def kept_contexts_for(shape: ModelShape, n_ctx: int) -> int:
    """Contexts a model keeps besides its own: ``KEPT_CONTEXTS`` where one costs at most half
    the weights, else none (a long context on a big model is better spent elsewhere)."""
    return KEPT_CONTEXTS if 2 * estimate_context_bytes(shape, n_ctx) <= shape.file_size else 0


def estimate_model_bytes(shape: ModelShape, n_ctx: int, kept_contexts: int | None = None) -> int:
    """Memory a model loaded with ``n_ctx`` takes: weights + its contexts.

    Estimated from the header rather than measured as RSS: RSS is per process, not per model,
    it is only known after loading (too late to make room), and mmapped weights count only
    once touched. The weights are the file (mmapped, all touched by the first decode); each
    context holds an f16 K and V cache for every layer and position, one row of ``n_vocab``
    logits per sequence, and llama.cpp's scratch (``COMPUTE_OVERHEAD_BYTES``). A model has its
    own context plus ``kept_contexts`` (default: ``kept_contexts_for``); the estimate came to
    110 MB per context for the bundled model at 2,048 tokens, where each extra one grew the
    process by 62-65 MB.
    """
    if kept_contexts is None:
        kept_contexts = kept_contexts_for(shape, n_ctx)
    return shape.file_size + (1 + kept_contexts) * estimate_context_bytes(shape, n_ctx)


def fitted_context(needed: int, n_ctx_train: int) -> int:
    """The smallest power of two >= ``needed`` (at least ``MIN_CONTEXT``), capped at training."""
    n_ctx = MIN_CONTEXT
    while n_ctx < needed:
        n_ctx *= 2
    return min(n_ctx, n_ctx_train)


# -- the cache -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModelInfo:
    """One loaded model, as the UI and tests see it."""

    path: str
    n_ctx: int
    estimated_bytes: int
    #: Wall-clock time (``time.time()``) a call last released it.
    last_used: float
    #: A call holds it or waits for it; it will not be unloaded now.
    busy: bool


class _LoadedModel:
    """One GGUF file's slot in the cache; ``llama`` is None until loaded and after unloading."""

    def __init__(self, key: str):
        self.key = key
        #: Held by every call that uses ``llama``. Nobody blocks on it while holding
        #: ``_cache_lock`` (eviction only tries it), so the two locks cannot deadlock.
        self.lock = threading.Lock()
        self.llama: Any = None
        self.n_ctx = 0
        self.n_ctx_train = 0
        self.shape: ModelShape | None = None
        #: Counted against the memory limit; reserved before loading, zero when unloaded.
        self.estimated_bytes = 0
        #: Calls holding or waiting for ``lock``; such a model is never unloaded.
        self.pins = 0
        self.last_used = time.monotonic()
        self.last_used_wall = time.time()


_cache: dict[str, _LoadedModel] = {}
_cache_lock = threading.Lock()
#: Signalled whenever a model is released or unloaded: a load waiting for room retries.
_room = threading.Condition(_cache_lock)
_memory_limit: int | None = None


def _default_memory_limit() -> int:
    raw = os.environ.get("ARBOR_MODEL_MEMORY_MB", "").strip()
    if raw:
        try:
            return int(float(raw) * _MB)
        except ValueError:
            raise ModelUnavailable(
                f"ARBOR_MODEL_MEMORY_MB must be a number of megabytes, not {raw!r}."
            ) from None
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(physical * DEFAULT_MEMORY_FRACTION)


def memory_limit() -> int:
    """Bytes the loaded local models may take together."""
    return _memory_limit if _memory_limit is not None else _default_memory_limit()


def set_memory_limit(limit_bytes: int | None) -> None:
    """Bound the loaded models' memory (None: back to the default); unloads idle models now."""
    global _memory_limit
    with _room:
        _memory_limit = limit_bytes
        limit = memory_limit()
        while sum(e.estimated_bytes for e in _cache.values()) > limit:
            if not _evict_one(exclude=None):
                break  # the rest are busy; they are unloaded when room is needed and they idle
        _room.notify_all()


def loaded_models() -> list[LoadedModelInfo]:
    """Models in memory now, most recently used first."""
    with _cache_lock:
        entries = [e for e in _cache.values() if e.llama is not None]
        entries.sort(key=lambda e: e.last_used, reverse=True)
        return [
            LoadedModelInfo(e.key, e.n_ctx, e.estimated_bytes, e.last_used_wall, e.pins > 0)
            for e in entries
        ]


def unload_all() -> None:
    """Unload every model, waiting for calls in progress to finish."""
    with _cache_lock:
        entries = list(_cache.values())
        for entry in entries:
            entry.pins += 1
    for entry in entries:
        with entry.lock:
            _close(entry)
        with _room:  # a load waiting for room (and holding a lock we need next) may go on
            _room.notify_all()
    with _room:
        for entry in entries:
            entry.pins -= 1
            if entry.pins == 0 and _cache.get(entry.key) is entry:
                del _cache[entry.key]
        _room.notify_all()


def _close(entry: _LoadedModel) -> None:
    """Free ``entry``'s model; the caller holds ``entry.lock`` or knows no one can."""
    llama, entry.llama = entry.llama, None
    entry.n_ctx = 0
    if llama is not None:
        _free(llama)
    entry.estimated_bytes = 0


def _free(llama: Any) -> None:
    """Free a loaded ``Llama`` and the contexts it keeps besides its own."""
    from engine.models import batch_decode  # loaded with the model

    batch_decode.close_kept_contexts(llama)
    llama.close()


def _evict_one(exclude: _LoadedModel | None) -> bool:
    """Unload the least recently used idle model; False when every loaded one is busy.

    Caller holds ``_cache_lock``. ``pins == 0`` means no thread holds or waits for the
    model's lock; the non-blocking acquire also covers a concurrent ``unload_all``.
    """
    idle = [e for e in _cache.values() if e is not exclude and e.llama is not None and e.pins == 0]
    for victim in sorted(idle, key=lambda e: e.last_used):
        if victim.lock.acquire(blocking=False):
            try:
                _close(victim)
            finally:
                victim.lock.release()
            del _cache[victim.key]
            return True
    return False


def _make_room(entry: _LoadedModel, needed: int, name: str) -> None:
    """Reserve ``needed`` bytes for ``entry`` (whose lock the caller holds), evicting LRU first."""
    with _room:
        limit = memory_limit()
        if needed > limit:
            raise ModelUnavailable(
                f"{name} needs about {needed / _MB:,.0f} MB (weights, KV cache and buffers), "
                f"more than the local model memory limit of {limit / _MB:,.0f} MB. Raise "
                "ARBOR_MODEL_MEMORY_MB, or use a smaller model or shorter prompts."
            )
        deadline = time.monotonic() + ROOM_WAIT_S
        while sum(e.estimated_bytes for e in _cache.values() if e is not entry) + needed > limit:
            if _evict_one(exclude=entry):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                busy = ", ".join(Path(e.key).name for e in _cache.values() if e.pins and e.llama)
                raise ModelUnavailable(
                    f"No room to load {name} ({needed / _MB:,.0f} MB) within the "
                    f"{limit / _MB:,.0f} MB local model memory limit: busy models ({busy}) "
                    f"did not finish within {ROOM_WAIT_S:.0f} s."
                )
            _room.wait(remaining)
        entry.estimated_bytes = needed


def _load(entry: _LoadedModel, path: Path, n_ctx: int) -> None:
    """(Re)load ``entry`` with ``n_ctx`` tokens of context; the caller holds ``entry.lock``."""
    if entry.shape is None:
        check_gguf_file(path)
        entry.shape = read_model_shape(path)
    if entry.shape.n_ctx_train:
        n_ctx = min(n_ctx, entry.shape.n_ctx_train)
    kept = kept_contexts_for(entry.shape, n_ctx)
    while kept and estimate_model_bytes(entry.shape, n_ctx, kept) > memory_limit():
        kept -= 1  # kept prompts are a cache: the model loads without them rather than not
    needed = estimate_model_bytes(entry.shape, n_ctx, kept)
    _make_room(entry, needed, f"{path.name} (n_ctx {n_ctx})")
    old, entry.llama = entry.llama, None  # the smaller context goes before the bigger arrives
    if old is not None:
        _free(old)
    from llama_cpp import Llama  # heavy import, deferred to first use

    from engine.models import batch_decode

    threads = os.cpu_count() or 1
    try:
        llama = Llama(
            model_path=entry.key,
            n_ctx=n_ctx,
            n_threads=threads,  # the default (half the cores) halves generation speed here
            n_threads_batch=threads,
            verbose=False,
        )
        batch_decode.enable_parallel_sequences(llama, MAX_SEQUENCES, kept)
    except (ValueError, RuntimeError) as exc:
        with _room:
            entry.estimated_bytes = 0
            _room.notify_all()
        raise ModelUnavailable(f"llama.cpp could not load {path}: {exc}") from exc
    chat_format = detect_chat_format(llama.metadata)
    if chat_format is not None:
        llama.chat_format = chat_format
    entry.llama = llama
    entry.n_ctx = llama.n_ctx()
    entry.n_ctx_train = llama._model.n_ctx_train() or entry.n_ctx


@contextlib.contextmanager
def _using(path: Path) -> Iterator[_LoadedModel]:
    """Hold ``path``'s model (loaded, locked, pinned) for the duration of one call."""
    key = str(path.resolve())
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = _LoadedModel(key)
        entry.pins += 1
        entry.last_used = time.monotonic()
    try:
        with entry.lock:
            if entry.llama is None:
                _load(entry, path, MIN_CONTEXT)
            yield entry
    finally:
        with _room:
            entry.pins -= 1
            entry.last_used = time.monotonic()
            entry.last_used_wall = time.time()
            if entry.llama is None and entry.pins == 0 and _cache.get(key) is entry:
                del _cache[key]  # a failed load leaves nothing behind
            _room.notify_all()


def _ensure_context(entry: _LoadedModel, path: Path, needed: int, what: str) -> None:
    """Reload ``entry`` with a bigger context if ``needed`` tokens do not fit in the current one."""
    if needed > entry.n_ctx_train:
        raise ModelCallFailed(
            f"{path.name}: the request needs {needed:,} tokens of context ({what}), but the "
            f"model was trained on {entry.n_ctx_train:,}. Shorten the prompt or lower max_tokens."
        )
    if needed > entry.n_ctx:
        _load(entry, path, fitted_context(needed, entry.n_ctx_train))


# -- prompts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPrompt:
    """A chat request as llama-cpp-python would run it: tokens, stop strings, grammar."""

    tokens: list[int]
    stop: list[str]
    #: GBNF text for a JSON schema, None without one.
    grammar: str | None


class _Rendered(Exception):
    def __init__(self, tokens: list[int], stop: Any, grammar: Any):
        super().__init__("prompt rendered")
        self.tokens, self.stop, self.grammar = tokens, stop, grammar


class _RenderOnly:
    """Stands in for a ``Llama`` in a chat handler and stops it where it would generate.

    llama-cpp-python's handlers render the chat format (or the file's Jinja template), tokenize,
    add the format's stop strings and build the JSON-schema grammar, then call
    ``create_completion``. Intercepting that call gives exactly what ``create_chat_completion``
    would run, for every format, without copying any of it.
    """

    def __init__(self, llama: Any):
        self._llama = llama

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, prompt: Any, stop: Any = None, grammar: Any = None, **_: Any):
        raise _Rendered(list(prompt), stop, grammar)


def render_prompt(
    llama: Any,
    messages: Sequence[ChatMessage],
    stop: Sequence[str] = (),
    json_schema: dict[str, Any] | None = None,
    *,
    raw: bool = False,
) -> RenderedPrompt:
    """Tokens, stop strings and grammar ``llama.create_chat_completion`` would use.

    ``raw`` (a completion prompt, for base models) skips the chat format: the messages' text is
    the prompt as it stands, as ``llama.create_completion`` would read it.
    """
    from llama_cpp import llama_chat_format

    if raw:
        text = "\n\n".join(message["content"] for message in messages)
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return RenderedPrompt(list(tokens), [s for s in stop if s], None)

    # Typed loosely on purpose: the handler gets a _RenderOnly stand-in, not a Llama, and our
    # plain messages and response format dicts rather than llama_cpp's TypedDicts.
    handler: Callable[..., Any] = (
        llama.chat_handler
        or llama._chat_handlers.get(llama.chat_format)
        or llama_chat_format.get_chat_completion_handler(llama.chat_format)
    )
    response_format = None
    if json_schema is not None:
        response_format = {"type": "json_object", "schema": json_schema}
    try:
        handler(
            llama=_RenderOnly(llama),
            messages=list(messages),
            stop=list(stop),
            response_format=response_format,
        )
    except _Rendered as rendered:
        stops = rendered.stop or []
        stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
        grammar = getattr(rendered.grammar, "_grammar", None)
        return RenderedPrompt(rendered.tokens, stops, grammar)
    except Exception as exc:  # a template error, a schema the grammar builder refuses
        raise ModelCallFailed(f"Could not render the prompt: {exc}") from exc
    raise ModelCallFailed(
        f"Chat format {llama.chat_format!r} does not render a plain prompt; Arbor cannot run it."
    )


# -- the backend ---------------------------------------------------------------------------------


class LocalBackend(Backend):
    """A GGUF file run in-process. Instances are cheap; the loaded model is shared and locked."""

    max_concurrent = 1
    samples_per_prompt = MAX_SEQUENCES

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.label = self.path.name

    @property
    def resource_key(self) -> str:
        """One slot per file, whatever label a plan gives it."""
        return f"local:{self.path.resolve()}"

    def _model(self) -> _LoadedModel:
        """The cache slot, loaded (for checks and tests; calls go through ``_using``)."""
        with _using(self.path) as entry:
            return entry

    def check(self) -> str:
        self._model()
        return self.label

    def count_tokens(self, text: str) -> int:
        with _using(self.path) as entry:
            return len(entry.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        from engine.models import batch_decode

        with _using(self.path) as entry:
            started = time.perf_counter()
            raw = config.prompt_format in RAW_PROMPT_FORMATS and json_schema is None
            prompt = render_prompt(entry.llama, messages, config.stop, json_schema, raw=raw)
            n_prompt = len(prompt.tokens)
            _ensure_context(
                entry,
                self.path,
                n_prompt + config.max_tokens,
                f"{n_prompt:,} prompt + {config.max_tokens:,} max_tokens",
            )
            params = batch_decode.SampleParams(config.temperature, config.top_p, config.seed)
            (output,) = batch_decode.decode(
                entry.llama,
                prompt.tokens,
                [params],
                max_tokens=config.max_tokens,
                stop=prompt.stop,
                grammar=prompt.grammar,
                cancel=cancel,
                on_text=on_token,
            )
            latency = time.perf_counter() - started
        return Completion(
            text=output.text,
            usage=Usage(n_prompt, output.completion_tokens),
            latency_s=latency,
            model=self.label,
            finish_reason=output.finish_reason,
        )

    def complete_samples(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        seeds: list[int | None],
        *,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        """One completion per seed, decoded together: the prompt is processed once.

        Up to ``MAX_SEQUENCES`` samples share one batched decode (more run in groups; a group
        that does not fit the trained context is made smaller). Usage: the first sample of
        each group carries the prompt's input tokens and the others 0, because the prompt
        really was processed once per group; every sample carries its own output tokens.
        ``latency_s`` is the wall time of the whole call, the same on every sample, since the
        samples were generated together. ``cancel`` stops all of them; ``CallCancelled``
        carries the first sample's partial text.
        """
        from engine.models import batch_decode

        if not seeds:
            return []
        with _using(self.path) as entry:
            started = time.perf_counter()
            prompt = render_prompt(
                entry.llama, messages, config.stop, raw=config.prompt_format in RAW_PROMPT_FORMATS
            )
            n_prompt, max_tokens = len(prompt.tokens), config.max_tokens
            room = entry.n_ctx_train - n_prompt
            group = max(1, min(len(seeds), MAX_SEQUENCES, room // max_tokens))
            _ensure_context(
                entry,
                self.path,
                n_prompt + group * max_tokens,
                f"{n_prompt:,} prompt + {group} samples x {max_tokens:,} max_tokens",
            )
            outputs: list[tuple[int, batch_decode.SequenceOutput]] = []
            for start in range(0, len(seeds), group):
                chunk = seeds[start : start + group]
                params = [
                    batch_decode.SampleParams(config.temperature, config.top_p, seed)
                    for seed in chunk
                ]
                decoded = batch_decode.decode(
                    entry.llama,
                    prompt.tokens,
                    params,
                    max_tokens=max_tokens,
                    stop=prompt.stop,
                    cancel=cancel,
                )
                outputs.extend((n_prompt if i == 0 else 0, out) for i, out in enumerate(decoded))
            latency = time.perf_counter() - started
        return [
            Completion(
                text=out.text,
                usage=Usage(input_tokens, out.completion_tokens),
                latency_s=latency,
                model=self.label,
                finish_reason=out.finish_reason,
            )
            for input_tokens, out in outputs
        ]
