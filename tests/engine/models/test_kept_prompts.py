"""Which context a call gets (``engine.models.kept_prompts``), on stand-in contexts.

The real contexts are exercised in ``test_local_backend.py`` with the bundled model (prompts
read once, the same text as on a fresh model); here the choice rules are checked one by one and
with generated prompt sequences, on objects that only carry what ``KeptPrompts`` touches.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.models.kept_prompts import KeptPrompts, shared_chunks

CHUNK = 4
N_CTX = 64


class FakeContext:
    made = 0

    def __init__(self) -> None:
        FakeContext.made += 1
        self.name = f"ctx{FakeContext.made}"
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _llama() -> SimpleNamespace:
    return SimpleNamespace(_ctx=FakeContext(), input_ids=np.zeros(N_CTX, dtype=np.intc), n_tokens=0)


def _prompt(family: int, question: int) -> np.ndarray:
    """A node's worked examples (9 tokens: two whole chunks) and then one example's question."""
    return np.array([family] * 9 + [100 + question] * 3, dtype=np.intc)


def _call(kept: KeptPrompts, llama: SimpleNamespace, prompt: np.ndarray) -> tuple[str, int]:
    """What ``batch_decode.decode`` does around a call: switch, reuse, then keep the prompt's
    whole chunks. Returns the context used and the tokens reused."""
    kept.switch_for(llama, prompt, CHUNK)
    reused = shared_chunks(llama.input_ids[: llama.n_tokens], prompt, CHUNK)
    llama.input_ids[: len(prompt)] = prompt
    llama.n_tokens = len(prompt) - len(prompt) % CHUNK
    return llama._ctx.name, reused


def test_each_node_prompt_comes_back_to_the_context_that_read_it():
    llama, kept = _llama(), KeptPrompts(3, FakeContext)
    first = [_call(kept, llama, _prompt(f, 0)) for f in (1, 2, 3)]
    again = [_call(kept, llama, _prompt(f, 1)) for f in (1, 2, 3)]
    assert [reused for _, reused in first] == [0, 0, 0]
    assert [reused for _, reused in again] == [8, 8, 8]
    assert [ctx for ctx, _ in again] == [ctx for ctx, _ in first]
    assert len(kept.kept) == 2  # three families: the model's own context and two kept


def test_a_new_prompt_takes_the_least_recently_used_context_once_all_are_made():
    llama, kept = _llama(), KeptPrompts(2, FakeContext)
    for family in (1, 2, 3):
        _call(kept, llama, _prompt(family, 0))
    _call(kept, llama, _prompt(1, 1))  # family 1 used again: family 2 is now the oldest
    ctx_of_2 = next(k.ctx.name for k in kept.kept if k.input_ids[0] == 2)
    assert _call(kept, llama, _prompt(4, 0)) == (ctx_of_2, 0)
    assert _call(kept, llama, _prompt(1, 2))[1] == 8  # family 1 was not the one overwritten
    assert _call(kept, llama, _prompt(3, 2))[1] == 8


def test_a_prompt_that_shares_chunks_stays_in_the_context_it_is_in():
    llama, kept = _llama(), KeptPrompts(3, FakeContext)
    ctx, _ = _call(kept, llama, _prompt(1, 0))
    assert _call(kept, llama, _prompt(1, 1)) == (ctx, 8)
    assert kept.kept == []  # nothing had to be kept aside


def test_no_slots_means_one_context_as_before_and_close_frees_the_kept_ones():
    llama, none = _llama(), KeptPrompts(0, FakeContext)
    names = {_call(none, llama, _prompt(f, 0))[0] for f in (1, 2, 3)}
    assert len(names) == 1 and none.kept == []
    kept = KeptPrompts(2, FakeContext)
    for family in (1, 2, 3):
        _call(kept, llama, _prompt(family, 0))
    contexts = [k.ctx for k in kept.kept]
    kept.close()
    assert all(c.closed for c in contexts) and kept.kept == [] and not llama._ctx.closed


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=30))
def test_any_call_sequence_reuses_only_what_its_context_really_holds(calls):
    llama, kept = _llama(), KeptPrompts(3, FakeContext)
    held: dict[str, np.ndarray] = {}  # what each context was last given, independently tracked
    for family, question in calls:
        prompt = _prompt(family, question)
        best = max((shared_chunks(t, prompt, CHUNK) for t in held.values()), default=0)
        ctx, reused = _call(kept, llama, prompt)
        truth = held.get(ctx, np.zeros(0, dtype=np.intc))
        assert reused == shared_chunks(truth, prompt, CHUNK)
        assert reused == best  # the context holding the most of this prompt was chosen
        held[ctx] = prompt[: len(prompt) - len(prompt) % CHUNK]
    assert len({k.ctx.name for k in kept.kept} | {llama._ctx.name}) == len(kept.kept) + 1


@given(
    st.lists(st.integers(0, 3), max_size=40),
    st.lists(st.integers(0, 3), min_size=1, max_size=40),
    st.integers(1, 9),
)
def test_shared_chunks_is_a_common_whole_chunk_prefix_short_of_the_last_token(kept, prompt, chunk):
    a, b = np.array(kept, dtype=np.intc), np.array(prompt, dtype=np.intc)
    n = shared_chunks(a, b, chunk)
    assert n % chunk == 0
    assert 0 <= n <= len(prompt) - 1
    assert a[:n].tolist() == b[:n].tolist()
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    assert n > min(common, len(prompt) - 1) - chunk  # no whole chunk more was shared
