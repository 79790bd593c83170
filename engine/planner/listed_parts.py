"""When the task names its own parts, those parts are the plan.

"Write a launch plan covering market research, pricing, channels and a timeline" already says
what the steps are; asking a small model to rediscover them loses some and invents others. Three
shapes are recognised, in any of Arbor's languages: numbered or bulleted lines; inline numbering
("(1) ..., (2) ..."); and an enumeration of three or more items ("A, B, C and D") after a cue
("covering", "including", a colon...). Items longer than a short phrase are not parts but
prose, and the task is left to the planner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Most words an enumerated item may have; longer ones are clauses, not parts.
MAX_ITEM_WORDS = 9
MAX_ITEM_CHARS = 80
MIN_PARTS = 2
#: Inline enumerations need this many items (two items are often "X and Y" prose).
MIN_INLINE_PARTS = 3
MAX_PARTS = 8

_LINE_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•·–])\s+(?P<item>\S.*?)\s*$")
_INLINE_NUMBER = re.compile(r"(?:^|\s)\(?(\d{1,2})[.)]\s+")
# Words that introduce the list of parts, in Arbor's languages.
_CUES = (
    r"covering|including|includes|include|with sections on|with|such as|namely|on|about|by|"
    r"couvrant|comprenant|incluant|avec|sur|notamment|"
    r"mit|über|einschließlich|inklusive|zu|"
    r"cubriendo|que cubra|incluyendo|con|sobre|"
    r"che copra|includendo|comprendente|con|su|"
    r"cobrindo|incluindo|com|sobre|"
    r"met|over|inclusief"
)
_CUE = re.compile(rf"(?:\b(?:{_CUES})\b\s*:?|:)\s+", re.IGNORECASE)
_LAST_JOIN = re.compile(r"\s*,?\s+(?:and|or|&|et|ou|und|oder|y|o|e|en|of)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class ListedParts:
    """The task's own parts and the text before them (what the parts belong to)."""

    head: str
    parts: list[str]


def _clean(item: str) -> str:
    return item.strip().strip(" .;,:").strip()


def _acceptable(items: list[str], minimum: int) -> bool:
    if not minimum <= len(items) <= MAX_PARTS:
        return False
    if len({i.casefold() for i in items}) != len(items):
        return False
    return all(0 < len(i.split()) <= MAX_ITEM_WORDS and len(i) <= MAX_ITEM_CHARS for i in items)


def _from_lines(task: str) -> ListedParts | None:
    lines = task.splitlines()
    items = [m.group("item") for line in lines if (m := _LINE_ITEM.match(line))]
    items = [_clean(i) for i in items if _clean(i)]
    if not _acceptable(items, MIN_PARTS):
        return None
    head = " ".join(line.strip() for line in lines if not _LINE_ITEM.match(line)).strip()
    return ListedParts(_clean(head), items)


def _from_inline_numbers(task: str) -> ListedParts | None:
    marks = list(_INLINE_NUMBER.finditer(task))
    numbers = [int(m.group(1)) for m in marks]
    if len(marks) < MIN_PARTS or numbers != list(range(1, len(marks) + 1)):
        return None
    items = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following is not None else len(task)
        items.append(_clean(_LAST_JOIN.sub(" ", task[mark.end() : end]).strip()))
    # The last item runs to the end of the task; keep its first sentence only.
    items[-1] = _clean(re.split(r"[.!?](?:\s|$)", items[-1])[0])
    if not _acceptable(items, MIN_PARTS):
        return None
    return ListedParts(_clean(task[: marks[0].start()]), items)


_JOIN_AT_START = re.compile(r"^(?:and|or|&|et|ou|und|oder|y|o|e|en|of)\s+", re.IGNORECASE)


def _split_enumeration(text: str) -> list[str]:
    """ "A, B, C and D" -> [A, B, C, D]; the list ends at its first "and" (or ", and D").

    What follows the last item ("..., and recommend one") is a new clause, not a part.
    """
    text = re.split(r"[.!?;](?:\s|$)", text)[0]  # the enumeration ends with its sentence
    items: list[str] = []
    for piece in (p.strip() for p in re.split(r"\s*,\s*", text)):
        if not piece:
            continue
        if _JOIN_AT_START.match(piece):  # Oxford comma: ", and D" is the last item
            items.append(_JOIN_AT_START.sub("", piece))
            break
        halves = _LAST_JOIN.split(piece, maxsplit=1)
        items.extend(halves)
        if len(halves) == 2:  # "C and D": the list ends here
            break
    else:
        return []  # no "and": a run of commas is prose, not a list
    return [_clean(i) for i in items if _clean(i)]


def _from_enumeration(task: str) -> ListedParts | None:
    best: ListedParts | None = None
    for cue in _CUE.finditer(task):
        items = _split_enumeration(task[cue.end() :])
        if _acceptable(items, MIN_INLINE_PARTS):
            head = _clean(task[: cue.start()])
            if head and (best is None or len(items) > len(best.parts)):
                best = ListedParts(head, items)
    return best


def listed_parts(task: str) -> ListedParts | None:
    """The parts ``task`` lists itself, or None when it lists none."""
    text = task.strip()
    return _from_lines(text) or _from_inline_numbers(text) or _from_enumeration(text)
