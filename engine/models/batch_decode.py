"""Token generation on llama.cpp's low-level API: one prompt, N sequences decoded as one batch.

llama-cpp-python's high-level ``Llama`` runs one sequence at a time, so best-of-N through it pays
N decode passes per generated position (and, without a warm KV cache, the prompt N times). Here
the prompt is decoded once into sequence 0, its KV cells are shared with sequences 1..N-1
(``llama_memory_seq_cp`` on a unified KV cache adds sequence ids to the same cells, no copy),
and every step decodes one token of each live sequence in a single ``llama_decode``. Each
sequence has its own sampler chain (own seed), stop strings, end-of-generation check and token
cap. On a 2-core machine that is about 42 / 71 / 96 / 116 tokens/s in aggregate for
N = 1 / 2 / 4 / 8; ``bench/best_of_n.py`` measures best-of-8 end to end.

N = 1 is the single-call path too: ``LocalBackend.complete`` uses it for streaming and for
cancellation between tokens, and the prompt is decoded in small chunks so that a cancel lands
within a fraction of a second even during a long prompt.

The sampler chain matches ``Llama.create_chat_completion``'s defaults (top-k 40, top-p, min-p
0.05, temperature, then a seeded draw; greedy at temperature 0), so without a grammar one
sequence here produces the same text as llama-cpp-python for the same prompt and seed.

A grammar (JSON schema) is checked lazily by default, the way llama.cpp's own
``common_sampler_sample`` does it: the chain picks a token from the unconstrained logits, the
grammar checks only that token, and only when it refuses is the step sampled again with the
grammar applied to every candidate first. Applying the grammar to all of Gemma 3's 262k
candidates costs several times a decode step on this machine, and most steps' first pick is
already valid: on the planner's calls 1.7% of steps needed the resample, and generation went from
about 7 to about 29 tokens/s (``bench/grammar_speed.py``; a prompt whose model wants another JSON
layout than the grammar's resamples more and gains less, x1.6 at 58%). The price is a
slightly different distribution at temperature > 0 (a valid first pick is kept as drawn from the
unconstrained top-k/top-p set; llama.cpp accepts the same); greedy output is unchanged, since
the most likely token is the most likely valid one whenever it is valid. ``grammar_check="full"``
keeps the old order (grammar first, as llama-cpp-python's ``create_chat_completion`` does).

Callers must hold the model's lock: a ``llama_context`` is not thread-safe.

Just over 500 lines: one decoding loop and the sampler it needs; splitting the sampler out would
scatter the grammar and cancel handling.
"""

from __future__ import annotations

import codecs
import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
import llama_cpp._internals as llama_internals
import numpy as np

from engine.errors import CallCancelled, ModelCallFailed
from engine.models import kept_prompts

#: Prompt tokens per ``llama_decode`` while prefilling. About 0.3 s of work here (prompt
#: processing runs near 400 tokens/s), which bounds how late a cancel can land.
PREFILL_CHUNK = 128
#: llama-cpp-python's defaults for ``create_chat_completion``; kept so outputs match it.
TOP_K = 40
MIN_P = 0.05

FinishReason = Literal["stop", "length"]
#: "lazy": sample, then check the one token against the grammar, resample only if refused.
#: "full": apply the grammar to every candidate before sampling (llama-cpp-python's order).
GrammarCheck = Literal["full", "lazy"]
#: The check ``decode`` uses when its caller names none; a module flag so a benchmark or a
#: suspicious user can switch every local call back to the full check at once.
GRAMMAR_CHECK: GrammarCheck = "lazy"


@dataclass(frozen=True)
class SampleParams:
    """How one sequence picks its tokens."""

    temperature: float
    top_p: float
    #: None draws a fresh random seed (llama.cpp's ``LLAMA_DEFAULT_SEED``).
    seed: int | None


@dataclass(frozen=True)
class SequenceOutput:
    """One finished sequence: its text (stop string cut off), token count and why it ended."""

    text: str
    #: Generated tokens counted the way llama-cpp-python counts them: the end-of-generation
    #: token is not counted, the token that completed a stop string is.
    completion_tokens: int
    finish_reason: FinishReason
    #: Tokens sampled under a grammar (end-of-generation token included), in either check mode.
    grammar_steps: int = 0
    #: Of those, steps whose first pick the grammar refused, so all candidates were filtered and
    #: sampled again (lazy check only; the full check filters every step and counts none).
    grammar_resamples: int = 0


def enable_parallel_sequences(llama: Any, n_seq_max: int, kept_contexts: int = 0) -> None:
    """Give ``llama`` a context that can hold ``n_seq_max`` sequences in one unified KV cache,
    and up to ``kept_contexts`` more contexts like it that keep other prompts (``kept_prompts``).

    ``Llama`` creates its context with one sequence and no way to ask for more (only
    embedding mode sets ``n_seq_max``), so the context is rebuilt with the same parameters
    plus ``n_seq_max`` and ``kv_unified``. Unified means the sequences share the ``n_ctx``
    cells, so a shared prompt is stored once; it does not slow single-sequence decoding.
    """
    params = llama.context_params
    if params.n_seq_max < n_seq_max or not params.kv_unified:
        params.n_seq_max = n_seq_max
        params.kv_unified = True
        old = llama._ctx
        # Build the new one first: if llama.cpp refuses, the model keeps its working context.
        llama._ctx = llama_internals.LlamaContext(model=llama._model, params=params, verbose=False)
        old.close()
        llama.n_tokens = 0
        llama._requires_eval = True
    close_kept_contexts(llama)
    llama._arbor_kept = kept_prompts.KeptPrompts(
        kept_contexts,
        lambda: llama_internals.LlamaContext(model=llama._model, params=params, verbose=False),
    )


def close_kept_contexts(llama: Any) -> None:
    """Free ``llama``'s kept contexts (before ``llama.close()``)."""
    kept = getattr(llama, "_arbor_kept", None)
    if kept is not None:
        kept.close()


def max_sequences(llama: Any) -> int:
    """How many sequences one batch may decode in ``llama``'s context."""
    return int(llama.context_params.n_seq_max)


class _Batch:
    """A ``llama_batch`` owned by Python: filled token by token, freed on ``close``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.raw.n_tokens = 0

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token; returns its index in the batch (where its logits will be)."""
        index = self.raw.n_tokens
        raw = self.raw
        raw.token[index] = token
        raw.pos[index] = pos
        raw.n_seq_id[index] = 1
        raw.seq_id[index][0] = seq_id
        raw.logits[index] = logits
        raw.n_tokens = index + 1
        return index

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.raw)


def _grammar_sampler(vocab: Any, grammar: str) -> Any:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise ModelCallFailed("llama.cpp refused the grammar built from the JSON schema.")
    return sampler


def _sampler_chain(vocab: Any, params: SampleParams, grammar: str | None) -> Any:
    """The chain ``Llama._init_sampler`` builds for these settings (no-op stages left out).

    With ``grammar`` the grammar is the chain's first stage (the full check); the lazy check
    keeps its grammar sampler apart from the chain (see ``_Picker``).
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if grammar is not None:
        try:
            grammar_sampler = _grammar_sampler(vocab, grammar)
        except ModelCallFailed:
            llama_cpp.llama_sampler_free(chain)
            raise
        llama_cpp.llama_sampler_chain_add(chain, grammar_sampler)
    if params.temperature <= 0.0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    for stage in (
        llama_cpp.llama_sampler_init_top_k(TOP_K),
        llama_cpp.llama_sampler_init_top_p(params.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
        llama_cpp.llama_sampler_init_temp(params.temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, stage)
    return chain


#: One ``llama_token_data`` as numpy sees it, so the candidates can be filled without a loop.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
_NEG_INF = float("-inf")


class _Candidates:
    """A reusable ``llama_token_data_array`` over the whole vocabulary, filled from logits.

    ``llama_sampler_sample`` builds this array inside llama.cpp and accepts the token it picks
    into every stage; the lazy check needs to apply samplers without accepting, so it builds the
    array here: one numpy buffer per ``decode`` call, refilled per use (samplers reorder it in
    place), about half a millisecond for 262k tokens. Sequences sample one after another, so
    they share it.
    """

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab
        self.buffer = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.pointer = self.buffer.ctypes.data_as(llama_cpp.llama_token_data_p)
        self.array = llama_cpp.llama_token_data_array(self.pointer, n_vocab, -1, False)

    def load(self, ctx: Any, index: int) -> Any:
        """The array holding the logits of batch output ``index``; a pointer for ``apply``."""
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        if not logits:
            raise ModelCallFailed(f"llama.cpp has no logits for batch output {index}.")
        self.buffer["id"] = self.ids
        self.buffer["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        self.buffer["p"] = 0.0
        # A sampler may point ``data`` elsewhere and shrink ``size``: start from ours each time.
        array = self.array
        # llama_cpp annotates ``data`` as an array; ctypes stores the pointer we pass.
        array.data = self.pointer  # type: ignore[assignment]
        array.size, array.selected, array.sorted = self.n_vocab, -1, False
        return ctypes.byref(array)

    def selected(self) -> int:
        array = self.array
        if not 0 <= array.selected < array.size:
            raise ModelCallFailed("The sampler chain selected no token.")
        return int(array.data[array.selected].id)


class _Picker:
    """Picks one sequence's tokens: its sampler chain, and its grammar when checked lazily.

    Lazy check, per step, as llama.cpp's ``common_sampler_sample``: apply the chain (without
    the grammar) to all candidates; apply the grammar to a one-token array holding the pick;
    if the grammar set its logit to -inf, reload the candidates, apply the grammar to all of
    them and then the chain again. Then accept the final token into the grammar and the chain.
    The chain's draw stage advances its random state on each apply, so a resampled step uses
    one extra draw; the sequence stays a pure function of the seed. A token is only accepted
    into the grammar after the grammar allowed it: accepting a refused token aborts llama.cpp.
    """

    def __init__(
        self,
        vocab: Any,
        params: SampleParams,
        grammar: str | None,
        check: GrammarCheck,
        candidates: _Candidates | None,
    ):
        lazy = grammar is not None and check == "lazy"
        self.chain = _sampler_chain(vocab, params, None if lazy else grammar)
        self.grammar: Any = None
        self.candidates = candidates
        self.constrained = grammar is not None
        self.steps = 0
        self.resamples = 0
        if lazy and grammar is not None:
            try:
                self.grammar = _grammar_sampler(vocab, grammar)
            except ModelCallFailed:
                llama_cpp.llama_sampler_free(self.chain)
                raise
            self.one = llama_cpp.llama_token_data(0, 0.0, 0.0)
            self.one_pointer = ctypes.pointer(self.one)
            self.one_array = llama_cpp.llama_token_data_array(self.one_pointer, 1, -1, False)

    def pick(self, ctx: Any, index: int) -> int:
        """Sample batch output ``index``'s next token and accept it into every stage."""
        if self.constrained:
            self.steps += 1
        if self.grammar is None:
            return llama_cpp.llama_sampler_sample(self.chain, ctx, index)
        candidates = self.candidates
        assert candidates is not None
        llama_cpp.llama_sampler_apply(self.chain, candidates.load(ctx, index))
        token = candidates.selected()
        if not self._grammar_allows(token):
            self.resamples += 1
            everything = candidates.load(ctx, index)
            llama_cpp.llama_sampler_apply(self.grammar, everything)
            llama_cpp.llama_sampler_apply(self.chain, everything)
            token = candidates.selected()
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def _grammar_allows(self, token: int) -> bool:
        one, array = self.one, self.one_array
        # llama_cpp annotates ``id`` as c_int32 and ``data`` as an array; ctypes fields take an
        # int and the pointer we pass.
        one.id = token  # type: ignore[assignment]
        one.logit, one.p = 1.0, 0.0
        array.data = self.one_pointer  # type: ignore[assignment]
        array.size, array.selected, array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return one.logit != _NEG_INF

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)


class _Sequence:
    """Text bookkeeping of one sequence: UTF-8 assembly, stop strings, streaming hold-back."""

    def __init__(self, stop: Sequence[str], on_text: Callable[[str], None] | None):
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.stop = [s for s in stop if s]
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.on_text = on_text
        self.text = ""
        self.emitted = 0
        self.tokens = 0
        self.finish: FinishReason | None = None

    def add_piece(self, piece: bytes) -> None:
        """Append a token's bytes; ends the sequence when a stop string appears."""
        self.tokens += 1
        before = len(self.text)
        self.text += self.decoder.decode(piece)
        if self.stop and len(self.text) > before:
            # Only the tail can hold a stop string that was not there before.
            start = max(0, before - self.longest_stop + 1)
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish = "stop"
        self._emit(final=self.finish is not None)

    def finish_text(self) -> None:
        """Stream whatever was held back, now that nothing more can arrive."""
        if self.finish != "stop":
            self.text += self.decoder.decode(b"", final=True)
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        if self.on_text is None:
            return
        end = len(self.text)
        if not final:
            # Hold back a tail that could still grow into a stop string.
            for stop in self.stop:
                for k in range(len(stop) - 1, 0, -1):
                    if self.text.endswith(stop[:k]):
                        end = min(end, len(self.text) - k)
                        break
        if end > self.emitted:
            piece = self.text[self.emitted : end]
            self.emitted = end
            self.on_text(piece)


def _piece(vocab: Any, token: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes:
    n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if n < 0:  # buffer too small: llama.cpp says how much it needs
        buffer = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:n]


def _decode(ctx: Any, batch: _Batch) -> None:
    code = llama_cpp.llama_decode(ctx, batch.raw)
    if code != 0:
        # 1: no KV slot for the batch (context too small); <0: llama.cpp error.
        raise ModelCallFailed(
            f"llama_decode failed with code {code} (batch of {batch.raw.n_tokens})"
        )


def _reusable_prefix(llama: Any, prompt: np.ndarray) -> int:
    """Prompt tokens still in sequence 0's KV cells that this call may keep.

    Only whole ``PREFILL_CHUNK``-aligned chunks count. llama.cpp's numbers depend slightly on
    how tokens were batched (re-decoding one token gives logits a hair off those of the same
    token decoded in a chunk), and at temperature > 0 a hair can change the draw. Reusing
    exactly the chunks a fresh call would have decoded keeps a seed's output the same whether
    or not an earlier call left its prompt behind.
    """
    held = llama.input_ids[: int(llama.n_tokens)]
    return kept_prompts.shared_chunks(held, prompt, PREFILL_CHUNK)


def _check_cancel(cancel: threading.Event | None, first: _Sequence, where: str) -> None:
    if cancel is not None and cancel.is_set():
        raise CallCancelled(f"Generation cancelled {where}.", first.text)


def decode(
    llama: Any,
    prompt: Sequence[int],
    params: Sequence[SampleParams],
    *,
    max_tokens: int,
    stop: Sequence[str] = (),
    grammar: str | None = None,
    grammar_check: GrammarCheck | None = None,
    cancel: threading.Event | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[SequenceOutput]:
    """Generate ``len(params)`` continuations of ``prompt`` together; one output per entry.

    The prompt is decoded once (minus any prefix still cached in sequence 0 from the previous
    call). ``on_text`` streams sequence 0's text, holding back anything that could be the start
    of a stop string. ``cancel`` is checked between prompt chunks and between tokens; when set,
    ``CallCancelled`` carries sequence 0's text so far. The caller must have made room:
    ``len(prompt) + len(params) * max_tokens`` KV cells and ``len(params) <= max_sequences``.
    Afterwards sequence 0 keeps the prompt's whole chunks (the next call with the same prefix
    reuses them), the other sequences are gone, and ``llama``'s bookkeeping matches.
    ``grammar_check`` says how ``grammar`` is applied (see the module docstring); None means
    ``GRAMMAR_CHECK``.
    """
    check = GRAMMAR_CHECK if grammar_check is None else grammar_check
    if check not in ("full", "lazy"):
        raise ValueError(f"grammar_check must be 'full' or 'lazy', not {check!r}")
    n_seq = len(params)
    if n_seq < 1:
        return []
    if n_seq > max_sequences(llama):
        raise ValueError(f"{n_seq} sequences, the context holds {max_sequences(llama)}")
    if not prompt:
        raise ModelCallFailed("The rendered prompt is empty.")
    wanted = np.asarray(prompt, dtype=np.intc)
    kept = getattr(llama, "_arbor_kept", None)
    if kept is not None:
        kept.switch_for(llama, wanted, PREFILL_CHUNK)
    ctx = llama.ctx
    vocab = llama._model.vocab
    memory = llama_cpp.llama_get_memory(ctx)
    n_prompt = len(prompt)
    sequences = [_Sequence(stop, on_text if i == 0 else None) for i in range(n_seq)]
    first = sequences[0]
    candidates = None
    if grammar is not None and check == "lazy":
        candidates = _Candidates(llama_cpp.llama_vocab_n_tokens(vocab))
    pickers: list[_Picker] = []
    try:
        for p in params:
            pickers.append(_Picker(vocab, p, grammar, check, candidates))
    except BaseException:
        for picker in pickers:
            picker.close()
        raise
    batch = _Batch(max(PREFILL_CHUNK, n_seq))
    buffer = ctypes.create_string_buffer(64)
    try:
        # -- prompt: reuse what sequence 0 still holds, decode the rest in small chunks ------
        reuse = _reusable_prefix(llama, wanted)
        for seq_id in range(1, max_sequences(llama)):
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        llama_cpp.llama_memory_seq_rm(memory, 0, reuse, -1)
        llama.n_tokens = reuse
        llama._requires_eval = True  # the high-level API must not trust our logits
        last_index = 0
        for start in range(reuse, n_prompt, PREFILL_CHUNK):
            _check_cancel(cancel, first, "while reading the prompt")
            chunk = prompt[start : start + PREFILL_CHUNK]
            batch.clear()
            for offset, token in enumerate(chunk):
                pos = start + offset
                last_index = batch.add(token, pos, 0, pos == n_prompt - 1)
            _decode(ctx, batch)
            llama.input_ids[start : start + len(chunk)] = chunk
            llama.n_tokens = start + len(chunk)
        for seq_id in range(1, n_seq):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq_id, -1, -1)

        # -- generation: every live sequence advances one token per llama_decode -------------
        logits_index = [last_index] * n_seq
        pos = n_prompt
        while True:
            batch.clear()
            for seq_id, seq in enumerate(sequences):
                if seq.finish is not None:
                    continue
                token = pickers[seq_id].pick(ctx, logits_index[seq_id])
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    seq.finish = "stop"
                    continue
                seq.add_piece(_piece(vocab, token, buffer))
                if seq.finish is None and seq.tokens >= max_tokens:
                    seq.finish = "length"
                if seq.finish is None:
                    logits_index[seq_id] = batch.add(token, pos, seq_id, True)
            if batch.raw.n_tokens == 0:
                break
            _check_cancel(cancel, first, f"after {pos - n_prompt + 1} tokens")
            _decode(ctx, batch)
            pos += 1
        for seq in sequences:
            seq.finish_text()
        return [
            SequenceOutput(s.text, s.tokens, s.finish or "length", p.steps, p.resamples)
            for s, p in zip(sequences, pickers, strict=True)
        ]
    finally:
        batch.close()
        for picker in pickers:
            picker.close()
        for seq_id in range(1, n_seq):
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        # Sequence 0 keeps the prompt's whole chunks for the next call (see _reusable_prefix);
        # the rest, generated tokens included, goes.
        keep = min(int(llama.n_tokens), n_prompt)
        llama.n_tokens = keep - keep % PREFILL_CHUNK
        llama_cpp.llama_memory_seq_rm(memory, 0, llama.n_tokens, -1)
