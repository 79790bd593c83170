"""Generated datasets (``gym:FAMILY``): reproducible, levelled, scored by their own family."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets import asset_path
from engine.errors import DatasetError, EvaluationError
from engine.run.budget import RunCaps
from engine.tune.checking import CheckerConfig, check_answer
from engine.tune.datasets import (
    Dataset,
    Example,
    GeneratedSpec,
    few_shot_examples,
    generate_dataset,
    parse_levels,
)
from engine.tune.datasets.generated import LADDERS, generated_families, level_config
from engine.tune.datasets.plans import few_shot_plan, plan_name
from engine.tune.evaluation import PlanConfiguration, ThreadRunner, evaluate


def test_the_same_spec_gives_the_same_examples_and_another_seed_others():
    first = generate_dataset(GeneratedSpec("word_sorting", 3, (1, 2), 5))
    again = generate_dataset(GeneratedSpec("word_sorting", 3, (1, 2), 5))
    other = generate_dataset(GeneratedSpec("word_sorting", 4, (1, 2), 5))
    assert [e.model_dump() for e in first.examples] == [e.model_dump() for e in again.examples]
    assert not {e.input for e in first.examples} & {e.input for e in other.examples}
    assert [e.id for e in first.examples][:2] == ["L1-1", "L1-2"]
    assert [e.difficulty for e in first.examples] == [1] * 5 + [2] * 5
    assert first.name == "gym:word_sorting" and "seed=3" in first.source
    assert "Apache-2.0" in (first.licence or "")


def test_a_levels_examples_do_not_depend_on_the_other_levels_asked_for():
    alone = generate_dataset(GeneratedSpec("chain_sum", 5, (2,), 6))
    together = generate_dataset(GeneratedSpec("chain_sum", 5, (1, 2, 3), 6))
    level_two = [e for e in together.examples if e.difficulty == 2]
    assert [e.input for e in alone.examples] == [e.input for e in level_two]


def test_neighbouring_seeds_and_levels_never_repeat_an_example():
    # reasoning-gym draws example i of seed s from Random(s + i): seeds 0 and 1 would share
    # all but one example if the seed were passed through as it is.
    inputs = [
        e.input
        for seed in (0, 1, 2)
        for e in generate_dataset(GeneratedSpec("word_sorting", seed, (1, 2, 3), 30)).examples
    ]
    assert len(set(inputs)) == len(inputs)
    shots = {e.input for e in few_shot_examples("word_sorting", (1, 2, 3), 3)}
    assert not shots & set(inputs)


def test_levels_follow_the_ladder():
    dataset = generate_dataset(GeneratedSpec("word_sorting", 0, (1, 3, 5), 4))
    for example in dataset.examples:
        words = LADDERS["word_sorting"][(example.difficulty or 0) - 1]["min_words"]
        assert len(example.expected.split(", ")) == words
    sums = generate_dataset(GeneratedSpec("chain_sum", 0, (1, 3), 4))
    for example in sums.examples:
        terms = example.input.rstrip("=").split(":")[-1]
        assert terms.count("+") + terms.count(" - ") + 1 == (2 if example.difficulty == 1 else 4)


def test_families_without_a_ladder_use_their_curriculum_and_harder_levels_are_larger():
    easy, hard = level_config("gcd", 1), level_config("gcd", 4)
    assert easy != hard
    assert hard["max_value"] > easy["max_value"]
    dataset = generate_dataset(GeneratedSpec("gcd", 1, (1,), 3))
    assert all(e.expected.isdigit() for e in dataset.examples)
    families = generated_families()
    assert families[:2] == ["word_sorting", "chain_sum"]
    assert "gcd" in families and "composite" not in families  # no levels to generate from


def test_the_familys_own_scorer_decides_and_partial_credit_is_wrong():
    dataset = generate_dataset(GeneratedSpec("word_sorting", 2, (3,), 3))
    example = dataset.examples[0]
    assert dataset.scorer is not None
    checker = CheckerConfig(kind="dataset")

    def score(answer: str) -> float:
        assert dataset.scorer is not None
        return dataset.scorer(answer, example)

    right = check_answer(f" {example.expected}\n", example.expected, checker, score=score)
    assert right.correct and "1.00" in right.detail
    words = example.expected.split(", ")
    swapped = ", ".join([words[1], words[0], *words[2:]])
    partly = check_answer(swapped, example.expected, checker, score=score)
    assert not partly.correct and 0 < score(swapped) < 1
    assert not check_answer("no idea", example.expected, checker, score=score).correct


def test_the_dataset_checker_needs_a_dataset_with_a_scorer():
    plain = Dataset("plain", [Example(id="1", input="q", expected="a")], "test")
    plan = few_shot_plan("chain_sum")
    configuration = PlanConfiguration(name="p", plan=plan, caps=RunCaps())
    with pytest.raises(EvaluationError, match="needs a dataset with its own scorer"):
        evaluate(plain, [configuration], CheckerConfig(kind="dataset"), runner=ThreadRunner())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GeneratedSpec("word_sortng"), "Did you mean word_sorting"),
        (GeneratedSpec("Robert'); DROP"), "No generated dataset family"),
        (GeneratedSpec("chain_sum", levels=(0,)), "from 1 to 5"),
        (GeneratedSpec("chain_sum", levels=()), "from 1 to 5"),
        (GeneratedSpec("chain_sum", per_level=0), "Examples per level"),
        (GeneratedSpec("chain_sum", per_level=1001), "Examples per level"),
        (GeneratedSpec("chain_sum", seed=-1), "The seed must be"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(DatasetError, match=message) as caught:
        generate_dataset(spec)
    assert "\n" not in str(caught.value)


def test_level_lists_parse():
    assert parse_levels("2") == (2,)
    assert parse_levels("1-3") == (1, 2, 3)
    assert parse_levels("5, 1") == (1, 5)
    assert parse_levels("1-2,2-4") == (1, 2, 3, 4)
    for bad in ("", "0", "6", "3-1", "1--2", "a", "1.5", "99999999999"):
        with pytest.raises(DatasetError):
            parse_levels(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.digits + ",- x.", max_size=12) | st.text(max_size=12))
def test_any_level_text_parses_to_levels_1_to_5_or_is_refused(text):
    try:
        levels = parse_levels(text)
    except DatasetError as exc:
        assert "\n" not in str(exc)
    else:
        assert levels and all(1 <= level <= 5 for level in levels)
        assert list(levels) == sorted(set(levels))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30))
def test_any_family_name_is_generated_or_refused_in_one_line(name):
    try:
        dataset = generate_dataset(GeneratedSpec(name, 0, (1,), 1))
    except DatasetError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(dataset) == 1


def test_shipped_plans_are_what_few_shot_plan_makes():
    for family in ("word_sorting", "chain_sum"):
        path = asset_path("examples") / "eval_plans" / f"{plan_name(family)}.json"
        shipped = json.loads(path.read_text(encoding="utf-8"))
        assert shipped == json.loads(few_shot_plan(family).to_json())


def test_the_few_shot_plan_feeds_each_node_into_the_next_and_never_shows_the_answer():
    from engine.prompts import node_messages
    from engine.tune.runners import plan_for_input

    dataset = generate_dataset(GeneratedSpec("word_sorting", 0, (1, 2, 3), 4))
    template = few_shot_plan("word_sorting")
    assert template.execution_order() == ["draft", "check", "final"]
    for example in dataset.examples:
        plan = plan_for_input(template, example.input)
        outputs = {"draft": "DRAFT-OUT", "check": "CHECK-OUT"}
        prompts = {
            node.id: node_messages(plan, node, outputs)[0]["content"]
            for node, _ in plan.iter_nodes()
        }
        question = " ".join(example.input.split())
        for prompt in prompts.values():
            assert prompt.rstrip().endswith(":")
            assert f"Q: {question}\n" in prompt
            # The answer to this question appears only if a worked example has the same answer.
            assert prompt.count(f": {example.expected}\n") <= prompt.count("\n\n")
        assert "First answer: DRAFT-OUT\nCorrect answer:" in prompts["check"]
        assert "Answer 1: DRAFT-OUT\nAnswer 2: CHECK-OUT\nFinal answer:" in prompts["final"]


def test_a_report_splits_by_level_with_its_own_frontier_and_correlation():
    from datetime import UTC, datetime

    from engine.tune.metrics import (
        EvaluationReport,
        ExampleOutcome,
        level_failure_correlation,
        summarise,
    )

    def outcome(config: str, level: int, correct: bool, tokens: int) -> ExampleOutcome:
        return ExampleOutcome(
            config, f"L{level}", "r", "x", "y", correct, "", tokens, 0.0, 0.1, False,
            difficulty=level,
        )  # fmt: skip

    cheap = [outcome("cheap", 1, True, 10), outcome("cheap", 2, False, 10)]
    dear = [outcome("dear", 1, True, 40), outcome("dear", 2, True, 40)]
    report = EvaluationReport(
        "e", "gym:x", CheckerConfig(kind="dataset"),
        [summarise("cheap", cheap), summarise("dear", dear)],
        datetime.now(UTC), None, "completed",
    )  # fmt: skip
    assert report.difficulty_levels() == [1, 2] and report.cost_unit() == "tokens"
    rows = {(r["difficulty"], r["configuration"]): r for r in report.level_rows()}
    assert rows[1, "cheap"]["accuracy"] == 1.0 and rows[2, "cheap"]["accuracy"] == 0.0
    # Level 1: both right, so only the cheap one is on the (token) frontier; level 2: both.
    assert rows[1, "cheap"]["on_frontier"] and not rows[1, "dear"]["on_frontier"]
    assert rows[2, "cheap"]["on_frontier"] and rows[2, "dear"]["on_frontier"]
    assert report.at_level(2).dataset == "gym:x, level 2"
    correlation = level_failure_correlation(report)
    assert correlation["cheap"] == pytest.approx(1.0) and correlation["dear"] is None


def test_a_generator_that_fails_is_a_one_line_error(monkeypatch):
    from types import SimpleNamespace

    from engine.tune.datasets import generated

    def create_dataset(*args, **kwargs):
        raise AssertionError("min_words must be\n  at most max_words")

    broken = SimpleNamespace(
        DATASETS={"word_sorting": None}, CURRICULA={}, create_dataset=create_dataset
    )
    monkeypatch.setattr(generated, "_reasoning_gym", lambda: broken)
    with pytest.raises(DatasetError) as caught:
        generate_dataset(GeneratedSpec("word_sorting", 0, (1,), 2))
    assert str(caught.value) == (
        "gym:word_sorting level 1 cannot be generated: min_words must be at most max_words"
    )
