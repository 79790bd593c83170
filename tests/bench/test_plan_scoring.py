"""bench/plan_scoring.py: each plan metric can pass and fail on hand-made plans."""

from __future__ import annotations

import json
from pathlib import Path

from bench.plan_scoring import (
    aspect_coverage,
    meets,
    near_duplicate_pairs,
    off_topic_subtasks,
    percentile,
    score_plan,
    summarise,
)

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "plan_tasks.jsonl"
LAUNCH = {
    "id": "t",
    "language": "en",
    "task": "Write a launch plan covering market research, pricing, channels and a timeline.",
    "vague": False,
    "listed_parts": True,
    "aspects": [
        {"name": "market research", "keywords": ["market", "research", "survey"]},
        {"name": "pricing", "keywords": ["pric", "cost"]},
        {"name": "channels", "keywords": ["channel", "advertis"]},
        {"name": "timeline", "keywords": ["timeline", "schedule", "week"]},
    ],
}


def st(title: str, instruction: str = "") -> dict[str, str]:
    return {"title": title, "instruction": instruction}


GOOD = [
    st("Market research", "Survey 20 potential customers."),
    st("Pricing", "Set prices against three competitors."),
    st("Channels", "Choose advertising channels."),
    st("Timeline", "Write a week-by-week schedule."),
]


def test_coverage_counts_keywords_with_accents_and_stems() -> None:
    assert all(aspect_coverage(GOOD, LAUNCH["aspects"]).values())
    partial = aspect_coverage(GOOD[:2], LAUNCH["aspects"])
    assert partial == {
        "market research": True,
        "pricing": True,
        "channels": False,
        "timeline": False,
    }
    french = [{"name": "étude", "keywords": ["étude"]}]
    assert aspect_coverage([st("Etude de marche")], french) == {"étude": True}
    assert not any(aspect_coverage([st("Oprice")], [{"name": "p", "keywords": ["pric"]}]).values())


def test_off_topic_subtask_is_found() -> None:
    plan = [*GOOD, st("Bake a chocolate cake", "Mix flour, sugar and eggs.")]
    assert off_topic_subtasks(LAUNCH["task"], plan, LAUNCH["aspects"], "en") == [4]
    assert off_topic_subtasks(LAUNCH["task"], GOOD, LAUNCH["aspects"], "en") == []


def test_near_duplicates_are_found() -> None:
    twins = [
        st("Research the market", "Research the market for the product."),
        st("Market research", "Research the market for the product."),
    ]
    assert near_duplicate_pairs(twins, "en") == [(0, 1)]
    assert near_duplicate_pairs(GOOD, "en") == []


def test_fallback_and_vague() -> None:
    one_node = score_plan(LAUNCH, [], node_count=1, clarified=False)
    assert one_node["fallback"] and one_node["aspects_covered"] == 0
    assert not one_node["covers_all_or_all_but_one"]
    vague = {
        "id": "v",
        "language": "en",
        "task": "x",
        "vague": True,
        "listed_parts": False,
        "aspects": [],
    }
    assert score_plan(vague, [], node_count=1, clarified=True)["vague_handled"]
    assert not score_plan(vague, [], node_count=1, clarified=False)["vague_handled"]


def test_summary_and_targets_can_fail() -> None:
    good = score_plan(LAUNCH, GOOD, node_count=5, clarified=False) | {"seconds": 2.0}
    bad = score_plan(LAUNCH, [st("Cake", "Bake a cake.")], node_count=2, clarified=False) | {
        "seconds": 40.0
    }
    summary = summarise([good, bad])
    assert summary["covers_all_or_all_but_one"] == 0.5
    assert summary["plans_without_off_topic"] == 0.5
    assert meets("covers_all_or_all_but_one", 0.5) is False
    assert meets("covers_all_or_all_but_one", 0.8) is True
    assert meets("p90_s", summary["p90_s"]) is False
    assert meets("median_s", 10.0) is True
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9.1


def test_dataset_is_well_formed() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    assert sum(r["vague"] for r in rows) >= 5
    assert len({r["language"] for r in rows}) >= 5
    for r in rows:
        if r["vague"]:
            assert r["aspects"] == [], r["id"]
            continue
        assert 3 <= len(r["aspects"]) <= 5, r["id"]
        assert all(a["keywords"] for a in r["aspects"]), r["id"]
        # the task alone, as one subtask, is never off-topic
        assert off_topic_subtasks(r["task"], [st(r["task"])], r["aspects"], r["language"]) == []
