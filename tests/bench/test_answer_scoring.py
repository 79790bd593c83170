"""bench/answer_scoring.py: each verdict can go either way on a hand-made answer."""

from __future__ import annotations

import json
from pathlib import Path

from bench.answer_scoring import is_echo, is_on_topic, matches_reference, score_answer

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "answer_questions.jsonl"
JAPAN = {
    "id": "t",
    "language": "en",
    "category": "fact",
    "question": "What is the capital of Japan?",
    "reference": ["Tokyo", "Tokio"],
    "on_topic": ["Tokyo", "Tokio", "Kyoto", "capital", "city"],
}


def test_correct_passes_and_fails() -> None:
    assert matches_reference("The capital is TŌKYŌ.", ["Tokyo"])
    assert not matches_reference("The capital is Kyoto.", ["Tokyo"])
    assert matches_reference("Anything", None) is None


def test_numeric_reference_must_stand_alone() -> None:
    assert matches_reference("12 + 30 = 42.", ["42"])
    assert not matches_reference("It is 142.", ["42"])
    assert not matches_reference("It is 4.2 or 42.5", ["42"])


def test_echo_catches_restating_and_copying() -> None:
    q = JAPAN["question"]
    assert is_echo(q, "What is the capital of Japan? What is the capital", "en")  # restates
    assert is_echo(q, "What is the capital of Japan? Answer with one word. Lorem ipsum", "en")
    assert not is_echo(q, "The capital of Japan is Tokyo.", "en")  # adds the answer
    assert not is_echo(q, "Tokyo", "en")  # too short to be an echo
    assert not is_echo("What is 12 + 30?", "It is 42 of course", "en")


def test_on_topic_needs_a_keyword_and_no_echo() -> None:
    q = JAPAN["question"]
    assert is_on_topic(q, "Kyoto is the old imperial city.", JAPAN["on_topic"], "en")
    assert not is_on_topic(q, "I like green apples very much.", JAPAN["on_topic"], "en")
    assert not is_on_topic(q, "What is the capital of Japan? capital", JAPAN["on_topic"], "en")
    assert not is_on_topic(q, "   ", JAPAN["on_topic"], "en")


def test_score_answer_puts_it_together() -> None:
    good = score_answer(JAPAN, "Tokyo.")
    assert good == good | {"echo": False, "on_topic": True, "correct": True, "empty": False}
    bad = score_answer(JAPAN, "What is the capital of Japan? What is")
    assert bad["echo"] and not bad["on_topic"] and bad["correct"] is False


def test_dataset_is_well_formed() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    for language in ("en", "fr", "de", "es", "it"):
        assert sum(r["language"] == language for r in rows) >= 12, language
    for r in rows:
        assert r["category"] in {"fact", "list", "explain", "calc"}
        assert r["on_topic"], r["id"]
        assert r["reference"] is None or all(isinstance(x, str) and x for x in r["reference"])
        # the question alone is never graded correct or on-topic
        assert not score_answer(r, r["question"])["on_topic"], r["id"]


def test_echo_catches_an_answer_that_replays_its_prompt() -> None:
    prompt = "You are a careful assistant. Answer the step directly and concisely.\n\nWhat is 2+2?"
    replay = "You are a careful assistant. Answer the step directly and concisely. mendata"
    assert is_echo("What is 2+2?", replay, "en", prompt)
    assert not is_echo("What is 2+2?", replay, "en")  # without the prompt only the question counts
    assert not is_echo("What is 2+2?", "Two plus two makes four, of course.", "en", prompt)


def test_any_number_keyword() -> None:
    legs = ["eight", "legs", "#number"]
    assert is_on_topic("How many legs does a spider have?", "4.", legs, "en")
    assert not is_on_topic("How many legs does a spider have?", "Blue.", legs, "en")
