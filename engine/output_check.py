"""Is a model's output an answer? Cheap checks for the ways a small model fails while "succeeding".

The bundled base Gemma 3 270M, given chat turns, often answers with the prompt itself, loops on a
line or a phrase, or stops at the token limit; the run still finishes. ``check_output`` names
those failures so a node can be marked *suspect* (``suspect_reason`` gives the one-line reason),
and sampling strategies can prefer a clean sample. Pure logic, no model: it runs on every call,
so it has to stay well under a millisecond for a 2,000-character output, and it never raises.

The thresholds below were measured on real outputs of the bundled model (chat prompts that it
echoed, few-shot completions that it answered) and on the README's prose as long, good,
non-repetitive text; ``tests/engine/data/output_check/`` holds those outputs with their prompts.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

ProblemKind = Literal["empty", "echo", "repetition", "truncated", "wrong_language"]

#: A copied run must be at least this many consecutive words (of the prompt or the instruction)
#: to count. Five-word runs occur in honest answers that restate their question ("the causes of
#: the French Revolution"); the bundled model's echoes copy whole sentences (9-60 words).
ECHO_MIN_RUN = 6
#: An output is an echo when this share of its words lies in copied runs...
ECHO_MIN_SHARE = 0.6
#: ...and those runs hold at least this many words, unless the output is nothing but one copied
#: run: "The causes of the French Revolution were debt." copies 6 of 8 words (75%) and answers;
#: "What is the capital of Japan?" copies 6 of 6 and does not. The real echoes copied 64-100% of
#: their words, every good answer under 40%.
ECHO_MIN_COPIED = 9
#: A line or sentence seen this many times is a loop (the model's loops repeated a line 5-20
#: times; the README's prose never repeats a sentence 3 times).
REPEAT_MIN_SEGMENT = 4
#: Word n-grams of this size seen ``REPEAT_MIN_NGRAM`` times are a loop without punctuation
#: ("the the the ...", "and then and then ..."). In the README's 2,000-character chunks no
#: 4-word sequence occurs more than 3 times.
REPEAT_NGRAM = 4
REPEAT_MIN_NGRAM = 5
#: The repeated copies (beyond the first) must make up this share of the output's words, so a
#: long answer with one recurring phrase ("the trace store") is not called a loop.
REPEAT_MIN_SHARE = 0.3
#: Longest text the checks look at: the start of a very long output tells as much as the rest,
#: and it keeps a call bounded (about 0.1 ms per 1,000 characters).
MAX_CHECKED_CHARS = 20_000

_WORD = re.compile(r"\w+", re.UNICODE)
#: Lines and sentences; a full stop ends a sentence only before a space or the end, so paths and
#: commands (".venv/bin/python run.py") are not cut into fragments that repeat.
_SEGMENT_BREAK = re.compile(r"[\n!?;。！？]+|\.+(?=\s|$)")
#: Characters dropped around a segment before comparing (bullets, numbering, quotes).
_SEGMENT_TRIM = " \t\r-*•·>#\"'`()[]{},:0123456789"
#: Language detection reads this much of the output: py3langid's time grows with the text
#: (about 0.15 ms for 400 characters, 1.5-3 ms for 2,000) and the start tells the language.
LANGUAGE_SAMPLE_CHARS = 500


@dataclass(frozen=True)
class OutputProblem:
    kind: ProblemKind
    detail: str


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text[:MAX_CHECKED_CHARS])]


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=64)
def _source_grams(source: str, n: int) -> frozenset[tuple[str, ...]]:
    """A prompt's word n-grams, kept for the next call: a node's samples share its prompt."""
    return frozenset(_ngrams(_words(source), n))


def copied_share(
    output: str | list[str], sources: Iterable[str], min_run: int = ECHO_MIN_RUN
) -> tuple[int, int]:
    """(Words of ``output`` in runs of ``min_run``+ words copied from ``sources``, all words).

    ``output`` may be given as its words (``_words``), when the caller has them already.
    """
    words = _words(output) if isinstance(output, str) else output
    if len(words) < min_run:
        return 0, len(words)
    grams: set[tuple[str, ...]] = set()
    for source in sources:
        if source:
            grams |= _source_grams(source, min_run)
    if not grams:
        return 0, len(words)
    covered = [False] * len(words)
    for i in range(len(words) - min_run + 1):
        if tuple(words[i : i + min_run]) in grams:
            covered[i : i + min_run] = [True] * min_run
    return sum(covered), len(words)


def _echo(words: list[str], prompt: str, instruction: str) -> OutputProblem | None:
    copied, total = copied_share(words, (prompt, instruction))
    if not total or not copied:
        return None
    share = copied / total
    if share >= ECHO_MIN_SHARE and (copied >= ECHO_MIN_COPIED or copied == total):
        return OutputProblem("echo", f"echoes the prompt ({share:.0%} of its words copied)")
    return None


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _repetition(output: str, words: list[str]) -> OutputProblem | None:
    if not words:
        return None
    # A line or sentence repeated (normalised: case, spacing, bullets and numbering ignored).
    segments = Counter(
        " ".join(seg.casefold().split()).strip(_SEGMENT_TRIM)
        for seg in _SEGMENT_BREAK.split(output[:MAX_CHECKED_CHARS])
    )
    for segment, count in segments.most_common(3):
        if count < REPEAT_MIN_SEGMENT:
            break
        if not _WORD.search(segment):  # a rule or a table border: not a sentence
            continue
        repeated_words = len(_WORD.findall(segment)) * (count - 1)
        if repeated_words >= REPEAT_MIN_SHARE * len(words):
            return OutputProblem("repetition", f"repeats itself ('{_short(segment)}' x{count})")
    # A phrase repeated without punctuation between the copies.
    if len(words) >= REPEAT_NGRAM * 2:
        grams = Counter(
            tuple(words[i : i + REPEAT_NGRAM]) for i in range(len(words) - REPEAT_NGRAM + 1)
        )
        gram, count = grams.most_common(1)[0]
        repeated = sum(c - 1 for c in grams.values() if c >= REPEAT_MIN_NGRAM)
        if count >= REPEAT_MIN_NGRAM and repeated >= REPEAT_MIN_SHARE * len(words):
            phrase = " ".join(gram)
            return OutputProblem("repetition", f"repeats itself ('{_short(phrase)}' x{count})")
    return None


def _wrong_language(output: str, expected: str | None) -> OutputProblem | None:
    if not expected:
        return None
    from engine.language import detect_language, language_name

    found = detect_language(output[:LANGUAGE_SAMPLE_CHARS])
    if found is None or found == expected:
        return None
    return OutputProblem(
        "wrong_language",
        f"in {language_name(found)}, the task is in {language_name(expected)}",
    )


def check_output(
    output: str,
    *,
    prompt: str = "",
    instruction: str = "",
    finish_reason: str | None = None,
    expected_language: str | None = None,
) -> list[OutputProblem]:
    """What is wrong with ``output`` as an answer to ``prompt`` (empty list: nothing found).

    ``prompt`` and ``instruction`` are what the output must not merely copy (leave upstream
    outputs a parent is asked to combine out of ``prompt``); ``finish_reason`` is the call's
    ("length": cut off); ``expected_language`` the task's (None: not checked). Never raises.
    """
    try:
        output = output if isinstance(output, str) else str(output)
        if not output.strip():
            return [OutputProblem("empty", "empty")]
        words = _words(output)
        problems = [
            found
            for found in (
                _echo(words, prompt or "", instruction or ""),
                _repetition(output, words),
                _wrong_language(output, expected_language),
            )
            if found is not None
        ]
        if finish_reason == "length":
            problems.append(OutputProblem("truncated", "cut off at the token limit"))
        return problems
    except Exception:  # a check must never fail the node it checks
        return []


#: Problems that make a sample worse than any clean one (a cut-off sample may still be right).
DISQUALIFYING: frozenset[str] = frozenset({"empty", "echo", "repetition"})


def suspect_reason(problems: Sequence[OutputProblem]) -> str | None:
    """One short line naming the problems, or None when there are none."""
    if not problems:
        return None
    return "; ".join(dict.fromkeys(p.detail for p in problems))


def disqualified(problems: Sequence[OutputProblem]) -> bool:
    """Whether a sample with these problems should lose to any clean sample."""
    return any(p.kind in DISQUALIFYING for p in problems)


__all__ = [
    "DISQUALIFYING",
    "OutputProblem",
    "ProblemKind",
    "check_output",
    "copied_share",
    "disqualified",
    "suspect_reason",
]
