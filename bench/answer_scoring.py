"""Scoring of single-step answers for bench/answer_quality.py: on-topic, correct, echo.

Pure functions over strings and the labels in ``bench/data/answer_questions.jsonl``; no model.

* **correct**: one of the question's ``reference`` strings occurs in the answer (case-insensitive,
  accents folded, so "Tokyo" matches "TOKYO" and "Tōkyō"). A purely numeric reference ("42")
  must stand alone (not inside "142" or "4.2"); other references are plain substrings ("blanc"
  matches "blanco").
* **echo (independent)**: the answer restates the question instead of answering it. Two signs,
  either is enough (both need an answer of more than 3 words):

  - *restates*: at least 60% of the answer's words are words of the question and the answer adds
    no content word (stem) the question lacks, so "The capital of Japan is Tokyo." is not an
    echo (it adds "Tokyo") but "What is the capital of Japan? The capital of Japan" is;
  - *copies*: the answer contains at least 80% of the question's words as one contiguous run
    (questions of 4 words or more): the model repeated the question, whatever it added after.

  - *copies the prompt* (when the rendered prompt is given): at least 60% of the answer's words
    lie in runs of 5 or more consecutive words found in the prompt (the system prompt, a worked
    example), so an answer that replays its prompt is an echo even if the question is not in it.

  This measure is the benchmark's own; ``engine.output_check.check_output`` (when present) is
  reported beside it, so the engine is not the only judge of its own output.
* **on-topic**: not empty, not an echo (by this module's measure) and one of the question's
  ``on_topic`` keywords starts a word of the answer (case-insensitive, accents folded; a keyword
  is a word or stem, so "photosynth" matches "photosynthesis"; the entry ``#number`` is met by
  any number, for "how many" questions where a wrong count still addresses the question).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

#: Share of the answer's words that are the question's words, at and above which it restates it.
RESTATE_SHARE = 0.6
#: Share of the question's words copied as one run, at and above which the answer copies it.
COPY_SHARE = 0.8
#: Answers of this many words or fewer are never echoes ("Tokyo.", "42").
MAX_SHORT_WORDS = 3
#: Runs of this many words copied from the rendered prompt count towards ``PROMPT_COPY_SHARE``.
PROMPT_RUN = 5
#: Share of the answer's words in such runs, at and above which the answer copies the prompt.
PROMPT_COPY_SHARE = 0.6
#: Questions shorter than this are not checked for copies (every short answer would match).
MIN_COPY_QUESTION_WORDS = 4

_TOKEN = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Case-folded, accents removed ("Tōkyō" -> "tokyo", "Grün" -> "grun")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Words and numbers of ``text``, folded ("What is 12 + 30?" -> what, is, 12, 30)."""
    return _TOKEN.findall(fold(text))


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """A keyword or stem that must start a word: "pric" matches "pricing", not "oprice"."""
    return re.compile(r"(?<!\w)" + re.escape(fold(keyword).strip()), re.UNICODE)


#: An ``on_topic`` entry that any number satisfies ("How many legs...?" -> "4." is an attempt).
ANY_NUMBER = "#number"


def has_keyword(text: str, keywords: Iterable[str]) -> bool:
    folded = fold(text)
    for keyword in keywords:
        if keyword == ANY_NUMBER:
            if re.search(r"\d", folded):
                return True
        elif keyword.strip() and keyword_pattern(keyword).search(folded):
            return True
    return False


def matches_reference(answer: str, references: Sequence[str] | None) -> bool | None:
    """True when one reference occurs in ``answer``; None when the question has no reference."""
    if not references:
        return None
    folded = fold(answer)
    for reference in references:
        ref = fold(reference).strip()
        if not ref:
            continue
        if ref.isdigit():
            if re.search(r"(?<![\d.,])" + re.escape(ref) + r"(?![\d]|[.,]\d)", folded):
                return True
        elif ref in folded:
            return True
    return False


def _content_stems(text: str, language: str | None) -> set[str]:
    from engine.language import content_stems

    return {fold(stem) for stem in content_stems(text, language)}


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def prompt_copied_share(answer: str, prompt: str, run: int = PROMPT_RUN) -> float:
    """Share of the answer's words inside runs of ``run``+ words that also occur in ``prompt``."""
    a_tokens, p_tokens = tokens(answer), tokens(prompt)
    if len(a_tokens) < run or len(p_tokens) < run:
        return 0.0
    grams = {tuple(p_tokens[i : i + run]) for i in range(len(p_tokens) - run + 1)}
    covered = [False] * len(a_tokens)
    for i in range(len(a_tokens) - run + 1):
        if tuple(a_tokens[i : i + run]) in grams:
            covered[i : i + run] = [True] * run
    return sum(covered) / len(a_tokens)


def echo_signs(
    question: str, answer: str, language: str | None = None, prompt: str | None = None
) -> dict[str, float | bool]:
    """The numbers behind ``is_echo``: shares, and which sign fired."""
    q_tokens, a_tokens = tokens(question), tokens(answer)
    q_set = set(q_tokens)
    share = sum(t in q_set for t in a_tokens) / len(a_tokens) if a_tokens else 0.0
    new_content = _content_stems(answer, language) - _content_stems(question, language)
    new_content |= {t for t in a_tokens if t.isdigit() and t not in q_set}  # "12 + 30 = 42"
    copied = _longest_common_run(q_tokens, a_tokens) / len(q_tokens) if q_tokens else 0.0
    long_enough = len(a_tokens) > MAX_SHORT_WORDS
    restates = long_enough and share >= RESTATE_SHARE and not new_content
    copies = long_enough and len(q_tokens) >= MIN_COPY_QUESTION_WORDS and copied >= COPY_SHARE
    from_prompt = prompt_copied_share(answer, prompt) if prompt else 0.0
    return {
        "share_in_question": round(share, 3),
        "copied_share": round(copied, 3),
        "prompt_copied_share": round(from_prompt, 3),
        "restates": restates,
        "copies": copies,
        "copies_prompt": long_enough and from_prompt >= PROMPT_COPY_SHARE,
    }


def is_echo(
    question: str, answer: str, language: str | None = None, prompt: str | None = None
) -> bool:
    """The benchmark's own echo measure (see the module docstring)."""
    signs = echo_signs(question, answer, language, prompt)
    return bool(signs["restates"] or signs["copies"] or signs["copies_prompt"])


def is_on_topic(
    question: str, answer: str, keywords: Iterable[str], language: str | None = None
) -> bool:
    if not answer.strip() or is_echo(question, answer, language):
        return False
    return has_keyword(answer, keywords)


def score_answer(item: dict, answer: str, prompt: str | None = None) -> dict:
    """All of this module's verdicts for one labelled question and the model's answer.

    ``prompt``: the text the model was given (all messages), for the *copies the prompt* sign.
    """
    language = item.get("language")
    signs = echo_signs(item["question"], answer, language, prompt)
    echo = bool(signs["restates"] or signs["copies"] or signs["copies_prompt"])
    return {
        "echo": echo,
        "echo_signs": signs,
        "on_topic": bool(answer.strip()) and not echo and has_keyword(answer, item["on_topic"]),
        "correct": matches_reference(answer, item.get("reference")),
        "empty": not answer.strip(),
    }
