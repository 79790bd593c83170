"""Specifications of the per-node allocation: policies, manual overrides, and budget flow.

Pure logic: plans are built here from ``Plan``/``Node`` and no model is loaded.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CycleError, PlanError
from engine.plan import Node, Plan
from engine.plan.compute_config import AllocationPolicy, NodeBudget, StrategyConfig
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.run.allocation import DECAY_FLOOR, allocate, decay_factor
from engine.run.budget import RunCaps

SCHEDULES = ["constant", "linear", "polynomial", "exponential", "cosine"]
FAST = ModelRef(kind="remote", base_url="http://fast/v1", model="fast")
STRONG = ModelRef(kind="remote", base_url="http://strong/v1", model="strong")
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def flat_plan(
    difficulties: list[int | None],
    policy: AllocationPolicy | None = None,
    **root_fields: Any,
) -> Plan:
    """A root whose children are leaves ``a0, a1, ...`` rated ``difficulties`` (root unrated)."""
    children = [
        Node(id=f"a{index}", title=f"Leaf {index}", difficulty=difficulty)
        for index, difficulty in enumerate(difficulties)
    ]
    root = Node(id="root", title="Root", children=children, **root_fields)
    return Plan(task="t", root=root, allocation=policy or AllocationPolicy())


def tree_plan(
    parents: list[int],
    difficulties: list[int | None],
    token_caps: list[int | None],
    cost_caps: list[float | None],
    policy: AllocationPolicy,
) -> Plan:
    """Node ``n{i}`` (i >= 1) is a child of ``n{parents[i-1]}``; ``n0`` is the root."""
    count = len(difficulties)
    children: dict[int, list[int]] = {index: [] for index in range(count)}
    for index, parent in enumerate(parents, start=1):
        children[parent].append(index)

    def build(index: int) -> dict[str, Any]:
        budget = None
        if token_caps[index] is not None or cost_caps[index] is not None:
            budget = {"tokens": token_caps[index], "cost_usd": cost_caps[index]}
        return {
            "id": f"n{index}",
            "title": f"Node {index}",
            "difficulty": difficulties[index],
            "budget": budget,
            "children": [build(child) for child in children[index]],
        }

    return Plan(task="t", root=Node.model_validate(build(0)), allocation=policy)


@st.composite
def random_plans(draw: st.DrawFn) -> tuple[Plan, RunCaps]:
    """Trees of 1-12 nodes with random ratings, manual caps, policy and run caps."""
    count = draw(st.integers(1, 12))
    parents = [draw(st.integers(0, index - 1)) for index in range(1, count)]
    difficulties = draw(st.lists(st.none() | st.integers(1, 5), min_size=count, max_size=count))
    token_caps = draw(st.lists(st.none() | st.integers(16, 50_000), min_size=count, max_size=count))
    cost_caps = draw(
        st.lists(st.none() | st.floats(0.0, 5.0, allow_nan=False), min_size=count, max_size=count)
    )
    policy = AllocationPolicy(
        kind=draw(st.sampled_from(["uniform", "difficulty", "fast_deliberate"])),
        decay=draw(st.sampled_from(SCHEDULES)),
        threshold=draw(st.integers(2, 5)),
        deliberate_strategy=StrategyConfig(
            kind=draw(st.sampled_from(["best_of_n", "self_consistency", "self_refine"])),
            samples=draw(st.integers(1, 32)),
        ),
    )
    caps = RunCaps(
        total_tokens=draw(st.integers(100, 200_000)),
        max_tokens_per_node=draw(st.integers(16, 8192)),
        total_cost_usd=draw(st.none() | st.floats(0.0, 100.0, allow_nan=False)),
    )
    return tree_plan(parents, difficulties, token_caps, cost_caps, policy), caps


# -- uniform ---------------------------------------------------------------------------------
def test_uniform_gives_every_node_an_equal_share_within_the_total() -> None:
    plan = flat_plan([1, 5, None, 3])
    # A total large enough that the root's equal share covers its synthesis (reading four
    # 256-token outputs); below that the root's need is held back first (tested below).
    allocation = allocate(plan, RunCaps(total_tokens=100_003))

    planned = [item.planned_tokens for item in allocation.nodes.values()]
    weights = {item.weight for item in allocation.nodes.values()}
    assert len(planned) == 5
    assert planned == [20_000] * 5  # 100_003 // 5, floored
    assert sum(planned) <= 100_003
    assert weights == {256.0}
    assert {item.source for item in allocation.nodes.values()} == {"uniform"}
    assert all(item.strategy == plan.default_strategy for item in allocation.nodes.values())


def test_uniform_output_limit_is_the_nodes_own_limit_capped_by_the_run() -> None:
    plan = flat_plan([2, 2])
    plan.root.children[0].generation = GenerationConfig(max_tokens=100)
    plan.root.children[1].generation = GenerationConfig(max_tokens=4000)

    allocation = allocate(plan, RunCaps(max_tokens_per_node=512))

    assert allocation.nodes["a0"].max_tokens == 100
    assert allocation.nodes["a1"].max_tokens == 512
    assert allocation.nodes["root"].max_tokens == 256  # the plan's default generation


def test_nodes_are_listed_in_execution_order_and_unrated_get_the_policy_default() -> None:
    plan = flat_plan([4, None], AllocationPolicy(unrated_difficulty=2))
    plan.root.children[0].depends_on = ["a1"]

    allocation = allocate(plan, RunCaps())

    assert list(allocation.nodes) == plan.execution_order() == ["a1", "a0", "root"]
    assert allocation.nodes["a0"].difficulty == 4
    assert allocation.nodes["a1"].difficulty == 2
    assert allocation.nodes["root"].difficulty == 2


# -- difficulty (Plan-and-Budget) ------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("count", [1, 2, 3, 7, 30])
def test_decay_schedules_start_at_one_never_increase_and_keep_a_floor(
    schedule: str, count: int
) -> None:
    factors = [decay_factor(schedule, position, count) for position in range(count)]  # type: ignore[arg-type]

    assert factors[0] == 1.0
    assert all(later <= earlier for earlier, later in pairwise(factors))
    assert min(factors) >= DECAY_FLOOR


@pytest.mark.parametrize(
    ("schedule", "position", "count", "expected"),
    [
        ("constant", 4, 5, 1.0),
        ("linear", 4, 5, 0.5),
        ("linear", 2, 5, 0.75),
        ("polynomial", 2, 5, 0.25 + 0.75 * 0.25),
        ("polynomial", 4, 5, 0.25),
        ("exponential", 2, 5, 0.5),
        ("exponential", 4, 5, 0.25),
        ("cosine", 2, 5, 0.625),
        ("cosine", 4, 5, 0.25),
    ],
)
def test_decay_factor_follows_the_documented_formulas(
    schedule: str, position: int, count: int, expected: float
) -> None:
    assert decay_factor(schedule, position, count) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(("position", "count"), [(-1, 3), (3, 3), (0, 0)])
def test_decay_factor_refuses_a_position_outside_the_order(position: int, count: int) -> None:
    with pytest.raises(ValueError, match="not within"):
        decay_factor("linear", position, count)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_harder_nodes_get_at_least_as_many_tokens_at_the_same_position(schedule: str) -> None:
    policy = AllocationPolicy(kind="difficulty", decay=schedule)
    caps = RunCaps(max_tokens_per_node=8192)
    for position in range(4):
        limits = []
        for difficulty in range(1, 6):
            ratings: list[int | None] = [3, 3, 3, 3]
            ratings[position] = difficulty
            allocation = allocate(flat_plan(ratings, policy), caps)
            limits.append(allocation.nodes[f"a{position}"].max_tokens)
        assert limits == sorted(limits), (schedule, position, limits)
        assert limits[0] < limits[-1]


def test_difficulty_limits_come_from_level_tokens_and_decay() -> None:
    policy = AllocationPolicy(kind="difficulty", decay="linear")
    plan = flat_plan([5, 5, 1], policy, difficulty=2)

    allocation = allocate(plan, RunCaps(max_tokens_per_node=8192))

    limits = {key: item.max_tokens for key, item in allocation.nodes.items()}
    # positions 0..3 of 4: linear decay 1, 5/6, 2/3, 1/2
    assert limits == {"a0": 600, "a1": 500, "a2": round(200 * 2 / 3), "root": 125}
    assert allocation.nodes["a1"].source == "difficulty 5 × decay 0.83"
    assert allocation.nodes["a1"].weight == 500.0


def test_difficulty_limits_are_clamped_between_sixteen_and_the_run_cap() -> None:
    policy = AllocationPolicy(kind="difficulty", level_tokens=[1, 2, 3, 4, 5000])
    allocation = allocate(flat_plan([1, 5], policy), RunCaps(max_tokens_per_node=300))

    assert allocation.nodes["a0"].max_tokens == 16
    assert allocation.nodes["a1"].max_tokens == 300


def test_difficulty_keeps_a_manual_generation_limit() -> None:
    plan = flat_plan([5], AllocationPolicy(kind="difficulty"))
    plan.root.children[0].generation = GenerationConfig(max_tokens=40)

    allocation = allocate(plan, RunCaps(max_tokens_per_node=1024))

    assert allocation.nodes["a0"].max_tokens == 40
    assert "manual max tokens" in allocation.nodes["a0"].source
    assert allocation.nodes["root"].source == "unrated difficulty 3 × decay 1.00"


# -- fast / deliberate (SCALE) ---------------------------------------------------------------
def test_fast_deliberate_sends_hard_nodes_to_deliberation_and_easy_ones_to_one_fast_call() -> None:
    deliberate = StrategyConfig(kind="best_of_n", samples=4)
    policy = AllocationPolicy(
        kind="fast_deliberate",
        threshold=4,
        fast_model=FAST,
        deliberate_model=STRONG,
        deliberate_strategy=deliberate,
    )
    plan = flat_plan([4, 3, 5], policy, difficulty=1)
    plan.default_strategy = StrategyConfig(kind="self_refine")

    # (20,000 tokens: the fast root's share covers its synthesis, so nothing is held back.)
    allocation = allocate(plan, RunCaps(total_tokens=20_000))

    for hard in ("a0", "a2"):
        assert allocation.nodes[hard].model == STRONG
        assert allocation.nodes[hard].strategy == deliberate
        assert allocation.nodes[hard].source.startswith("deliberate (difficulty")
        assert allocation.nodes[hard].weight == 256.0 * 4
    for easy in ("a1", "root"):
        assert allocation.nodes[easy].model == FAST
        assert allocation.nodes[easy].strategy.kind == "single"
        assert allocation.nodes[easy].strategy.most_calls == 1
        assert allocation.nodes[easy].source.startswith("fast (difficulty")
    # hard nodes expect four times the output, so they are planned four times the tokens
    assert allocation.nodes["a0"].planned_tokens == 4 * allocation.nodes["a1"].planned_tokens


def test_fast_deliberate_without_models_keeps_the_plan_default_model() -> None:
    plan = flat_plan([5, 1], AllocationPolicy(kind="fast_deliberate"))
    plan.default_model = FAST

    allocation = allocate(plan, RunCaps())

    assert {item.model.label for item in allocation.nodes.values()} == {FAST.label}
    assert allocation.nodes["a0"].strategy.kind == "self_consistency"
    assert allocation.nodes["a1"].strategy.kind == "single"


# -- manual overrides ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["uniform", "difficulty", "fast_deliberate"])
def test_manual_strategy_model_and_caps_win_over_the_policy_and_say_so(kind: str) -> None:
    own = StrategyConfig(kind="self_refine", refine_rounds=3)
    policy = AllocationPolicy(kind=kind, fast_model=FAST, deliberate_model=STRONG)
    plan = flat_plan([1, 5], policy)
    for leaf in plan.root.children:
        leaf.strategy = own
        leaf.model = ModelRef(path="/models/own.gguf")
        leaf.budget = NodeBudget(tokens=300, cost_usd=0.01)

    allocation = allocate(plan, RunCaps(total_tokens=50_000, total_cost_usd=2.0))

    for key in ("a0", "a1"):
        item = allocation.nodes[key]
        assert item.strategy == own
        assert item.model.label == "own.gguf"
        assert item.token_cap == 300
        assert item.cost_cap_usd == 0.01
        assert item.planned_tokens == 300
        assert item.planned_cost_usd == pytest.approx(0.01)
        assert "manual strategy" in item.source
        assert "manual model" in item.source
        assert "manual cap" in item.source
    assert "manual" not in allocation.nodes["root"].source
    assert allocation.nodes["root"].token_cap is None
    # what the capped leaves cannot take goes to the root
    assert allocation.nodes["root"].planned_tokens == 50_000 - 600
    assert allocation.nodes["root"].planned_cost_usd == pytest.approx(2.0 - 0.02)


def test_a_manual_cap_is_a_ceiling_not_a_reservation() -> None:
    plan = flat_plan([3, 3, 3])
    plan.root.children[0].budget = NodeBudget(tokens=50_000)

    # (20,000 tokens: the root's equal share covers its synthesis, so nothing is held back.)
    allocation = allocate(plan, RunCaps(total_tokens=20_000))

    assert [item.planned_tokens for item in allocation.nodes.values()] == [5000] * 4


def test_without_a_money_cap_no_dollars_are_planned() -> None:
    allocation = allocate(flat_plan([2, 2]), RunCaps(total_cost_usd=None))

    assert allocation.total_cost_usd is None
    assert {item.planned_cost_usd for item in allocation.nodes.values()} == {None}


# -- invalid plans ---------------------------------------------------------------------------
def test_an_invalid_plan_is_refused_with_a_plan_error() -> None:
    dangling = flat_plan([1])
    dangling.root.children[0].depends_on = ["ghost"]
    cyclic = flat_plan([1, 1])
    cyclic.root.children[0].depends_on = ["a1"]
    cyclic.root.children[1].depends_on = ["a0"]
    duplicate = flat_plan([1, 1])
    duplicate.root.children[1].id = "a0"

    with pytest.raises(PlanError, match="ghost"):
        allocate(dangling, RunCaps())
    with pytest.raises(CycleError):
        allocate(cyclic, RunCaps())
    with pytest.raises(PlanError, match="more than once"):
        allocate(duplicate, RunCaps())


# -- dynamic caps ----------------------------------------------------------------------------
def test_unspent_tokens_flow_to_the_nodes_still_to_run() -> None:
    allocation = allocate(flat_plan([3, 3, 3]), RunCaps(total_tokens=4000))
    held = allocation.root_reserve_tokens  # the root's synthesis, held back until it starts
    assert 0 < held <= 2000

    # The leaves share what is not held for the root.
    assert allocation.node_token_cap("a0", 4000, ["a1", "a2", "root"]) == (4000 - held) // 3
    # a0 used only 99: the two other leaves now share 3901 less the root's part (half each)
    assert allocation.node_token_cap("a1", 3901, ["a2", "root"]) == (3901 - held) // 2
    assert allocation.node_token_cap("root", 250, []) == 250


def test_dynamic_caps_respect_manual_caps_and_reshare_their_excess() -> None:
    plan = flat_plan([3, 3])
    plan.root.children[1].budget = NodeBudget(tokens=100, cost_usd=0.5)
    allocation = allocate(plan, RunCaps(total_tokens=3000))
    held = allocation.root_reserve_tokens

    assert allocation.node_token_cap("a1", 3000, ["a0", "root"]) == 100
    # a1, still pending, can take only 100, so a0 may have the rest of what the root leaves
    assert allocation.node_token_cap("a0", 3000, ["a1", "root"]) == 3000 - held - 100
    assert allocation.node_cost_cap("a1", 9.0, ["root"]) == 0.5
    assert allocation.node_cost_cap("a0", 9.0, ["a1", "root"]) == pytest.approx(4.25)


def test_dynamic_caps_are_zero_when_nothing_is_left() -> None:
    allocation = allocate(flat_plan([3]), RunCaps())

    assert allocation.node_token_cap("a0", 0, ["root"]) == 0
    assert allocation.node_token_cap("a0", -50, ["root"]) == 0
    assert allocation.node_cost_cap("a0", -1.0, ["root"]) == 0.0
    assert allocation.node_cost_cap("a0", math.nan, ["root"]) == 0.0


def test_dynamic_caps_name_a_node_outside_the_allocation() -> None:
    allocation = allocate(flat_plan([3]), RunCaps())

    with pytest.raises(PlanError, match="'ghost'"):
        allocation.node_token_cap("ghost", 100, [])
    with pytest.raises(PlanError, match="'other'"):
        allocation.node_cost_cap("a0", 1.0, ["root", "other"])


def test_rows_describe_every_node_for_the_tables() -> None:
    policy = AllocationPolicy(kind="fast_deliberate", fast_model=FAST, deliberate_model=STRONG)
    plan = flat_plan([5, 1], policy)
    plan.root.children[1].budget = NodeBudget(tokens=200)

    rows = allocate(plan, RunCaps(total_cost_usd=1.0)).rows()

    assert [row["node"] for row in rows] == ["a0", "a1", "root"]
    assert rows[0]["model"] == STRONG.label
    assert rows[0]["strategy"] == "self-consistency vote ×5"
    assert rows[1]["strategy"] == "single call"
    assert rows[1]["token_cap"] == 200
    assert rows[1]["source"] == "fast (difficulty 1), manual cap"
    assert set(rows[0]) == {
        "node",
        "title",
        "difficulty",
        "model",
        "strategy",
        "max_tokens",
        "planned_tokens",
        "planned_usd",
        "token_cap",
        "cost_cap_usd",
        "source",
    }


# -- properties ------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(random_plans())
def test_planned_shares_never_exceed_the_total_nor_a_manual_cap(
    case: tuple[Plan, RunCaps],
) -> None:
    plan, caps = case
    allocation = allocate(plan, caps)
    items = list(allocation.nodes.values())

    assert list(allocation.nodes) == plan.execution_order()
    assert sum(item.planned_tokens for item in items) <= caps.total_tokens
    for item in items:
        assert item.weight > 0
        assert 1 <= item.max_tokens <= caps.max_tokens_per_node
        assert item.planned_tokens >= 0
        if item.token_cap is not None:
            assert item.planned_tokens <= item.token_cap
    if caps.total_cost_usd is None:
        assert all(item.planned_cost_usd is None for item in items)
    else:
        planned = [item.planned_cost_usd for item in items]
        assert all(value is not None and value >= 0 for value in planned)
        assert math.fsum(planned) <= caps.total_cost_usd * (1 + 1e-12)  # type: ignore[arg-type]
        for item in items:
            if item.cost_cap_usd is not None:
                assert item.planned_cost_usd <= item.cost_cap_usd  # type: ignore[operator]


@PROPERTY_SETTINGS
@given(random_plans(), st.data())
def test_spending_within_each_dynamic_cap_never_overruns_the_run(
    case: tuple[Plan, RunCaps], data: st.DataObject
) -> None:
    plan, caps = case
    allocation = allocate(plan, caps)
    order = list(allocation.nodes)
    available = caps.total_tokens
    spent = 0
    for index, node_id in enumerate(order):
        cap = allocation.node_token_cap(node_id, available, order[index + 1 :])
        manual = allocation.nodes[node_id].token_cap
        assert 0 <= cap <= available
        assert manual is None or cap <= manual
        used = data.draw(st.integers(0, cap), label=f"tokens used by {node_id}")
        spent += used
        available -= used
    assert spent <= caps.total_tokens
    assert available >= 0


@PROPERTY_SETTINGS
@given(random_plans(), st.data())
def test_spending_within_each_dollar_cap_never_overruns_the_run(
    case: tuple[Plan, RunCaps], data: st.DataObject
) -> None:
    plan, caps = case
    total = caps.total_cost_usd if caps.total_cost_usd is not None else 1.0
    allocation = allocate(plan, caps)
    order = list(allocation.nodes)
    available = total
    spent = 0.0
    for index, node_id in enumerate(order):
        cap = allocation.node_cost_cap(node_id, available, order[index + 1 :])
        manual = allocation.nodes[node_id].cost_cap_usd
        assert 0.0 <= cap <= available
        assert manual is None or cap <= manual
        used = data.draw(st.floats(0.0, cap), label=f"dollars spent by {node_id}")
        spent += used
        available = max(total - spent, 0.0)
    assert spent <= total * (1 + 1e-9)


@PROPERTY_SETTINGS
@given(random_plans())
def test_a_node_that_starts_alone_gets_everything_left_up_to_its_cap(
    case: tuple[Plan, RunCaps],
) -> None:
    plan, caps = case
    allocation = allocate(plan, caps)
    last = list(allocation.nodes)[-1]
    manual = allocation.nodes[last].token_cap

    cap = allocation.node_token_cap(last, caps.total_tokens, [])

    assert cap == min(caps.total_tokens, manual if manual is not None else caps.total_tokens)


@PROPERTY_SETTINGS
@given(random_plans(), st.integers(0, 200_000))
def test_caps_of_nodes_starting_together_add_up_to_at_most_what_is_available(
    case: tuple[Plan, RunCaps], available: int
) -> None:
    plan, caps = case
    allocation = allocate(plan, caps)
    group = list(allocation.nodes)

    token_caps = [allocation.node_token_cap(key, available, group) for key in group]
    dollar_caps = [allocation.node_cost_cap(key, available / 1000, group) for key in group]

    assert sum(token_caps) <= available
    assert math.fsum(dollar_caps) <= available / 1000 * (1 + 1e-12)
