"""The Evaluate page's defaults per dataset and its estimate of calls, tokens and time."""

from __future__ import annotations

import json

import pytest

from app.services import eval_estimate, tuning
from app.services.eval_estimate import (
    ASSUMED_OUTPUT_TOKENS_PER_S,
    dataset_defaults,
    estimate_evaluation,
)
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.tune.evaluation import CheckerKind, load_dataset, shipped_datasets


def test_every_shipped_dataset_declares_a_checker_and_a_shipped_plan_that_fit():
    all_fits = dataset_defaults()
    generated = {name for name in all_fits if name.startswith("gym:")}
    fits = {name: fit for name, fit in all_fits.items() if name not in generated}
    assert set(fits) == set(shipped_datasets())
    plans = tuning.shipped_eval_plans()
    for fit in fits.values():
        assert fit.checker in CheckerKind.__args__  # type: ignore[attr-defined]
        assert fit.plan in plans
        plan = Plan.from_json(plans[fit.plan].read_text(encoding="utf-8"))
        assert len(plan.nodes()) == 1  # a one-node few-shot plan, not a workbench tree
    # Generated datasets: their family's scorer and the three-node plan written for them.
    assert generated == {"gym:word_sorting", "gym:chain_sum"}
    for name in generated:
        fit = all_fits[name]
        assert fit.checker == "dataset" and fit.plan == f"gym_{name[4:]}" and fit.plan in plans
        plan = Plan.from_json(plans[fit.plan].read_text(encoding="utf-8"))
        assert [node.id for node, _ in plan.iter_nodes()] == ["final", "draft", "check"]
    # Numeric answers get the numeric checker.
    for name, fit in fits.items():
        expected = [example.expected for example in load_dataset(shipped_datasets()[name]).examples]
        numeric = all(text.replace(".", "").lstrip("-").isdigit() for text in expected)
        assert (fit.checker == "numeric") == numeric, name


def test_a_missing_or_broken_defaults_file_means_no_defaults(tmp_path):
    assert dataset_defaults(tmp_path) == {}
    (tmp_path / "defaults.json").write_text("{oops")
    assert dataset_defaults(tmp_path) == {}
    (tmp_path / "defaults.json").write_text(json.dumps({"a": {"checker": "exact"}, "b": 3}))
    assert dataset_defaults(tmp_path) == {"a": eval_estimate.DatasetDefaults("exact", None)}


def _plan(children: int, max_tokens: int = 10) -> Plan:
    return Plan(
        task="t" * 30,
        root=Node(
            id="root",
            title="Root",
            instruction="Combine.",
            children=[
                Node(id=f"c{i}", title=f"Child {i}", instruction="Do it.") for i in range(children)
            ],
        ),
        default_generation=GenerationConfig(max_tokens=max_tokens),
    )


def test_calls_are_examples_times_nodes_times_samples_per_strategy():
    plan = _plan(2)
    caps = RunCaps()
    configurations = [
        (c.name, c.plan, c.caps) for c in tuning.configurations_for(plan, ["single", "sc5"], caps)
    ]
    estimate = estimate_evaluation(configurations, 4)
    # single: 3 nodes × 1 call; sc5: 3 nodes × 5 samples.
    assert [c.calls_per_example for c in estimate.configurations] == [3, 15]
    assert estimate.calls == 4 * (3 + 15)
    single, sc5 = estimate.configurations
    assert sc5.tokens_per_example == 5 * single.tokens_per_example
    # Each call at most its allocated output limit on top of its prompt.
    assert single.tokens_per_example >= 3 * 10
    assert estimate.assumed == ("bundled:gemma-3-270m",) and estimate.measured == ()


def test_time_comes_from_recorded_seconds_per_call_else_from_the_stated_assumption():
    plan = _plan(0, max_tokens=40)
    configurations = [("single", plan, RunCaps())]
    recorded = estimate_evaluation(
        configurations, 10, seconds_per_call={"bundled:gemma-3-270m": 0.5}
    )
    assert recorded.seconds == pytest.approx(10 * 0.5)
    assert recorded.measured == ("bundled:gemma-3-270m",)
    assert "recorded seconds per call" in recorded.sentence()
    assumed = estimate_evaluation(configurations, 10)
    # At least the output at the assumed speed, per example.
    assert assumed.seconds >= 10 * 40 / ASSUMED_OUTPUT_TOKENS_PER_S
    sentence = assumed.sentence()
    assert sentence.startswith("At most 10 calls, ")
    assert f"{ASSUMED_OUTPUT_TOKENS_PER_S:g} output" in sentence


def test_a_run_never_counts_more_tokens_than_its_cap_and_other_models_are_named():
    plan = _plan(3, max_tokens=200)
    plan.root.model = ModelRef(kind="remote", model="gpt-x", base_url="http://h/v1")
    capped = estimate_evaluation([("sc5", plan, RunCaps(total_tokens=500))], 2)
    assert capped.configurations[0].tokens_per_example == 500
    assert "gpt-x@http://h/v1" in capped.assumed
