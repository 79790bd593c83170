"""Is a task too vague to plan? Then say what is missing instead of inventing a plan.

A planner, given "x" or "help", still answers with a confident plan about something; the
analyst cannot tell it was made up. A task needs at least two words that carry meaning (not stop
words, not filler like "help", "stuff", "something") before it is planned. The message and the
example rewrites are data (``assets/planner/clarify.json``); an example reuses the task's one
meaningful word when it has one ("Tokyo" -> "Plan a three-day visit to Tokyo ...").
"""

from __future__ import annotations

import functools
import json
from typing import Any

from assets import asset_path
from engine.language import content_words

#: A task with fewer meaningful words than this gets a clarification, not a plan.
MIN_MEANINGFUL_WORDS = 2


@functools.cache
def _clarify_data() -> dict[str, Any]:
    return json.loads((asset_path("planner") / "clarify.json").read_text(encoding="utf-8"))


def meaningful_words(task: str) -> list[str]:
    """The task's words that say what to do or about what (stop words and filler left out)."""
    filler = set(_clarify_data()["vague_words"])
    # "aide-moi" and "help-me" are filler too: hyphenated words are judged part by part.
    parts = [p for w in content_words(task) for p in w.split("-")]
    return [w for w in parts if len(w) > 1 and w not in filler]


def clarification_for(task: str) -> tuple[str, list[str]] | None:
    """``(message, example rewrites)`` when ``task`` is too vague to plan, else None."""
    found = meaningful_words(task)
    if len(found) >= MIN_MEANINGFUL_WORDS:
        return None
    data = _clarify_data()
    names = [w.strip(".,;:!?") for w in task.split() if w.strip(".,;:!?")[:1].isupper()]
    names = [w for w in names if w.casefold() in found]
    if names:  # a name ("Tokyo") can seed examples; a common noun ("report") reads oddly
        examples = [e.replace("{word}", names[0]) for e in data["examples_with_word"]]
    else:
        examples = list(data["examples"])
    return data["message"], examples
