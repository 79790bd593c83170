"""Decomposition patterns: skeletons of plans that recur (Fermi estimate, compare and recommend...).

A small model plans better from a skeleton than from nothing. A pattern is chosen by
classification constrained to the library's names: the task's words are matched against each
pattern's trigger words (in every language Arbor has examples for), the most specific match wins
(longest trigger, then most triggers), and no match means no pattern. A keyword classifier, not
the model, because with the bundled 270M model any free choice is close to random; a stronger
planner model still benefits, since the skeleton only adds one candidate to the ones it samples.
The library is data (``assets/planner/patterns.json``); a pattern's steps are filled with the
task's own words (its subject: the task without its leading verb).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from assets import asset_path


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    triggers: tuple[str, ...]
    #: language -> [(title, instruction with "{subject}")]
    steps: dict[str, list[tuple[str, str]]]
    #: Specific patterns (a trip, the causes of an event) win over generic ones (a summary).
    priority: float = 1.0
    #: Phrases after which the subject starts ("the causes of X" -> "X").
    subject_after: tuple[str, ...] = ()

    def steps_in(self, language: str | None) -> list[tuple[str, str]]:
        return self.steps.get(language or "en") or self.steps["en"]


@functools.cache
def _library() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (asset_path("planner") / "patterns.json").read_text(encoding="utf-8")
    )
    return data


@functools.cache
def patterns() -> tuple[Pattern, ...]:
    """The pattern library, read once."""
    data = _library()
    return tuple(
        Pattern(
            name=item["name"],
            description=item["description"],
            triggers=tuple(t.casefold() for t in item["triggers"]),
            steps={lang: [(s[0], s[1]) for s in steps] for lang, steps in item["steps"].items()},
            priority=float(item.get("priority", 1.0)),
            subject_after=tuple(p.casefold() for p in item.get("subject_after", [])),
        )
        for item in data["patterns"]
    )


def _padded(text: str) -> str:
    return " " + " ".join(re.findall(r"[\w'’-]+|[?]", text.casefold())) + " "


def classify(task: str) -> Pattern | None:
    """The pattern whose trigger words best match ``task``, or None when none matches."""
    text = _padded(task)
    best: tuple[float, int, int, int] | None = None
    chosen: Pattern | None = None
    for order, pattern in enumerate(patterns()):
        hits = [t for t in pattern.triggers if _padded(t) in text]
        if not hits:
            continue
        # A specific pattern beats a generic one ("Summarise the causes of ..." explains causes);
        # then the longest trigger ("study plan" over "study"); then where the first trigger
        # appears ("Compare ... to plan ..." is a comparison); then how many matched.
        first = min(text.index(_padded(t)) for t in hits)
        key = (pattern.priority, max(len(t) for t in hits), -first, len(hits))
        if best is None or key > best:
            best, chosen = key, pattern
        del order
    return chosen


@functools.cache
def _leading_verbs() -> frozenset[str]:
    return frozenset(v.casefold() for v in _library().get("leading_verbs", []))


def subject_of(task: str) -> str:
    """The task without its leading verb and final punctuation: what the steps are about."""
    text = " ".join(task.split()).rstrip(" .!?")
    first, _, rest = text.partition(" ")
    if first.casefold() in _leading_verbs() and rest.strip():
        return rest.strip()
    return text


def pattern_subject(pattern: Pattern, task: str) -> str:
    """What the pattern's steps are about: the task's subject, cut after a pattern phrase."""
    subject = subject_of(task)
    folded = subject.casefold()
    for phrase in sorted(pattern.subject_after, key=len, reverse=True):
        at = folded.find(phrase)
        if at >= 0 and subject[at + len(phrase) :].strip():
            return subject[at + len(phrase) :].strip()
    return subject


def skeleton_steps(pattern: Pattern, task: str, language: str | None) -> list[tuple[str, str]]:
    """The pattern's steps for ``task``: (title, instruction) with the subject filled in."""
    subject = pattern_subject(pattern, task)
    filled = []
    for title, text in pattern.steps_in(language):
        if "{subject}" in text:
            filled.append((title, text.replace("{subject}", subject)))
        else:  # every step names what it is about, so none reads as off-topic on its own
            filled.append((title, f"{text.rstrip('.')} ({subject})."))
    return filled
