"""The base-model planner: listed parts, vague tasks, patterns, candidate scores, real samples."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.language import detect_language
from engine.models.base import Backend, ChatMessage, Completion, Usage
from engine.plan import GenerationConfig, ModelRef, Plan
from engine.planner.base_planner import (
    DEFAULT_SAMPLES,
    parse_numbered_steps,
    pick_examples,
    planning_prompt,
)
from engine.planner.decompose import decompose
from engine.planner.expand import expand_node, node_task_text
from engine.planner.listed_parts import listed_parts
from engine.planner.patterns import classify, patterns, skeleton_steps, subject_of
from engine.planner.scoring import off_topic_steps, score_steps, total_score
from engine.planner.vague import clarification_for

LAUNCH = (
    "Write a launch plan for a vegan bakery covering market research, pricing, channels "
    "and a timeline"
)


class SampledSteps(Backend):
    """Answers each sample with the next scripted continuation (after the prompt's "1.")."""

    label = "scripted-base"

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.prompts: list[str] = []

    def complete(self, messages: list[ChatMessage], config: GenerationConfig, **_: Any):
        raise AssertionError("the base planner samples in one batched call")

    def complete_samples(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        seeds: list[int | None],
        *,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        self.prompts.append(messages[-1]["content"])
        assert config.prompt_format == "completion" and config.stop
        return [
            Completion(self.texts[i % len(self.texts)], Usage(50, 20), 0.1, self.label, "stop")
            for i in range(len(seeds))
        ]


# -- listed parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "parts"),
    [
        (LAUNCH, ["market research", "pricing", "channels", "a timeline"]),
        (
            "Prepare the quarterly report:\n1. Collect sales data\n2. Chart revenue\n3. Summarise",
            ["Collect sales data", "Chart revenue", "Summarise"],
        ),
        ("Do this: (1) read the paper, (2) list its claims, (3) check each claim.", None),
        (
            "Rédige un plan de lancement couvrant l'étude de marché, les prix, les canaux et "
            "le calendrier",
            ["l'étude de marché", "les prix", "les canaux", "le calendrier"],
        ),
        (
            "Erstelle einen Businessplan mit Marktanalyse, Finanzplan, Marketing und Personal",
            ["Marktanalyse", "Finanzplan", "Marketing", "Personal"],
        ),
        (
            "Compare two laptops for a student by battery life, weight and price, and recommend "
            "one.",
            ["battery life", "weight", "price"],
        ),
    ],
)
def test_listed_parts_are_found_in_several_shapes_and_languages(task, parts):
    found = listed_parts(task)
    assert found is not None
    if parts is not None:
        assert found.parts == parts
    else:
        assert found.parts == ["read the paper", "list its claims", "check each claim"]


@pytest.mark.parametrize(
    "task",
    [
        "Summarise the causes of the French Revolution",
        "Compare Python and Rust for a command-line tool",
        "I want tea, but I also want coffee, and then sleep because I am tired today.",
    ],
)
def test_prose_is_not_a_list_of_parts(task):
    assert listed_parts(task) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_listed_parts_never_crash_and_only_return_words_of_the_task(task):
    found = listed_parts(task)
    if found is not None:
        assert 2 <= len(found.parts) <= 8
        folded = " ".join(task.split()).casefold()
        assert all(" ".join(part.split()).casefold() in folded for part in found.parts)


# -- vague tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["x", "help", "do it", "stuff", "?", "aide-moi", "Hilfe bitte"])
def test_vague_tasks_get_a_clarification_with_example_rewrites(task):
    clarification = clarification_for(task)
    assert clarification is not None
    message, examples = clarification
    assert "more detail" in message and len(examples) >= 2


def test_a_name_alone_seeds_the_example_rewrites():
    _, examples = clarification_for("Tokyo")  # type: ignore[misc]
    assert all("Tokyo" in example for example in examples)


@pytest.mark.parametrize(
    "task", ["Plan a trip to Lisbon", "Write a limerick", "Résume la Révolution française"]
)
def test_short_but_clear_tasks_are_not_vague(task):
    assert clarification_for(task) is None


def test_a_vague_task_gets_the_clarification_without_any_model_call():
    backend = SampledSteps("should not be called")
    result = decompose("help", backend=backend, style="base")
    assert result.needs_detail and result.clarification is not None
    assert result.calls == [] and backend.prompts == []
    assert result.plan.execution_order() == ["root"]


# -- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("Compare three vector databases for a small startup", "compare_recommend"),
        ("Estimate how many coffee cups are sold in Paris each day", "fermi_estimate"),
        ("Summarise the causes of the French Revolution", "explain_causes"),
        ("Summarise the plot of Hamlet", "research_summary"),
        ("Plan a three-day trip to Lisbon", "trip_plan"),
        ("Make a four-week study plan for statistics", "schedule"),
        ("Design a study on whether music helps concentration", "study_design"),
        ("Our signup page crashes on Safari: find and fix the bug", "find_fix_bug"),
        ("Should we migrate our servers to Kubernetes?", "decide_tradeoffs"),
        ("Résume les causes de la Révolution française", "explain_causes"),
        ("Vergleiche drei Cloud-Anbieter für ein kleines Team", "compare_recommend"),
        ("Calcola quanti pianoforti ci sono a Milano", "fermi_estimate"),
        ("Translate this poem into Latin", None),
    ],
)
def test_patterns_are_classified_by_trigger_words_in_several_languages(task, name):
    pattern = classify(task)
    assert (pattern.name if pattern else None) == name


def test_the_subject_of_a_causes_task_is_what_was_caused():
    pattern = classify("Summarise the main causes of the French Revolution")
    assert pattern is not None
    assert (
        skeleton_steps(pattern, "Summarise the main causes of the French Revolution", "en")[0][1]
        == "Describe the economic causes of the French Revolution."
    )


def test_every_pattern_has_english_steps_and_each_skeleton_step_names_the_subject():
    task = "Compare three vector databases for a small startup"
    assert subject_of(task) == "three vector databases for a small startup"
    for pattern in patterns():
        steps = skeleton_steps(pattern, task, "en")
        assert len(steps) >= 3
        readable = [f"{title}. {text}" for title, text in steps]
        assert off_topic_steps(readable, task, "en") == [], pattern.name


# -- scores ---------------------------------------------------------------------------------

TASK = "Summarise the causes of the French Revolution"


def test_an_off_topic_step_lowers_relevance():
    good = ["List the causes of the French Revolution", "Summarise the main causes"]
    bad = ["List the causes of the French Revolution", "Draw a map of the world"]
    assert score_steps(good, TASK, "en")["relevance"] == 1.0
    assert score_steps(bad, TASK, "en")["relevance"] == 0.5
    assert off_topic_steps(bad, TASK, "en") == [1]


def test_near_duplicates_lower_distinctness_and_listed_parts_drive_coverage():
    repeated = ["Explain the causes of the revolution", "Explain the causes of the revolution."]
    assert score_steps(repeated, TASK, "en")["distinct"] == 0.5  # repeated, but adds "explain"
    restating = ["The causes of the French Revolution", "Causes of the French Revolution"]
    assert score_steps(restating, TASK, "en")["distinct"] == 0.5  # neither adds a word
    lenses = ["Economic causes of the French Revolution", "Social causes of the French Revolution"]
    assert score_steps(lenses, TASK, "en")["distinct"] == 1.0  # same subject, different lens
    parts = ["market research", "pricing", "channels"]
    half = ["Do the market research for the bakery", "Set the pricing"]
    assert score_steps(half, LAUNCH, "en", parts=parts)["coverage"] == pytest.approx(2 / 3)


def test_steps_in_another_language_lower_the_language_score():
    french = ["Expliquer les causes de la Révolution française", "Résumer les causes principales"]
    english = ["Explain the causes of the French Revolution", "Summarise the main causes"]
    task = "Résume les causes de la Révolution française"
    assert score_steps(french, task, "fr")["language"] == 1.0
    assert score_steps(english, task, "fr")["language"] == 0.0
    assert total_score(score_steps(french, task, "fr")) > total_score(
        score_steps(english, task, "fr")
    )


# -- prompt and parsing ---------------------------------------------------------------------


def test_examples_are_in_the_task_language_and_the_prompt_ends_at_the_first_step():
    for language in ("fr", "de", "es", "it", "pt", "nl"):
        assert {e["language"] for e in pick_examples(language, None)} == {language}
    assert {e["language"] for e in pick_examples(None, None)} == {"en"}
    prompt = planning_prompt("Plan a garden party", pick_examples("en", None))
    assert prompt.endswith("Task: Plan a garden party\nSteps:\n1.")


def test_numbered_steps_are_parsed_repaired_and_bounded():
    text = " Find a venue\n2. Find a venue\n3. Plan a garden party\n4. Send the invitations\n5. Bu"
    steps, notes = parse_numbered_steps(text, truncated=True, restated=["Plan a garden party"])
    assert steps == ["Find a venue", "Send the invitations"]
    assert len(notes) == 3


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.booleans())
def test_parsing_any_continuation_never_crashes(text, truncated):
    steps, _ = parse_numbered_steps(text, truncated=truncated)
    assert len(steps) <= 6 and all(step.strip() for step in steps)


# -- decompose with scripted samples: the best candidate wins -------------------------------


def test_the_best_scored_candidate_wins_and_every_candidate_is_reported():
    backend = SampledSteps(
        " Draw a map of the world\n2. Write the names of the people\n3. Colour the map",
        " List the causes of the French Revolution\n2. Explain each cause of the revolution"
        "\n3. Summarise the causes in five sentences",
    )
    result = decompose(TASK, backend=backend, style="base")
    assert result.style == "base" and result.pattern == "explain_causes"
    assert len(result.calls) == DEFAULT_SAMPLES and len(backend.prompts) == 1
    assert len(result.candidates) == DEFAULT_SAMPLES + 1  # the samples and the skeleton
    chosen = result.candidates[result.chosen]  # type: ignore[index]
    assert chosen.total == max(c.total for c in result.candidates)
    map_plan = next(c for c in result.candidates if c.text.startswith(" Draw"))
    assert map_plan.total < chosen.total and map_plan.scores["relevance"] == 0.0
    assert result.plan.root.children[0].title.startswith(("List the causes", "Economic causes"))


def test_a_task_with_listed_parts_becomes_those_subtasks_without_a_model_call():
    backend = SampledSteps("should not be called")
    result = decompose(LAUNCH, backend=backend, style="base")
    assert backend.prompts == [] and result.calls == []
    titles = [c.title for c in result.plan.root.children]
    assert titles == ["Market research", "Pricing", "Channels", "A timeline"]
    assert all("vegan bakery" in c.instruction for c in result.plan.root.children)


# -- the real bundled model -----------------------------------------------------------------


def _steps(plan: Plan) -> list[str]:
    return [f"{c.title}. {c.instruction}" for c in plan.root.children]


@pytest.mark.model
def test_bundled_model_plans_a_french_task_in_french_and_on_topic(bundled_path):
    task = "Résume les causes de la Révolution française pour un exposé"
    result = decompose(task, ModelRef())
    assert result.style == "base" and result.language == "fr" and not result.fallback
    assert len(result.calls) == DEFAULT_SAMPLES
    assert off_topic_steps(_steps(result.plan), task, "fr") == []
    assert detect_language(" ".join(_steps(result.plan))) == "fr"
    assert sum(c.plan is not None for c in result.candidates) >= 2


@pytest.mark.model
def test_bundled_model_gets_listed_parts_and_vague_tasks_right(bundled_path):
    listed = decompose(LAUNCH, ModelRef())
    assert [c.title.casefold() for c in listed.plan.root.children] == [
        "market research",
        "pricing",
        "channels",
        "a timeline",
    ]
    assert decompose("x", ModelRef()).needs_detail


@pytest.mark.model
def test_bundled_model_expands_a_step_with_on_topic_children(bundled_path):
    plan = decompose(LAUNCH, ModelRef()).plan
    result = expand_node(plan, "s2", ModelRef())  # "Pricing"
    assert not result.fallback and result.style == "base", result.notes
    children = result.plan.node("s2").children
    assert 2 <= len(children) <= 6
    readable = [f"{c.title}. {c.instruction}" for c in children]
    # On topic for the step in its place: "Pricing (Write a launch plan for a vegan bakery)".
    assert off_topic_steps(readable, node_task_text(plan, "s2"), "en") == [], readable
