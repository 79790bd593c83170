"""Scoring of plans for bench/plan_quality.py: aspect coverage, off-topic and near-duplicate
subtasks, one-node fallbacks, vague tasks handled, and the summary against issue 13's targets.

Pure functions over plain data (a subtask is ``{"title", "instruction"}``; a task is a row of
``bench/data/plan_tasks.jsonl``); no model. The subtasks of a plan are its nodes other than the
root: a one-node plan has none, so it covers no aspect (its single node restates the task, which
would otherwise "cover" every listed part for free).

* **aspect covered**: one of the aspect's keywords starts a word of some subtask's title +
  instruction (case-insensitive, accents folded: "pric" covers "Pricing", "etude" and "étude"
  are the same).
* **off-topic subtask**: it shares no content-word stem (``engine.language.content_stems``, in
  the task's language and in the subtask's own detected language) with the task, and contains no
  aspect keyword.
* **near-duplicate pair**: two subtasks whose stem sets have a Jaccard similarity of at least
  0.6.
* **fallback**: the plan has one node. **vague handled**: a vague task got a clarification.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

from bench.answer_scoring import fold, has_keyword

NEAR_DUPLICATE_JACCARD = 0.6

#: Issue 13's targets, checked by ``summarise``.
TARGETS = {
    "covers_all_or_all_but_one": ("≥", 0.80),
    "plans_without_off_topic": ("≥", 0.90),
    "vague_handled": ("≥", 1.0),
    "p90_s": ("≤", 30.0),
    "median_s": ("≤", 15.0),
}


def subtask_text(subtask: dict[str, str]) -> str:
    return f"{subtask.get('title', '')}\n{subtask.get('instruction', '')}"


def stems(text: str, language: str | None) -> set[str]:
    """Content-word stems of ``text`` in ``language`` and in its own detected language, folded."""
    from engine.language import content_stems, detect_language

    found = {fold(s) for s in content_stems(text, language or "en")}
    detected = detect_language(text)
    if detected and detected != language:
        found |= {fold(s) for s in content_stems(text, detected)}
    return found


def aspect_coverage(
    subtasks: Sequence[dict[str, str]], aspects: Sequence[dict[str, Any]]
) -> dict[str, bool]:
    """Each aspect's name -> whether some subtask covers it."""
    texts = [subtask_text(s) for s in subtasks]
    return {a["name"]: any(has_keyword(t, a["keywords"]) for t in texts) for a in aspects}


def off_topic_subtasks(
    task: str,
    subtasks: Sequence[dict[str, str]],
    aspects: Sequence[dict[str, Any]],
    language: str | None,
) -> list[int]:
    """Indices of the subtasks that share nothing with the task or its aspects."""
    task_stems = stems(task, language)
    keywords = [k for a in aspects for k in a["keywords"]]
    off = []
    for index, subtask in enumerate(subtasks):
        text = subtask_text(subtask)
        if stems(text, language) & task_stems:
            continue
        if keywords and has_keyword(text, keywords):
            continue
        off.append(index)
    return off


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_pairs(
    subtasks: Sequence[dict[str, str]], language: str | None
) -> list[tuple[int, int]]:
    sets = [stems(subtask_text(s), language) for s in subtasks]
    return [
        (i, j)
        for i, j in combinations(range(len(sets)), 2)
        if jaccard(sets[i], sets[j]) >= NEAR_DUPLICATE_JACCARD
    ]


def score_plan(
    item: dict[str, Any],
    subtasks: Sequence[dict[str, str]],
    *,
    node_count: int,
    clarified: bool,
) -> dict[str, Any]:
    """Every verdict for one task's plan. ``subtasks`` excludes the root node."""
    language = item.get("language")
    aspects = item.get("aspects") or []
    coverage = aspect_coverage(subtasks, aspects)
    missing = [name for name, ok in coverage.items() if not ok]
    off = off_topic_subtasks(item["task"], subtasks, aspects, language)
    return {
        "vague": bool(item.get("vague")),
        "vague_handled": bool(item.get("vague")) and clarified,
        "asked_detail": clarified,
        "fallback": node_count <= 1,
        "subtasks": len(subtasks),
        "aspects": len(aspects),
        "aspects_covered": len(aspects) - len(missing),
        "missing_aspects": missing,
        "covers_all_or_all_but_one": bool(aspects) and len(missing) <= 1,
        "covers_all": bool(aspects) and not missing,
        "off_topic": off,
        "near_duplicates": near_duplicate_pairs(subtasks, language),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return sum(values) / len(values) if values else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over scored rows (each ``score_plan``'s dict plus ``seconds``)."""
    clear = [r for r in rows if not r["vague"]]
    vague = [r for r in rows if r["vague"]]
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return {
        "tasks": len(rows),
        "clear_tasks": len(clear),
        "vague_tasks": len(vague),
        "mean_aspect_coverage": _share_mean(clear),
        "covers_all": _share(r["covers_all"] for r in clear),
        "covers_all_or_all_but_one": _share(r["covers_all_or_all_but_one"] for r in clear),
        "plans_without_off_topic": _share(not r["off_topic"] for r in clear),
        "off_topic_subtasks": sum(len(r["off_topic"]) for r in clear),
        "plans_with_near_duplicates": _share(bool(r["near_duplicates"]) for r in clear),
        "near_duplicate_pairs": sum(len(r["near_duplicates"]) for r in clear),
        "fallbacks": _share(r["fallback"] for r in clear),
        "clear_asked_detail": _share(r["asked_detail"] for r in clear),
        "vague_handled": _share(r["vague_handled"] for r in vague),
        "mean_subtasks": statistics.mean(r["subtasks"] for r in clear) if clear else None,
        "median_s": statistics.median(seconds) if seconds else None,
        "p90_s": percentile(seconds, 90),
    }


def _share_mean(rows: Sequence[dict[str, Any]]) -> float | None:
    values = [r["aspects_covered"] / r["aspects"] for r in rows if r["aspects"]]
    return statistics.mean(values) if values else None


def meets(metric: str, value: float | None) -> bool | None:
    """Whether ``value`` meets issue 13's target for ``metric`` (None: no target or no value)."""
    if metric not in TARGETS or value is None:
        return None
    op, bound = TARGETS[metric]
    return value >= bound if op == "≥" else value <= bound
