"""Scores for candidate plans that need no bigger model: Arbor's own test-time compute.

A weak planner's samples vary a lot; picking well among them is cheap if the scorer needs no
model. Each criterion is in 0..1, higher is better, and is computed on content-word stems in the
task's language (``engine.language``), so "launching" matches "launch" and "Révolution" matches
"révolutionnaire":

- relevance: share of steps that share a stem with the task (an off-topic step shares none);
- coverage: share of the parts the task lists that some step covers, or, when it lists none,
  share of the task's own stems that the plan mentions;
- distinct: what each step adds beyond the task's own words: the mean of (1 minus the share of
  step pairs whose added stems are near-duplicates, Jaccard >= 0.6) and (the share of steps
  that add any stem at all). Comparing the added words, not the whole step, keeps "economic
  causes of the French Revolution" and "social causes of ..." apart while "main causes of the
  First World War" and "... of the Second World War" count as one step repeated;
- language: share of steps written in the task's language (unknown counts as fine);
- size: 1 for 3 to 6 steps, 0.5 for 2, 0 otherwise.

The weights favour relevance, since an off-topic step is the failure an analyst notices first.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from engine.language import content_stems, detect_language

WEIGHTS: dict[str, float] = {
    "relevance": 0.4,
    "coverage": 0.25,
    "distinct": 0.15,
    "language": 0.1,
    "size": 0.1,
}
#: Step pairs whose stem sets overlap at least this much are near-duplicates.
NEAR_DUPLICATE_JACCARD = 0.6
#: Each repair the planner had to make to a candidate costs this much of its total.
REPAIR_PENALTY = 0.02


def comparable(text: str) -> str:
    """``text`` case-folded, whitespace collapsed, edge punctuation off: for "the same step"."""
    return " ".join(text.casefold().split()).strip(" .!?:;")


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_pairs(step_stems: Sequence[set[str]]) -> int:
    return sum(
        1
        for a, b in combinations(step_stems, 2)
        if a and b and jaccard(a, b) >= NEAR_DUPLICATE_JACCARD
    )


def off_topic_steps(steps: Sequence[str], task: str, language: str | None) -> list[int]:
    """Indices of steps that share no content-word stem with the task."""
    task_stems = content_stems(task, language)
    return [i for i, step in enumerate(steps) if not content_stems(step, language) & task_stems]


def score_steps(
    steps: Sequence[str],
    task: str,
    language: str | None,
    *,
    parts: Sequence[str] = (),
) -> dict[str, float]:
    """Each criterion's score for a plan whose steps read ``steps`` (title + instruction)."""
    if not steps:
        return dict.fromkeys(WEIGHTS, 0.0)
    task_stems = content_stems(task, language)
    step_stems = [content_stems(step, language) for step in steps]
    relevant = sum(1 for stems in step_stems if stems & task_stems)
    mentioned = set().union(*step_stems)
    if parts:
        part_stems = [content_stems(part, language) for part in parts]
        covered = sum(1 for stems in part_stems if not stems or stems & mentioned)
        coverage = covered / len(parts)
    else:
        coverage = len(task_stems & mentioned) / len(task_stems) if task_stems else 1.0
    added = [stems - task_stems for stems in step_stems]
    pairs = len(steps) * (len(steps) - 1) // 2
    unrepeated = 1.0 - near_duplicate_pairs(added) / pairs if pairs else 1.0
    adding = sum(1 for stems in added if stems) / len(steps)
    distinct = (unrepeated + adding) / 2
    if language is None:
        in_language = 1.0
    else:
        detected = [detect_language(step) for step in steps]
        in_language = sum(1 for d in detected if d in (None, language)) / len(steps)
    size = 1.0 if 3 <= len(steps) <= 6 else 0.5 if len(steps) == 2 else 0.0
    return {
        "relevance": relevant / len(steps),
        "coverage": coverage,
        "distinct": distinct,
        "language": in_language,
        "size": size,
    }


def total_score(scores: dict[str, float], repairs: int = 0) -> float:
    """The weighted sum candidates are ranked by, less a small cost per repair."""
    weighted = sum(WEIGHTS[name] * scores.get(name, 0.0) for name in WEIGHTS)
    return round(weighted - REPAIR_PENALTY * repairs, 4)
