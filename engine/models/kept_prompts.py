"""Contexts beside a model's own, each keeping the prompt its last call read.

``batch_decode`` leaves the previous call's prompt in the context's KV cache, so a call whose
prompt starts the same way (a vote's next group, a retry) skips those chunks. An evaluation of a
few-shot plan alternates between a handful of node prompts (draft, check, final) that each start
with a few hundred tokens of worked examples; with one context, every call found another node's
prompt there and read its worked examples again (about 1 s per call here: prompts run near
400 tokens/s).

So a loaded model may have a few more contexts (``llama_context`` objects on the same weights,
about 60 MB each for the bundled model at 2,048 tokens; ``engine.models.local`` reserves them
only where the memory limit has room). Before each call the model's context is swapped with the
kept one whose prompt shares the most whole prefill chunks with the new prompt; a prompt that
shares nothing with any of them takes the least recently used one, and the model's previous
prompt stays kept. This is llama.cpp server's choice of slot by prompt similarity.

Why contexts and not more sequences in one context: sequences share the KV cells, so a kept
prompt changes where a new prompt's cells land and how many cells attention spans, and
llama.cpp's sums then round differently; at temperature > 0 that changed a seeded sample. In a
context of its own, a call starts exactly as it would on a fresh one, so a seed gives the same
text whatever ran before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def shared_chunks(kept: np.ndarray, prompt: np.ndarray, chunk: int) -> int:
    """Tokens of ``prompt`` that ``kept`` starts with, cut to whole chunks, leaving the last
    prompt token to be decoded (its logits start the generation)."""
    n = min(len(kept), len(prompt))
    mismatch = np.flatnonzero(kept[:n] != prompt[:n])
    if mismatch.size:
        n = int(mismatch[0])
    n = min(n, len(prompt) - 1)
    return max(0, n - n % chunk)


@dataclass
class _Kept:
    """A context not in use and what ``Llama`` keeps about it: its tokens and their count."""

    ctx: Any
    input_ids: np.ndarray
    n_tokens: int
    last_used: int


class KeptPrompts:
    """The extra contexts of one ``Llama``; callers hold the model's lock."""

    def __init__(self, slots: int, new_context: Callable[[], Any]):
        self.slots = slots
        self._new_context = new_context
        self.kept: list[_Kept] = []
        self._clock = 0

    def switch_for(self, llama: Any, prompt: np.ndarray, chunk: int) -> None:
        """Give ``llama`` the context that has the most of ``prompt`` already read."""
        if self.slots <= 0:
            return
        self._clock += 1
        current = shared_chunks(llama.input_ids[: llama.n_tokens], prompt, chunk)
        scores = [shared_chunks(k.input_ids[: k.n_tokens], prompt, chunk) for k in self.kept]
        best = max(range(len(scores)), key=scores.__getitem__, default=-1)
        if best >= 0 and scores[best] > current:
            self._swap(llama, best)
        elif current == 0 and llama.n_tokens >= chunk:
            # The model's prompt shares nothing with this one: keep it, and let this call
            # overwrite a new context or the least recently used kept one.
            if len(self.kept) < self.slots:
                ids = np.zeros_like(llama.input_ids)
                self.kept.append(_Kept(self._new_context(), ids, 0, self._clock))
                self._swap(llama, len(self.kept) - 1)
            else:
                self._swap(llama, min(range(len(self.kept)), key=lambda i: self.kept[i].last_used))

    def _swap(self, llama: Any, index: int) -> None:
        kept = self.kept[index]
        self.kept[index] = _Kept(llama._ctx, llama.input_ids, llama.n_tokens, self._clock)
        llama._ctx, llama.input_ids, llama.n_tokens = kept.ctx, kept.input_ids, kept.n_tokens
        llama._requires_eval = True

    def close(self) -> None:
        """Free the kept contexts (the model's own is ``Llama``'s to free)."""
        for kept in self.kept:
            kept.ctx.close()
        self.kept.clear()
