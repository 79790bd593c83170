"""The local backend on the real bundled GGUF: model cache, context fitting, streaming, cancel,
seeds, and best-of-N samples decoded as one batch."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from engine.errors import CallCancelled, ModelCallFailed, ModelUnavailable
from engine.models import batch_decode, local
from engine.models.local import LocalBackend, loaded_models, set_memory_limit, unload_all
from engine.plan import GenerationConfig

POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
WARM = GenerationConfig(temperature=1.0, top_p=0.95, max_tokens=24, seed=11)
#: About 200 tokens: longer than one prefill chunk, so a later call reuses a cached prefix.
LIGHTHOUSE_NOTES = """Notes from the keeper's log, autumn.
Monday: fog rolled in before noon; the horn ran for six hours and the generator coughed twice.
Tuesday: a fishing boat, the Marguerite, radioed about a torn net near the northern reef.
Wednesday: replaced two cracked panes in the lantern room; the putty needs a dry week to set.
Thursday: the supply launch was late, so dinner was sardines, rye bread and the last apples.
Friday: counted forty-one gannets on the stacks and one seal that watched me paint the rail.
Saturday: storm warning from the coast guard; tied down the shed roof and filled the lamps.
Sunday: calm at last. Wrote to my sister about the lighthouse inspector's visit next month,
and about whether the station will be automated next year, as the rumours in town say."""


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts and ends with no model loaded and the default memory limit."""
    unload_all()
    set_memory_limit(None)
    yield
    set_memory_limit(None)
    unload_all()


@pytest.fixture(scope="module")
def model_copies(bundled_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two more GGUF files with other paths: hard links where possible, else copies."""
    folder = tmp_path_factory.mktemp("models")
    copies = []
    for name in ("second.gguf", "third.gguf"):
        target = folder / name
        try:
            os.link(bundled_path, target)
        except OSError:
            shutil.copyfile(bundled_path, target)
        copies.append(target)
    return copies


def _one_model_bytes(path: Path) -> int:
    return local.estimate_model_bytes(local.read_model_shape(path), local.MIN_CONTEXT)


def _loaded_names() -> list[str]:
    return sorted(Path(info.path).name for info in loaded_models())


# -- memory-bounded cache -------------------------------------------------------------------


@pytest.mark.model
def test_cache_unloads_the_least_recently_used_model_to_stay_within_the_limit(
    bundled_path, model_copies
):
    second, third = model_copies
    one = _one_model_bytes(bundled_path)
    set_memory_limit(int(one * 2.5))  # two fit, three do not
    LocalBackend(bundled_path).check()
    LocalBackend(second).check()
    assert _loaded_names() == sorted([bundled_path.name, "second.gguf"])
    LocalBackend(bundled_path).count_tokens("used again: now the most recent")

    LocalBackend(third).check()

    assert _loaded_names() == sorted([bundled_path.name, "third.gguf"])  # second was LRU
    infos = loaded_models()
    assert sum(info.estimated_bytes for info in infos) <= local.memory_limit()
    assert Path(infos[0].path).name == "third.gguf"  # most recently used first
    assert all(info.n_ctx == local.MIN_CONTEXT and not info.busy for info in infos)


@pytest.mark.model
def test_a_model_in_use_is_not_unloaded_the_next_load_waits_for_it(bundled_path, model_copies):
    second = model_copies[0]
    set_memory_limit(int(_one_model_bytes(bundled_path) * 1.5))  # one fits, two do not
    generating, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(piece: str) -> None:  # runs while the call holds the model's lock
        generating.set()
        release.wait(30)

    def first_call() -> None:
        config = GenerationConfig(temperature=0.0, max_tokens=4)
        results["first"] = LocalBackend(bundled_path).complete(POEM, config, on_token=hold)

    def second_load() -> None:
        results["second"] = LocalBackend(second).check()

    calling = threading.Thread(target=first_call)
    calling.start()
    assert generating.wait(60)
    loading = threading.Thread(target=second_load)
    loading.start()
    time.sleep(0.5)
    try:
        assert loading.is_alive(), "the second model loaded while the first was in use"
        (busy,) = loaded_models()
        assert Path(busy.path).name == bundled_path.name and busy.busy
    finally:
        release.set()
        calling.join(60)
        loading.join(60)
    assert results["first"].text  # the call in use finished normally
    assert results["second"] == "second.gguf"
    assert _loaded_names() == ["second.gguf"]


def test_a_model_bigger_than_the_limit_is_refused_with_the_numbers(bundled_path):
    set_memory_limit(50 * 1024 * 1024)
    with pytest.raises(ModelUnavailable, match=r"memory limit of 50 MB") as info:
        LocalBackend(bundled_path).check()
    assert "ARBOR_MODEL_MEMORY_MB" in str(info.value)
    assert loaded_models() == []


# -- context fitted to the request ------------------------------------------------------------


def test_fitted_context_is_a_power_of_two_between_the_minimum_and_training():
    assert local.fitted_context(100, 32768) == 2048
    assert local.fitted_context(2049, 32768) == 4096
    assert local.fitted_context(20000, 32768) == 32768
    assert local.fitted_context(40000, 32768) == 32768
    assert local.fitted_context(100, 1024) == 1024


@pytest.mark.model
def test_context_grows_when_a_request_needs_more_and_beyond_training_is_refused(bundled_path):
    backend = LocalBackend(bundled_path)
    backend.complete(POEM, GenerationConfig(temperature=0.0, max_tokens=4))
    assert [info.n_ctx for info in loaded_models()] == [2048]

    big = GenerationConfig(temperature=0.0, max_tokens=3000, stop=["\n", "."])
    completion = backend.complete(POEM, big)
    assert completion.text
    assert [info.n_ctx for info in loaded_models()] == [4096]

    huge_prompt = [{"role": "user", "content": "lighthouse " * 30000}]
    assert backend.count_tokens(huge_prompt[0]["content"]) + 8192 > 32768
    with pytest.raises(ModelCallFailed, match=r"trained on 32,768") as info:
        backend.complete(huge_prompt, GenerationConfig(max_tokens=8192))
    assert "prompt + 8,192 max_tokens" in str(info.value)
    assert [info.n_ctx for info in loaded_models()] == [4096]  # nothing reloaded for it


# -- streaming, parity, cancel, seeds ---------------------------------------------------------


@pytest.mark.model
def test_streamed_text_matches_llama_cpp_python_for_the_same_seed(bundled_path):
    from llama_cpp import Llama

    direct = Llama(
        model_path=str(bundled_path),
        n_ctx=2048,
        n_threads=os.cpu_count() or 1,
        chat_format="gemma",
        verbose=False,
    )
    try:
        for config in (WARM, WARM.model_copy(update={"stop": ["\n"], "max_tokens": 40})):
            pieces: list[str] = []
            ours = LocalBackend(bundled_path).complete(POEM, config, on_token=pieces.append)
            theirs = direct.create_chat_completion(
                messages=POEM,
                temperature=config.temperature,
                top_p=config.top_p,
                max_tokens=config.max_tokens,
                seed=config.seed,
                stop=config.stop,
            )
            assert ours.text == theirs["choices"][0]["message"]["content"]
            assert "".join(pieces) == ours.text
            assert len(pieces) > 3  # it streamed, not one piece at the end
            assert ours.usage.input_tokens == theirs["usage"]["prompt_tokens"]
            assert ours.usage.output_tokens == theirs["usage"]["completion_tokens"]
            assert ours.finish_reason == theirs["choices"][0]["finish_reason"]
    finally:
        direct.close()


@pytest.mark.model
def test_cancel_from_another_thread_stops_generation_within_a_few_tokens(bundled_path):
    backend = LocalBackend(bundled_path)
    cancel = threading.Event()
    pieces: list[str] = []
    seen_at_cancel: list[int] = []

    def canceller() -> None:
        deadline = time.monotonic() + 60
        while len(pieces) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_at_cancel.append(len(pieces))
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    with pytest.raises(CallCancelled) as info:
        backend.complete(
            STORY,
            GenerationConfig(temperature=0.0, max_tokens=1500),
            on_token=pieces.append,
            cancel=cancel,
        )
    thread.join()
    # Counted in tokens, not seconds (a busy machine slows both sides alike): the loop checks
    # the cancel flag every token, so at most a couple more arrive after it is set.
    assert len(pieces) - seen_at_cancel[0] <= 3
    assert info.value.partial.startswith("".join(pieces)) and len(pieces) >= 5
    # The lock was released and the model still answers.
    assert backend.complete(POEM, GenerationConfig(temperature=0.0, max_tokens=4)).text


@pytest.mark.model
def test_cancel_lands_while_a_long_prompt_is_being_read(bundled_path):
    backend = LocalBackend(bundled_path)
    backend.check()
    long_prompt = [{"role": "user", "content": "The keeper climbed the stairs again. " * 150}]
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    with pytest.raises(CallCancelled) as info:
        backend.complete(long_prompt, GenerationConfig(max_tokens=8), cancel=cancel)
    # Reading all ~1,000 tokens takes seconds; the error says the prompt was still being read,
    # so the cancel landed between prompt batches, before any token was generated.
    assert info.value.partial == ""
    assert "prompt" in str(info.value)


@pytest.mark.model
def test_the_same_seed_gives_the_same_text_whatever_ran_in_between(bundled_path):
    backend = LocalBackend(bundled_path)
    notes = [{"role": "user", "content": LIGHTHOUSE_NOTES + "\nGive these notes a title."}]
    first = backend.complete(notes, WARM).text
    backend.complete(POEM, WARM.model_copy(update={"seed": 3}))  # another prompt in between
    again = backend.complete(notes, WARM).text
    cached = backend.complete(notes, WARM).text  # the prompt's prefix is cached now
    others = {backend.complete(notes, WARM.model_copy(update={"seed": s})).text for s in (12, 13)}
    assert first == again == cached
    assert others - {first}, "other seeds should give another text at temperature 1"


# -- best-of-N in one batch ---------------------------------------------------------------------


@pytest.mark.model
def test_samples_are_decoded_together_with_the_prompt_paid_once(bundled_path, monkeypatch):
    backend = LocalBackend(bundled_path)
    seeds = [21, 22, 23, 24]
    decoded: list[int] = []
    real_decode = batch_decode._decode

    def counting_decode(ctx, batch) -> None:
        decoded.append(batch.raw.n_tokens)
        real_decode(ctx, batch)

    backend._model().llama.reset()  # no cached prefix: the prompt must be read in full
    monkeypatch.setattr(batch_decode, "_decode", counting_decode)
    samples = backend.complete_samples(POEM, WARM, seeds)
    monkeypatch.undo()
    single = backend.complete(POEM, WARM)

    n_prompt = single.usage.input_tokens
    assert len(samples) == 4
    assert [s.usage.input_tokens for s in samples] == [n_prompt, 0, 0, 0]
    # Every token is decoded once: the prompt (one chunk here), then each sample's tokens
    # except a last one that ended the sample by length (an end-of-turn token is not counted).
    assert decoded[0] == n_prompt
    expected = sum(s.usage.output_tokens - (s.finish_reason == "length") for s in samples)
    assert sum(decoded[1:]) == expected
    assert max(decoded[1:]) == len(seeds)  # generation steps advance all four together
    assert len({s.text for s in samples}) >= 2
    assert all(0 < s.usage.output_tokens <= WARM.max_tokens for s in samples)

    again = backend.complete_samples(POEM, WARM, seeds)
    assert [s.text for s in again] == [s.text for s in samples]


@pytest.mark.model
def test_samples_stop_when_cancelled(bundled_path):
    backend = LocalBackend(bundled_path)
    backend.check()
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    # 3 x 600 tokens take many seconds: the call raising CallCancelled at all shows the cancel
    # landed mid-generation (no wall-clock bound: a busy machine slows both sides alike).
    with pytest.raises(CallCancelled) as info:
        backend.complete_samples(
            STORY, GenerationConfig(temperature=0.8, max_tokens=600), [1, 2, 3], cancel=cancel
        )
    assert isinstance(info.value.partial, str)
    assert backend.count_tokens(info.value.partial) < 600
    assert backend.complete_samples(POEM, GenerationConfig(max_tokens=4), [1, 2])


# -- prompts kept in extra contexts ------------------------------------------------------------

#: Two node prompts of a few-shot plan: each starts with its own worked examples (over two
#: prefill chunks), then the example's question.
DRAFT_SHOTS = (
    f"{LIGHTHOUSE_NOTES}\n{LIGHTHOUSE_NOTES}\n\nQ: Which boat radioed on Tuesday?\n"
    "A: the Marguerite\n\n"
)
CHECK_SHOTS = f"Checked answers, one per question.\n{LIGHTHOUSE_NOTES}\n{LIGHTHOUSE_NOTES}\n\n"
COMPLETION = GenerationConfig(
    temperature=0.8, top_p=0.95, max_tokens=12, seed=5, stop=["\n"], prompt_format="completion"
)


def _prompt(shots: str, question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{shots}Q: {question}\nA:"}]


@pytest.mark.model
def test_alternating_node_prompts_read_their_worked_examples_once(bundled_path, monkeypatch):
    backend = LocalBackend(bundled_path)
    questions = ["What was counted on Friday?", "What was replaced on Wednesday?"]
    calls = [(shots, q) for q in questions for shots in (DRAFT_SHOTS, CHECK_SHOTS)]
    reused: list[int] = []
    real_reusable = batch_decode._reusable_prefix

    def recording_reusable(llama, prompt) -> int:
        reused.append(real_reusable(llama, prompt))
        return reused[-1]

    monkeypatch.setattr(batch_decode, "_reusable_prefix", recording_reusable)
    texts = [backend.complete(_prompt(s, q), COMPLETION).text for s, q in calls]
    monkeypatch.undo()

    chunk = batch_decode.PREFILL_CHUNK
    # The first draft and check prompts start cold; the second example's draft starts from the
    # context that kept the draft prompt, its check from the one that kept the check prompt:
    # their worked examples' whole chunks (at least two each) are not read again.
    assert reused[:2] == [0, 0]
    assert all(n >= 2 * chunk and n % chunk == 0 for n in reused[2:]), reused

    # The same text as each prompt run on a freshly loaded model: a kept prompt changes nothing.
    for (shots, question), text in zip(calls, texts, strict=True):
        unload_all()
        assert backend.complete(_prompt(shots, question), COMPLETION).text == text


@pytest.mark.model
def test_kept_contexts_are_bounded_counted_and_given_up_for_memory(bundled_path):
    backend = LocalBackend(bundled_path)
    families = [f"Log {i}.\n{LIGHTHOUSE_NOTES}\n\n" for i in range(local.KEPT_CONTEXTS + 2)]
    answers = [
        backend.complete(_prompt(f, "What happened on Sunday?"), COMPLETION) for f in families
    ]
    assert all(a.text.strip() for a in answers)
    llama = backend._model().llama
    assert len(llama._arbor_kept.kept) == local.KEPT_CONTEXTS  # the least recent was reused
    shape = local.read_model_shape(bundled_path)
    (info,) = loaded_models()
    assert info.estimated_bytes == local.estimate_model_bytes(
        shape, local.MIN_CONTEXT, local.KEPT_CONTEXTS
    )
    assert info.estimated_bytes > local.estimate_model_bytes(shape, local.MIN_CONTEXT, 0)

    # A limit with room for the model and one kept context: it loads with one, not refused.
    unload_all()
    set_memory_limit(local.estimate_model_bytes(shape, local.MIN_CONTEXT, 1) + 1)
    for family in families:
        assert backend.complete(_prompt(family, "What happened on Monday?"), COMPLETION).text
    assert len(backend._model().llama._arbor_kept.kept) == 1
