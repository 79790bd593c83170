"""Allocation search: the spaces, the searches' rules and quality, tables, and the LLM proposer.

Search quality is checked against recorded outcomes (a small table drawn here, and the shipped
simulated table) where the exhaustive optimum is known. The proposer's fallbacks are pure logic
and use a scripted in-process backend; one test runs the real bundled model as the proposer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ArborError, ModelCallFailed, PlanError
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import Node, Plan
from engine.plan.compute_config import SINGLE_CALL, StrategyConfig
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.tune.outcome_table import (
    MissingOutcome,
    Outcome,
    OutcomeTable,
    OutcomeTableError,
    TableEvaluator,
)
from engine.tune.search import (
    SEARCH_INSTRUCTIONS,
    NodeOption,
    SearchResult,
    SearchSpace,
    TrialResult,
    best_uniform,
    coordinate_descent,
    exhaustive,
    is_better,
    llm_guided_search,
    parse_proposal,
    proposal_prompt,
    proposal_schema,
    random_search,
    successive_halving,
)

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_TABLE = ROOT / "bench" / "data" / "outcome_table.json.gz"
SMALL_NODES = ("a", "b", "c")
SMALL_LABELS = ("cheap", "mid", "dear")
#: Per node, the success probability of each option: node b does best on the *mid* option.
SMALL_SKILL = {"a": (0.75, 0.85, 0.9), "b": (0.4, 0.9, 0.7), "c": (0.35, 0.6, 0.95)}
SMALL_PRICE = (1.0, 3.0, 9.0)


def small_space() -> SearchSpace:
    options = [
        NodeOption(
            label=label,
            model=ModelRef(kind="remote", base_url="http://test.invalid/v1", model=label),
            strategy=SINGLE_CALL,
            max_tokens=64 * (index + 1),
            cost_hint=SMALL_PRICE[index],
        )
        for index, label in enumerate(SMALL_LABELS)
    ]
    return SearchSpace(options={node: [o.model_copy() for o in options] for node in SMALL_NODES})


def small_table(seed: int = 3, n_examples: int = 20) -> OutcomeTable:
    """3 nodes × 3 options × 20 examples; a node succeeds when its draw is under its skill."""
    rng = random.Random(seed)
    space = small_space()
    draws = {(node, e): rng.random() for node in SMALL_NODES for e in range(n_examples)}
    table = OutcomeTable(space, n_examples, "usd", metadata={"simulated": True})
    for assignment in space.all_assignments():
        outcomes = []
        for e in range(n_examples):
            correct = all(draws[n, e] < SMALL_SKILL[n][i] for n, i in assignment.items())
            cost = sum(SMALL_PRICE[i] * (1 + 0.1 * rng.random()) for i in assignment.values())
            outcomes.append(Outcome(correct, round(cost, 6), int(cost * 100), round(cost, 3)))
        table.record(assignment, outcomes)
    return table


@pytest.fixture(scope="module")
def small() -> OutcomeTable:
    return small_table()


@pytest.fixture(scope="module")
def shipped() -> OutcomeTable:
    return OutcomeTable.load(SHIPPED_TABLE)


def mid_budget(table: OutcomeTable) -> float:
    costs = sorted(table.assignment_costs().values())
    return costs[len(costs) // 2]


def trial(accuracy: float, cost: float, **assignment: int) -> TrialResult:
    return TrialResult(assignment or {"a": 0}, accuracy, cost, 10.0, 0.1, 20)


def three_node_plan() -> Plan:
    children = [Node(id=node, title=f"step {node}") for node in SMALL_NODES]
    return Plan(
        task="t",
        root=Node(id="root", title="root", children=children),
        default_generation=GenerationConfig(temperature=0.3, max_tokens=100, stop=["END"]),
    )


# -- is_better, spaces ------------------------------------------------------------------------


def test_is_better_prefers_feasible_then_accuracy_then_lower_cost():
    budget = 1.0
    assert is_better(trial(0.1, 2.0), None, budget)
    assert is_better(trial(0.2, 0.9), trial(0.9, 1.1), budget)  # feasible beats infeasible
    assert not is_better(trial(0.9, 1.1), trial(0.2, 0.9), budget)
    assert is_better(trial(0.6, 0.9), trial(0.5, 0.1), budget)  # then accuracy
    assert is_better(trial(0.5, 0.4), trial(0.5, 0.5), budget)  # then the cheaper
    assert not is_better(trial(0.5, 0.5), trial(0.5, 0.5), budget)  # a tie is not better
    assert is_better(trial(0.5, 1.0), trial(0.9, 1.0 + 1e-6), budget)  # exactly the budget is ok


def test_space_size_describe_cheapest_and_refusals():
    space = small_space()
    assert space.size == 27
    assert space.cheapest() == {"a": 0, "b": 0, "c": 0}
    assert space.describe({"a": 2, "b": 1, "c": 0}) == {"a": "dear", "b": "mid", "c": "cheap"}
    with pytest.raises(ValueError, match="out of range"):
        space.check({"a": 3, "b": 0, "c": 0})
    with pytest.raises(ValueError, match="missing"):
        space.check({"a": 0, "b": 0})
    with pytest.raises(ValueError, match="no options"):
        SearchSpace(options={"a": []})
    with pytest.raises(ValueError, match="same label"):
        SearchSpace(options={"a": [space.options["a"][0], space.options["a"][0]]})


def test_from_choices_is_the_cartesian_product_per_node():
    plan = three_node_plan()
    models = [("small", ModelRef()), ("big", ModelRef(path="/models/big.gguf"))]
    strategies = [SINGLE_CALL, StrategyConfig(kind="self_consistency", samples=5)]
    space = SearchSpace.from_choices(plan, models, strategies, [128, 256], nodes=["b", "c"])
    assert space.nodes == ["b", "c"]
    assert [len(options) for options in space.options.values()] == [8, 8]
    assert space.options["b"][0].label == "small · single · 128"
    assert "big · self-consistency ×5 · 256" in space.labels()["c"]
    # Without a cost hint the cheapest option is the one with the fewest calls × tokens.
    assert space.options["b"][space.cheapest()["b"]].label == "small · single · 128"
    everything = SearchSpace.from_choices(plan, models[:1], strategies[:1], [64])
    assert everything.nodes == ["a", "b", "c", "root"]
    with pytest.raises(PlanError):
        SearchSpace.from_choices(plan, models, strategies, [64], nodes=["nope"])


def test_apply_sets_manual_overrides_on_a_copy_and_leaves_the_plan_untouched():
    plan = three_node_plan()
    before = plan.model_dump()
    space = small_space()
    applied = space.apply(plan, {"a": 2, "b": 1, "c": 0})
    assert plan.model_dump() == before
    b = applied.node("b")
    assert b.model == space.options["b"][1].model
    assert b.strategy == space.options["b"][1].strategy
    assert b.generation is not None and b.generation.max_tokens == 128
    # The rest of the generation settings come from what the node had (here the default).
    assert b.generation.temperature == 0.3 and b.generation.stop == ["END"]
    assert applied.node("a").generation.max_tokens == 192
    assert applied.node("root").model is None  # not searched, not touched
    applied.node("a").generation.stop.append("X")
    assert plan.default_generation.stop == ["END"]
    with pytest.raises(ValueError, match="out of range"):
        space.apply(plan, {"a": 5, "b": 0, "c": 0})


# -- outcome tables ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["table.json.gz", "table.json"])
def test_outcome_table_round_trips_through_a_file(tmp_path, small, name):
    path = small.save(tmp_path / name)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = OutcomeTable.load(path)
    assert loaded.to_dict() == small.to_dict()
    assert loaded.cost_unit == "usd" and loaded.metadata == {"simulated": True}
    assert loaded.option_labels == {node: list(SMALL_LABELS) for node in SMALL_NODES}
    assignment = {"a": 1, "b": 2, "c": 0}
    assert loaded.outcomes(assignment) == small.outcomes(assignment)


def _write(path: Path, payload: Any) -> Path:
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    return path


def test_corrupt_foreign_or_newer_tables_are_refused_with_a_clear_error(tmp_path, small):
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(OutcomeTableError, match="not an outcome table"):
        OutcomeTable.load(garbage)
    damaged = small.save(tmp_path / "damaged.json.gz")
    data = damaged.read_bytes()
    damaged.write_bytes(data[:40] + bytes(b ^ 0xFF for b in data[40:80]) + data[80:])
    with pytest.raises(OutcomeTableError, match="not an outcome table"):
        OutcomeTable.load(damaged)
    good = small.to_dict()
    with pytest.raises(OutcomeTableError, match="format is 'arbor-plan'"):
        OutcomeTable.load(_write(tmp_path / "plan.gz", {**good, "format": "arbor-plan"}))
    with pytest.raises(OutcomeTableError, match="Update Arbor"):
        OutcomeTable.load(_write(tmp_path / "new.gz", {**good, "version": 99}))
    short = json.loads(json.dumps(good))
    short["rows"][3]["cost"] = short["rows"][3]["cost"][:-1]
    with pytest.raises(OutcomeTableError, match="row 3"):
        OutcomeTable.load(_write(tmp_path / "short.gz", short))
    with pytest.raises(ArborError):  # one base class catches them all
        OutcomeTable.load(tmp_path / "missing.json.gz")


def test_table_evaluator_averages_counts_and_names_a_missing_assignment(small):
    evaluator = TableEvaluator(small)
    assignment = {"a": 0, "b": 1, "c": 2}
    rows = small.outcomes(assignment)
    result = evaluator(assignment, [0, 1, 2, 3])
    assert result.n_examples == 4 and evaluator.calls == 1
    assert result.accuracy == sum(o.correct for o in rows[:4]) / 4
    assert result.cost == pytest.approx(sum(o.cost for o in rows[:4]) / 4)
    assert evaluator(assignment).n_examples == 20 and evaluator.calls == 2
    partial = OutcomeTable(small.space, 20)
    partial.record(assignment, rows)
    with pytest.raises(MissingOutcome, match=r"no row for .*'a': 'cheap'") as caught:
        TableEvaluator(partial)({"a": 0, "b": 0, "c": 0})
    assert isinstance(caught.value, KeyError)
    with pytest.raises(MissingOutcome, match="outside"):
        evaluator(assignment, [25])


def test_shipped_table_is_simulated_complete_and_what_the_generator_writes(shipped):
    assert shipped.metadata["simulated"] is True
    assert "SIMULATED" in shipped.metadata["description"]
    assert shipped.complete and len(shipped) == 625 and shipped.n_examples == 60
    spec = importlib.util.spec_from_file_location(
        "make_table", ROOT / "bench/make_outcome_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_table().to_dict() == shipped.to_dict()


def test_shipped_mid_budget_optimum_is_not_a_uniform_allocation(shipped):
    budget = mid_budget(shipped)
    optimum = exhaustive(shipped.space, TableEvaluator(shipped), budget=budget).best
    uniform = best_uniform(shipped.space, TableEvaluator(shipped), budget=budget).best
    assert optimum is not None and uniform is not None
    assert len(set(optimum.assignment.values())) > 1
    assert uniform.accuracy < 0.95 * optimum.accuracy


# -- searches on recorded outcomes -------------------------------------------------------------

SearchFn = Callable[..., SearchResult]
SEARCHES: dict[str, SearchFn] = {
    "coordinate_descent": coordinate_descent,
    "successive_halving": successive_halving,
}


@pytest.mark.parametrize("method", SEARCHES)
@pytest.mark.parametrize("which", ["small", "shipped"])
def test_search_stays_within_max_trials_finds_a_feasible_best_and_beats_uniform(
    method, which, request
):
    table: OutcomeTable = request.getfixturevalue(which)
    budget = mid_budget(table)
    # 10% of the shipped space; a third of the small one (10% of 27 is fewer than uniform uses).
    max_trials = max(9, table.space.size // 10)
    evaluator = TableEvaluator(table)
    result = SEARCHES[method](table.space, evaluator, budget=budget, max_trials=max_trials)
    assert result.trials_used <= max_trials
    assert result.evaluations <= max_trials + 1e-9
    assert evaluator.calls == len(result.trials)  # every recorded trial was a real call
    assert result.best is not None and result.best.cost <= budget
    assert result.best.n_examples == table.n_examples
    uniform = best_uniform(table.space, TableEvaluator(table), budget=budget).best
    assert uniform is not None and result.best.accuracy >= uniform.accuracy
    # The same assignment never ran twice on the same examples.
    seen = [(tuple(t.assignment.values()), t.n_examples, t.note) for t in result.trials]
    full = [key[0] for key in seen if key[1] == table.n_examples]
    assert len(full) == len(set(full))


@pytest.mark.parametrize("method", SEARCHES)
def test_search_finds_95_percent_of_the_optimum_on_the_shipped_table(shipped, method):
    budget = mid_budget(shipped)
    optimum = exhaustive(shipped.space, TableEvaluator(shipped), budget=budget).best
    result = SEARCHES[method](
        shipped.space, TableEvaluator(shipped), budget=budget, max_trials=shipped.space.size // 10
    )
    assert optimum is not None and result.best is not None
    assert result.best.accuracy >= 0.95 * optimum.accuracy
    assert result.evaluations <= 0.1 * shipped.space.size


def test_exchanges_free_budget_an_early_node_holds(shipped):
    # One-node moves alone get stuck once 'extract' holds the large model at the mid budget.
    budget = mid_budget(shipped)
    plain = coordinate_descent(
        shipped.space, TableEvaluator(shipped), budget=budget, max_trials=62, exchanges=False
    )
    traded = coordinate_descent(
        shipped.space, TableEvaluator(shipped), budget=budget, max_trials=62
    )
    assert plain.best is not None and traded.best is not None
    assert plain.stop_reason == "converged" and plain.trials_used < 62
    assert shipped.space.describe(plain.best.assignment)["extract"].startswith("large")
    assert traded.best.accuracy > plain.best.accuracy
    assert any("exchange" in t.note for t in traded.trials)


def test_exhaustive_and_uniform_evaluate_what_they_say(small):
    budget = mid_budget(small)
    evaluator = TableEvaluator(small)
    result = exhaustive(small.space, evaluator, budget=budget)
    assert evaluator.calls == 27 and result.trials_used == 27
    feasible = [t for t in result.trials if t.cost <= budget]
    assert result.best is not None
    assert result.best.accuracy == max(t.accuracy for t in feasible)
    uniform = best_uniform(small.space, TableEvaluator(small), budget=budget)
    assert {tuple(set(t.assignment.values())) for t in uniform.trials} == {(0,), (1,), (2,)}
    mixed = SearchSpace(options={"a": small.space.options["a"], "b": small.space.options["a"][:2]})
    with pytest.raises(ValueError, match="same options"):
        best_uniform(mixed, evaluator, budget=budget)


def test_nothing_feasible_gives_no_best(small):
    result = coordinate_descent(small.space, TableEvaluator(small), budget=0.5, max_trials=10)
    assert result.best is None and len(result.trials) >= 1


def test_coordinate_descent_caches_moves_from_start_and_reports_each_trial(small):
    seen: list[TrialResult] = []
    evaluator = TableEvaluator(small)
    start = {"a": 2, "b": 2, "c": 2}
    result = coordinate_descent(
        small.space, evaluator, budget=1e9, max_trials=27, start=start, on_trial=seen.append
    )
    assert result.trials[0].assignment == start and result.trials[0].note == "start"
    assert seen == result.trials and evaluator.calls == len(result.trials)
    keys = [tuple(t.assignment.values()) for t in result.trials]
    assert len(keys) == len(set(keys))
    assert result.stop_reason == "converged"


def test_cancel_stops_a_search_between_trials(small):
    cancel = threading.Event()

    def stop_after_three(result: TrialResult) -> None:
        if len(calls) == 2:
            cancel.set()
        calls.append(result)

    calls: list[TrialResult] = []
    result = coordinate_descent(
        small.space,
        TableEvaluator(small),
        budget=1e9,
        max_trials=27,
        on_trial=stop_after_three,
        cancel=cancel,
    )
    assert result.stop_reason == "cancelled" and len(result.trials) == 3


def test_successive_halving_merges_rounds_and_runs_each_example_once(shipped):
    evaluator = TableEvaluator(shipped)
    result = successive_halving(
        shipped.space, evaluator, budget=mid_budget(shipped), max_trials=62, seed=1
    )
    assert any(t.n_examples < shipped.n_examples for t in result.trials)
    assert evaluator.example_lookups == sum(t.n_examples for t in result.trials)
    per_assignment: dict[tuple[int, ...], int] = {}
    for t in result.trials:
        key = tuple(t.assignment.values())
        per_assignment[key] = per_assignment.get(key, 0) + t.n_examples
    assert max(per_assignment.values()) == shipped.n_examples
    assert result.best is not None and result.best.n_examples == shipped.n_examples
    assert result.finalists[0] == result.best


# -- LLM-guided search --------------------------------------------------------------------------


class ScriptedBackend(Backend):
    """Answers with the next scripted text; an exception in the script is raised instead."""

    def __init__(self, script: Sequence[str | BaseException]):
        self.script = list(script)
        self.label = "scripted"
        self.prompts: list[str] = []
        self.schemas: list[dict[str, Any] | None] = []
        self.configs: list[GenerationConfig] = []

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        self.prompts.append(messages[-1]["content"])
        self.schemas.append(json_schema)
        self.configs.append(config)
        answer = self.script[min(len(self.prompts), len(self.script)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return Completion(answer, Usage(100, 20), 0.01, self.label, "stop")


def proposal(a: int, b: int, c: int, reason: str = "try it") -> str:
    return json.dumps({"assignment": {"a": a, "b": b, "c": c}, "reason": reason})


def test_llm_guided_uses_valid_proposals_and_starts_from_the_cheapest(small):
    backend = ScriptedBackend([proposal(1, 1, 1, "spend more"), proposal(1, 1, 2)])
    result = llm_guided_search(
        small.space, TableEvaluator(small), budget=1e9, max_trials=3, backend=backend
    )
    assert [t.assignment for t in result.trials] == [
        {"a": 0, "b": 0, "c": 0},
        {"a": 1, "b": 1, "c": 1},
        {"a": 1, "b": 1, "c": 2},
    ]
    assert result.trials[1].note == "llm proposal: spend more"
    assert len(backend.prompts) == 2  # no model call once the trials are spent
    assert "diminishing returns" in backend.prompts[0] and "1e+09" in backend.prompts[0]
    assert '{"a":1,"b":1,"c":1} -> accuracy' in backend.prompts[1]  # the history is shown
    assert all(config.max_tokens <= 160 for config in backend.configs)
    schema = backend.schemas[0]
    assert schema is not None
    inner = schema["properties"]["assignment"]
    assert inner["required"] == ["a", "b", "c"] and inner["additionalProperties"] is False
    assert inner["properties"]["b"]["minimum"] == 0 and inner["properties"]["b"]["maximum"] == 2
    assert schema["required"] == ["assignment"]


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        ("this is not json", "fallback: proposal invalid: not JSON"),
        (proposal(0, 7, 0), "fallback: proposal invalid: node 'b': option index 7 is out of range"),
        (json.dumps({"reason": "no assignment"}), "fallback: proposal invalid: no 'assignment'"),
        (proposal(0, 0, 0), "fallback: proposal already tried"),
        (ModelCallFailed("server said 500"), "fallback: model error: ModelCallFailed: server"),
        (RuntimeError("boom"), "fallback: model error: RuntimeError: boom"),
        (ValueError("bad request"), "fallback: model error: ValueError: bad request"),
    ],
)
def test_llm_guided_falls_back_to_a_mutation_of_the_best(small, answer, note):
    backend = ScriptedBackend([answer])
    evaluator = TableEvaluator(small)
    result = llm_guided_search(small.space, evaluator, budget=1e9, max_trials=6, backend=backend)
    assert len(result.trials) == 6 and evaluator.calls == 6
    assert result.stop_reason == "max_trials"
    keys = [tuple(t.assignment.values()) for t in result.trials]
    assert len(set(keys)) == len(keys)
    for earlier, fallback in zip(result.trials, result.trials[1:], strict=False):
        assert fallback.note.startswith(note)
        best = _best_before(result.trials, fallback, 1e9)
        changed = [n for n in SMALL_NODES if fallback.assignment[n] != best.assignment[n]]
        assert len(changed) == 1, (earlier, fallback)


def _best_before(trials: list[TrialResult], current: TrialResult, budget: float) -> TrialResult:
    best = None
    for t in trials[: trials.index(current)]:
        if is_better(t, best, budget):
            best = t
    assert best is not None
    return best


def test_llm_guided_never_exceeds_max_trials_and_stops_when_the_space_is_exhausted(small):
    backend = ScriptedBackend([proposal(2, 2, 2)])
    result = llm_guided_search(
        small.space, TableEvaluator(small), budget=1e9, max_trials=40, backend=backend, seed=5
    )
    assert len(result.trials) == 27 and result.stop_reason == "space exhausted"
    assert len(backend.prompts) == 26
    capped = llm_guided_search(
        small.space, TableEvaluator(small), budget=1e9, max_trials=4, backend=backend
    )
    assert len(capped.trials) == 4 and capped.trials_used == 4


def test_llm_guided_stops_when_cancelled_during_a_model_call(small):
    cancel = threading.Event()

    class CancellingBackend(ScriptedBackend):
        def complete(self, messages, config, **kwargs):  # type: ignore[override]
            assert kwargs["cancel"] is cancel  # a long call can stop promptly too
            cancel.set()
            return super().complete(messages, config, **kwargs)

    backend = CancellingBackend([proposal(1, 1, 1)])
    result = llm_guided_search(
        small.space,
        TableEvaluator(small),
        budget=1e9,
        max_trials=10,
        backend=backend,
        cancel=cancel,
    )
    assert result.stop_reason == "cancelled"
    assert len(result.trials) == 1 and len(backend.prompts) == 1


def test_proposal_prompt_has_insights_budget_and_history_best_first_within_its_budget():
    space = small_space()
    history = [
        TrialResult({"a": 0, "b": 0, "c": 0}, 0.2, 3.0, 10, 0.1, 20),
        TrialResult({"a": 2, "b": 2, "c": 2}, 0.9, 27.0, 10, 0.1, 20),
        TrialResult({"a": 1, "b": 1, "c": 1}, 0.7, 9.0, 10, 0.1, 20),
    ]
    text = proposal_prompt(space, history, 10.0)
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert ["0.700" in lines[0], "0.200" in lines[1], "OVER budget" in lines[2]] == [True] * 3
    assert "b: 0 = cheap; 1 = mid; 2 = dear" in text
    many = [TrialResult({"a": 0, "b": 0, "c": 0}, i / 30, 1.0, 10, 0.1, 20) for i in range(30)]
    short = proposal_prompt(space, many, 10.0, token_budget=200)
    assert len(short) // 3 <= 200 and "worse trials not shown" in short
    for insight in ("different models", "diminishing returns", "Early steps' budgets"):
        assert insight in SEARCH_INSTRUCTIONS


def test_parse_proposal_salvages_an_answer_cut_off_in_its_reason():
    space = small_space()
    cut = '{"assignment": {"a": 1, "b": 2, "c": 0}, "reason": "the plan node needs the mi'
    assert parse_proposal(cut, space) == ({"a": 1, "b": 2, "c": 0}, "")
    with pytest.raises(ValueError, match="not JSON"):
        parse_proposal('{"assignment": {"a": 1, "b"', space)
    assert proposal_schema(space)["properties"]["assignment"]["properties"]["c"]["enum"] == [
        0,
        1,
        2,
    ]


@pytest.mark.model
def test_real_bundled_model_proposes_valid_assignments_within_the_rules(bundled_path, small):
    from engine.models import backend_for

    backend = backend_for(ModelRef())
    budget = mid_budget(small)
    evaluator = TableEvaluator(small)
    result = llm_guided_search(
        small.space, evaluator, budget=budget, max_trials=4, backend=backend, seed=1
    )
    assert len(result.trials) == 4 and evaluator.calls == 4
    keys = [tuple(t.assignment.values()) for t in result.trials]
    assert len(set(keys)) == 4
    for t in result.trials:
        small.space.check(t.assignment)
        assert t.note.startswith(("start", "llm proposal", "fallback: "))
    assert result.best is None or result.best.cost <= budget
    assert all("model error" not in t.note for t in result.trials), [t.note for t in result.trials]


def test_random_search_tries_distinct_assignments_and_keeps_the_best_within_budget(small):
    budget = mid_budget(small)
    found = random_search(small.space, TableEvaluator(small), budget=budget, max_trials=5, seed=1)
    tried = [tuple(sorted(t.assignment.items())) for t in found.trials]
    assert len(tried) == len(set(tried)) == 5
    assert found.best is not None and found.best.cost <= budget
    feasible = [t for t in found.trials if t.cost <= budget]
    assert found.best.accuracy == max(t.accuracy for t in feasible)
    again = random_search(small.space, TableEvaluator(small), budget=budget, max_trials=5, seed=1)
    other = random_search(small.space, TableEvaluator(small), budget=budget, max_trials=5, seed=2)
    assert [t.assignment for t in again.trials] == [t.assignment for t in found.trials]
    assert [t.assignment for t in other.trials] != [t.assignment for t in found.trials]
    whole = random_search(small.space, TableEvaluator(small), budget=budget, max_trials=99)
    assert len(whole.trials) == small.space.size
    with pytest.raises(ValueError, match="max_trials"):
        random_search(small.space, TableEvaluator(small), budget=budget, max_trials=0)
