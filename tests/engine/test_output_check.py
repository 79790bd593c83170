"""The output check on real outputs of the bundled model, on good answers, and on any text.

``data/output_check/bundled_gemma_outputs.json`` holds what the bundled base Gemma 3 270M
answered to chat prompts (it echoed them or looped) and to few-shot completion prompts (it
answered), with the prompts that produced them; the live test makes a fresh echo.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.output_check import (
    OutputProblem,
    check_output,
    copied_share,
    disqualified,
    suspect_reason,
)

DATA = Path(__file__).parent / "data" / "output_check" / "bundled_gemma_outputs.json"
ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = json.loads(DATA.read_text(encoding="utf-8"))["outputs"]


def _check(item: dict) -> list[OutputProblem]:
    return check_output(
        item["output"],
        prompt=item["prompt"],
        instruction=item["instruction"],
        finish_reason=item["finish_reason"],
    )


def _kinds(problems: list[OutputProblem]) -> set[str]:
    return {p.kind for p in problems}


def _labelled(label: str) -> list[dict]:
    return [item for item in OUTPUTS if item["label"] == label]


@pytest.mark.parametrize("item", _labelled("echo"), ids=lambda i: i["task"][:30])
def test_real_echoes_of_the_bundled_model_are_flagged_as_echoes(item):
    problems = _check(item)
    assert "echo" in _kinds(problems), (item["output"][:200], problems)
    assert disqualified(problems)


@pytest.mark.parametrize("item", _labelled("loop"), ids=lambda i: i["task"][:30])
def test_real_loops_of_the_bundled_model_are_flagged(item):
    problems = _check(item)
    assert "repetition" in _kinds(problems), (item["output"][:200], problems)


@pytest.mark.parametrize("item", _labelled("good"), ids=lambda i: i["task"][:30])
def test_real_good_answers_of_the_bundled_model_are_not_flagged(item):
    assert _check(item) == []


def test_the_stored_set_is_what_the_tests_claim():
    labels = [item["label"] for item in OUTPUTS]
    assert labels.count("echo") >= 5 and labels.count("good") >= 5
    # Every stored chat output stopped at the token limit: it is said, whatever else is wrong.
    for item in OUTPUTS:
        if item["finish_reason"] == "length":
            assert "truncated" in _kinds(_check(item))


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
        (
            "Summarise the causes of the French Revolution in two sentences.",
            "The causes of the French Revolution were debt and hunger.",
        ),
        (
            "List three risks of launching a new banking app.",
            "Three risks of launching a new banking app: fraud, outages and slow adoption by "
            "customers who trust their old bank.",
        ),
        ("Name two benefits of regular exercise.", "Better sleep and a stronger heart."),
        ("What is 12 + 30? Answer with the number only.", "42"),
    ],
)
def test_a_short_answer_that_restates_its_question_is_not_an_echo(question, answer):
    prompt = f"Overall task: {question}\n\nYour step: {question}\n{question}"
    assert check_output(answer, prompt=prompt, instruction=question) == []


def test_an_answer_that_is_only_the_question_is_an_echo_however_short():
    question = "What is the capital of Japan?"
    problems = check_output("What is the capital of Japan?", prompt=question)
    assert _kinds(problems) == {"echo"}
    assert suspect_reason(problems) == "echoes the prompt (100% of its words copied)"


def test_copied_share_counts_only_long_runs():
    prompt = "Describe the water cycle in three short steps for a child"
    assert copied_share("describe the water cycle", [prompt]) == (0, 4)
    copied, total = copied_share(
        "Describe the water cycle in three short steps: rain falls, it flows, it rises.", [prompt]
    )
    assert (copied, total) == (8, 14)


def test_readme_prose_is_neither_an_echo_nor_a_loop():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    chunks = [text[i : i + 2000] for i in range(0, len(text), 1000)]
    flagged = [c[:80] for c in chunks if check_output(c, prompt="Summarise Arbor.")]
    assert flagged == []


def test_loops_without_punctuation_and_repeated_lines_are_named():
    problems = check_output("the " * 30)
    assert _kinds(problems) == {"repetition"}
    assert suspect_reason(problems) == "repeats itself ('the the the the' x27)"
    lines = "\n".join(["- Buy milk"] * 6)
    assert suspect_reason(check_output(lines)) == "repeats itself ('buy milk' x6)"
    # A list whose items share a pattern is not a loop.
    risks = "\n".join(f"{i}. Risk {i}: the {w} may fail." for i, w in enumerate("abcdef", 1))
    assert check_output(risks) == []


def test_empty_truncated_and_wrong_language():
    assert check_output("  \n") == [OutputProblem("empty", "empty")]
    assert suspect_reason(check_output("   ")) == "empty"
    assert suspect_reason(check_output("Tokyo", finish_reason="length")) == (
        "cut off at the token limit"
    )
    german = "Die Hauptstadt von Frankreich ist Paris, und sie liegt an der Seine."
    assert suspect_reason(check_output(german, expected_language="fr")) == (
        "in German, the task is in French"
    )
    assert check_output(german, expected_language="de") == []
    assert check_output(german, expected_language=None) == []
    assert check_output("Paris", expected_language="fr") == []  # too short to tell


def test_several_problems_make_one_line():
    output = "What is the capital of Japan? " * 8
    reason = suspect_reason(
        check_output(output, prompt="What is the capital of Japan?", finish_reason="length")
    )
    assert reason is not None and "\n" not in reason
    assert reason.startswith("echoes the prompt (100% of its words copied); repeats itself")
    assert reason.endswith("; cut off at the token limit")
    assert suspect_reason([]) is None


@settings(max_examples=300, deadline=None)
@given(
    output=st.text(max_size=400),
    prompt=st.text(max_size=200),
    finish=st.sampled_from([None, "stop", "length", ""]),
    language=st.sampled_from([None, "en", "fr", "xx"]),
)
def test_the_check_never_raises_on_any_text(output, prompt, finish, language):
    problems = check_output(
        output, prompt=prompt, instruction=prompt[:20], finish_reason=finish,
        expected_language=language,
    )  # fmt: skip
    assert all(isinstance(p, OutputProblem) for p in problems)
    reason = suspect_reason(problems)
    assert reason is None or (reason and "\n" not in reason)


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.sampled_from(["a", "bb", "the", "é", "42", "\n", "."]), max_size=300))
def test_the_check_never_raises_on_repetitive_text(words):
    text = " ".join(words)
    check_output(text, prompt=text[:50], expected_language="en")


def test_the_check_takes_about_a_millisecond_on_2000_characters():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    output = text[3000:5000]
    prompt = (ROOT / "assets" / "prompts" / "node_system.md").read_text() + text[9000:9500]
    check_output(output, prompt=prompt, expected_language="en")  # loads the language model
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        check_output(output, prompt=prompt, instruction=text[9000:9300], expected_language="en")
        timings.append(time.perf_counter() - start)
    # About 0.5 ms (1 ms with the language) on an idle core; generous for a loaded test machine.
    assert statistics.median(timings) < 0.010, timings


@pytest.mark.model
def test_the_bundled_model_echoes_a_chat_prompt_and_the_check_says_so():
    from engine.models import backend_for
    from engine.plan import GenerationConfig, ModelRef
    from engine.plan.core import single_node_plan
    from engine.prompts import node_messages

    item = next(i for i in _labelled("echo") if i["task"].startswith("Explain what photo"))
    config = GenerationConfig(prompt_format="chat", max_tokens=96, temperature=0.2, seed=1)
    plan = single_node_plan(item["task"]).model_copy(update={"default_generation": config})
    messages = node_messages(plan, plan.root, {})
    assert "\n\n".join(m["content"] for m in messages) == item["prompt"]  # the stored prompt
    completion = backend_for(ModelRef()).complete(messages, config)
    prompt = "\n\n".join(m["content"] for m in messages)
    problems = check_output(
        completion.text,
        prompt=prompt,
        instruction=plan.root.instruction,
        finish_reason=completion.finish_reason,
    )
    assert "echo" in _kinds(problems), (completion.text, problems)
