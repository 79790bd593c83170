"""Whether caps can reach the answer (``engine.run.reachability``), and the root's reserve.

Pure logic: plans are built here and no model is called.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.plan import Node, Plan
from engine.plan.compute_config import NodeBudget, StrategyConfig
from engine.plan.model_settings import ModelRef
from engine.run.allocation import allocate
from engine.run.allowances import PendingShares, settlement, top_up
from engine.run.budget import Meter, RunCaps
from engine.run.reachability import CallProfile, check_reachability

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
REMOTE = ModelRef(kind="remote", base_url="http://priced.invalid/v1", model="priced")
ORDER = {"cannot_reach": 0, "at_risk": 1, "reachable": 2}


def flat(count: int, task: str = "Plan a product launch for a small bakery") -> Plan:
    children = [
        Node(id=f"s{i}", title=f"Step {i}", instruction=f"Do step {i}") for i in range(count)
    ]
    return Plan(task=task, root=Node(id="root", title="Answer", children=children))


def tree(parents: list[int], samples: list[int]) -> Plan:
    """Node ``n{i}`` (i >= 1) is a child of ``n{parents[i-1]}``; ``n0`` is the root."""
    kids: dict[int, list[int]] = {i: [] for i in range(len(samples))}
    for index, parent in enumerate(parents, start=1):
        kids[parent].append(index)

    def build(index: int) -> Node:
        strategy = None
        if samples[index] > 1:
            strategy = StrategyConfig(kind="self_consistency", samples=samples[index])
        return Node(
            id=f"n{index}",
            title=f"Node {index}",
            strategy=strategy,
            children=[build(child) for child in kids[index]],
        )

    return Plan(task="t", root=build(0))


@st.composite
def plans_and_caps(draw: st.DrawFn) -> tuple[Plan, RunCaps]:
    count = draw(st.integers(1, 9))
    parents = [draw(st.integers(0, index - 1)) for index in range(1, count)]
    samples = draw(st.lists(st.sampled_from([1, 1, 1, 3, 5]), min_size=count, max_size=count))
    caps = RunCaps(
        total_tokens=draw(st.integers(100, 60_000)),
        max_tokens_per_node=draw(st.sampled_from([16, 64, 256, 512])),
    )
    return tree(parents, samples), caps


def verdict_of(plan: Plan, caps: RunCaps, **kwargs) -> str:
    return check_reachability(plan, caps, allocate(plan, caps), **kwargs).verdict


# -- tokens ----------------------------------------------------------------------------------
def test_the_reported_case_fourteen_nodes_at_three_thousand_tokens_cannot_reach() -> None:
    plan = flat(13)
    caps = RunCaps(total_tokens=3000)
    check = check_reachability(plan, caps, allocate(plan, caps))

    assert check.verdict == "cannot_reach"
    tokens = next(f for f in check.findings if f.cap == "total_tokens")
    assert tokens.verdict == "cannot_reach"
    assert "Raise total tokens to at least" in tokens.reason
    assert tokens.suggested is not None and tokens.suggested >= check.needed_tokens
    # The root reads 13 outputs: its own share is far above an equal fourteenth.
    assert check.root_tokens > 3000 / 14
    assert check.suggested_caps(caps).total_tokens == tokens.suggested
    # With the suggestion, the same plan can reach the answer.
    assert verdict_of(plan, check.suggested_caps(caps)) == "reachable"


def test_between_the_floor_and_the_full_need_the_caps_are_at_risk() -> None:
    plan = flat(3)
    caps = RunCaps(total_tokens=100_000)
    check = check_reachability(plan, caps, allocate(plan, caps))
    middle = (check.floor_tokens + check.needed_tokens) // 2
    assert check.floor_tokens < middle < check.needed_tokens

    assert verdict_of(plan, RunCaps(total_tokens=middle)) == "at_risk"
    assert verdict_of(plan, RunCaps(total_tokens=check.floor_tokens - 1)) == "cannot_reach"
    assert verdict_of(plan, RunCaps(total_tokens=check.needed_tokens)) == "reachable"


def test_more_samples_need_more_tokens() -> None:
    single = flat(2)
    voting = flat(2)
    voting.default_strategy = StrategyConfig(kind="self_consistency", samples=5)
    caps = RunCaps(total_tokens=100_000)

    one = check_reachability(single, caps, allocate(single, caps))
    five = check_reachability(voting, caps, allocate(voting, caps))

    assert five.needs["s0"].calls == 5 and one.needs["s0"].calls == 1
    assert five.needs["s0"].full_tokens == 5 * one.needs["s0"].full_tokens
    assert five.needed_tokens > 4 * one.needed_tokens


def test_a_node_cap_below_one_call_cannot_reach() -> None:
    plan = flat(2)
    plan.root.children[0].budget = NodeBudget(tokens=20)
    check = check_reachability(plan, RunCaps(total_tokens=100_000), allocate(plan, RunCaps()))

    assert check.verdict == "cannot_reach"
    finding = next(f for f in check.findings if f.cap == "node_tokens")
    assert finding.node_id == "s0" and "own cap of 20 tokens" in finding.reason


@PROPERTY_SETTINGS
@given(plans_and_caps())
def test_reachable_is_never_said_of_caps_below_the_roots_share(case) -> None:
    plan, caps = case
    check = check_reachability(plan, caps, allocate(plan, caps))

    if caps.total_tokens < check.root_tokens:
        assert check.verdict == "cannot_reach"
    if caps.total_tokens < check.floor_tokens:
        assert check.verdict == "cannot_reach"
    if check.verdict == "reachable":
        assert caps.total_tokens >= check.needed_tokens >= check.floor_tokens >= check.root_tokens
    assert check.floor_tokens <= check.needed_tokens


@PROPERTY_SETTINGS
@given(plans_and_caps(), st.integers(0, 100_000))
def test_more_tokens_never_make_the_verdict_worse(case, more) -> None:
    plan, caps = case
    bigger = caps.model_copy(update={"total_tokens": min(200_000, caps.total_tokens + more)})

    assert ORDER[verdict_of(plan, bigger)] >= ORDER[verdict_of(plan, caps)]


@PROPERTY_SETTINGS
@given(plans_and_caps())
def test_the_suggested_caps_reach_the_answer(case) -> None:
    plan, caps = case
    check = check_reachability(plan, caps, allocate(plan, caps))
    suggested = check.suggested_caps(caps)
    if check.needed_tokens * 1.2 <= 200_000:
        assert verdict_of(plan, suggested) == "reachable"
    assert suggested.total_tokens >= caps.total_tokens


# -- the root's reserve ----------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(plans_and_caps(), st.data())
def test_descendants_never_starve_the_root(case, data) -> None:
    """Run the other nodes in order, each taking its allowance, topping up to a full call when
    it can and spending any part of it: when the root starts, its reserve is still there."""
    plan, caps = case
    allocation = allocate(plan, caps)
    shares = PendingShares(allocation)
    meter = Meter(caps.total_tokens)
    root = plan.root.id
    reserve = allocation.root_reserve_tokens
    if len(allocation.nodes) > 1:
        assert reserve > 0 and allocation.root_id == root
    for node_id, item in allocation.nodes.items():
        if node_id == root:
            break
        tokens, _ = shares.start(node_id, meter.available, None)
        block = meter.reserve_block(tokens, None)
        need = data.draw(st.integers(1, 3000), label="full call")
        extra = top_up(block.tokens, need, item.token_cap)
        extra = min(extra, max(0, allocation.spendable(node_id, meter.available)))
        extra_block = meter.reserve_block(extra, 0.0)
        spent = data.draw(st.integers(0, block.tokens + extra_block.tokens), label="spent")
        meter.settle_grant(settlement(block, extra_block), spent, 0.0)
    tokens, _ = shares.start(root, meter.available, None)
    assert meter.available >= reserve
    assert tokens >= reserve


@PROPERTY_SETTINGS
@given(plans_and_caps())
def test_the_root_is_planned_at_least_its_reserve(case) -> None:
    plan, caps = case
    allocation = allocate(plan, caps)
    root = allocation.nodes[plan.root.id]

    assert root.planned_tokens >= allocation.root_reserve_tokens
    assert allocation.root_reserve_tokens <= caps.total_tokens // 2 or len(allocation.nodes) == 1
    assert sum(item.planned_tokens for item in allocation.nodes.values()) <= caps.total_tokens


# -- time and money --------------------------------------------------------------------------
def test_a_time_cap_below_the_recorded_pace_cannot_reach() -> None:
    plan = flat(4)  # five calls to one local model, one at a time
    caps = RunCaps(total_tokens=100_000, max_parallel=4)
    profiles = {"bundled:gemma-3-270m": CallProfile(seconds_per_call=10.0, recorded_calls=8)}
    allocation = allocate(plan, caps)

    def time_verdict(wall: float) -> tuple[str, float | None]:
        check = check_reachability(
            plan, caps.model_copy(update={"wall_time_s": wall}), allocation, profiles
        )
        finding = next(f for f in check.findings if f.cap == "wall_time_s")
        assert check.expected_seconds == 50.0  # the queue, not the critical path (20 s)
        return finding.verdict, finding.suggested

    assert time_verdict(20.0)[0] == "cannot_reach"
    assert time_verdict(60.0)[0] == "at_risk"
    assert time_verdict(120.0)[0] == "reachable"
    assert time_verdict(20.0)[1] == 80.0  # 1.5 × 50 s, rounded up to 10 s


def test_without_recorded_calls_the_time_cap_is_not_judged() -> None:
    plan = flat(2)
    caps = RunCaps(total_tokens=100_000, wall_time_s=5.0)
    check = check_reachability(plan, caps, allocate(plan, caps))

    finding = next(f for f in check.findings if f.cap == "wall_time_s")
    assert finding.verdict == "reachable" and "not checked" in finding.reason
    assert check.expected_seconds is None


def test_a_money_cap_below_the_calls_cost_cannot_reach() -> None:
    plan = flat(2)
    plan.default_model = REMOTE
    profiles = {REMOTE.label: CallProfile(price_in_per_m=1000.0, price_out_per_m=2000.0)}
    caps = RunCaps(total_tokens=100_000, total_cost_usd=0.01)
    check = check_reachability(plan, caps, allocate(plan, caps), profiles)

    finding = next(f for f in check.findings if f.cap == "total_cost_usd")
    assert finding.verdict == "cannot_reach" and finding.suggested is not None
    raised = check.suggested_caps(caps)
    assert raised.total_cost_usd == finding.suggested
    assert verdict_of(plan, raised, profiles=profiles) == "reachable"
