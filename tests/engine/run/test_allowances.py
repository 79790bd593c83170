"""Properties of per-node allowances (``engine.run.allowances``): pure arithmetic, no model.

A run is simulated on a ``Meter``: nodes start in execution order, each setting aside its
allowance from what the run has left, and finish in any order, spending any part of it.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.plan.compute_config import AllocationPolicy, StrategyConfig
from engine.plan.model_settings import ModelRef
from engine.run.allocation import Allocation, NodeAllocation
from engine.run.allowances import (
    NO_GRANT,
    PendingShares,
    deadline,
    limited_by_node,
    past_deadline,
    settlement,
    time_cap_reason,
    token_cap_reason,
    top_up,
)
from engine.run.budget import Grant, Meter

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MODEL = ModelRef(kind="remote", base_url="http://test.invalid/v1", model="m")
STRATEGY = StrategyConfig(kind="single", samples=1)
EPS = 1e-9


def allocation(
    nodes: list[tuple[float, int | None, float | None]], tokens: int, cost: float | None
) -> Allocation:
    """Nodes ``n0, n1, ...`` with (weight, manual token cap, manual dollar cap)."""
    return Allocation(
        policy=AllocationPolicy(),
        nodes={
            f"n{i}": NodeAllocation(
                node_id=f"n{i}",
                title=f"Node {i}",
                difficulty=3,
                model=MODEL,
                strategy=STRATEGY,
                max_tokens=64,
                weight=weight,
                planned_tokens=0,
                planned_cost_usd=None,
                token_cap=token_cap,
                cost_cap_usd=cost_cap,
                source="test",
            )
            for i, (weight, token_cap, cost_cap) in enumerate(nodes)
        },
        total_tokens=tokens,
        total_cost_usd=cost,
    )


node_specs = st.lists(
    st.tuples(
        st.floats(1.0, 5000.0),
        st.none() | st.integers(0, 3000),
        st.none() | st.floats(0.0, 2.0),
    ),
    min_size=1,
    max_size=12,
)
runs = st.tuples(
    node_specs,
    st.integers(100, 20_000),
    st.none() | st.floats(0.0, 5.0),
    st.data(),
)


def simulate(specs, total_tokens, total_cost, data):
    """Run the nodes through a meter; check every allowance as it is granted. Returns the log."""
    shares = PendingShares(allocation(specs, total_tokens, total_cost))
    meter = Meter(total_tokens, total_cost)
    waiting = list(shares.allocation.nodes)
    running: dict[str, Grant] = {}
    log = []
    while waiting or running:
        start = waiting and (not running or data.draw(st.booleans(), label="start next"))
        if start:
            node_id = waiting.pop(0)
            available, available_cost = meter.available, meter.available_cost
            tokens, cost = shares.start(node_id, available, available_cost)
            mine = shares.allocation.nodes[node_id]
            # Never negative, never more than the run has left, never past the node's own cap.
            assert 0 <= tokens <= max(available, 0)
            if mine.token_cap is not None:
                assert tokens <= mine.token_cap
            if available_cost is not None:
                assert cost is not None and 0.0 <= cost <= available_cost + EPS
                if mine.cost_cap_usd is not None:
                    assert cost <= mine.cost_cap_usd + EPS
            else:
                assert cost == mine.cost_cap_usd
            # The last node with nothing running and no cap of its own gets all that is left
            # (but a token: the pending weight is a float sum kept by subtraction, so it may
            # end a rounding error above 0 and the floored share one token short).
            if not waiting and not running and mine.token_cap is None:
                assert available - 1 <= tokens <= available
            block = meter.reserve_block(tokens, cost)
            assert block.tokens == tokens
            running[node_id] = block
            log.append(("start", node_id, tokens, available))
        else:
            node_id = data.draw(st.sampled_from(sorted(running)), label="finishes")
            block = running.pop(node_id)
            spent = data.draw(st.integers(0, block.tokens), label="spent")
            spent_usd = block.cost_usd * data.draw(st.floats(0.0, 1.0), label="spent share")
            before = meter.available
            meter.settle_grant(settlement(block, None), spent, spent_usd)
            # What the node did not spend is the run's again, for the nodes still to run.
            assert meter.available == before + (block.tokens - spent)
            log.append(("finish", node_id, spent, block.tokens))
        # Everything granted or spent stays within the run's caps.
        assert meter.used + sum(g.tokens for g in running.values()) <= total_tokens
        assert meter.available >= 0
        if total_cost is not None:
            assert meter.cost_used <= total_cost + EPS
    return log


@given(runs)
@PROPERTY_SETTINGS
def test_allowances_stay_within_what_is_left_and_within_the_caps(run):
    specs, total_tokens, total_cost, data = run
    simulate(specs, total_tokens, total_cost, data)


@given(runs)
@PROPERTY_SETTINGS
def test_total_granted_never_exceeds_the_run_cap(run):
    specs, total_tokens, total_cost, data = run
    log = simulate(specs, total_tokens, total_cost, data)
    spent = sum(entry[2] for entry in log if entry[0] == "finish")
    assert spent <= total_tokens


@given(node_specs, st.integers(100, 20_000), st.data())
@PROPERTY_SETTINGS
def test_unspent_budget_of_a_finished_node_goes_to_later_nodes(specs, total_tokens, data):
    """Run the same nodes one at a time twice: spending less early never gives later nodes less,
    and the node after one that spent nothing gets at least what it would otherwise."""
    specs = [(w, None, None) for w, _, _ in specs]  # caps would hide the flow
    frugal = [data.draw(st.booleans(), label=f"frugal {i}") for i in range(len(specs))]

    def allowances(spend_all: bool) -> list[int]:
        shares = PendingShares(allocation(specs, total_tokens, None))
        meter = Meter(total_tokens)
        granted = []
        for index, node_id in enumerate(shares.allocation.nodes):
            tokens, _ = shares.start(node_id, meter.available, None)
            block = meter.reserve_block(tokens, None)
            granted.append(tokens)
            used = block.tokens if spend_all or not frugal[index] else 0
            meter.settle_grant(block, used, 0.0)
        return granted

    greedy, thrifty = allowances(True), allowances(False)
    assert greedy[0] == thrifty[0]
    for later, earlier in zip(thrifty, greedy, strict=True):
        assert later >= earlier
    # A one-at-a-time run that spends everything hands out the whole cap (but rounding).
    assert total_tokens - len(specs) <= sum(greedy) <= total_tokens


@given(node_specs, st.integers(0, 20_000), st.none() | st.floats(0.0, 5.0))
@PROPERTY_SETTINGS
def test_shares_never_exceed_what_is_available_among_pending_nodes(specs, available, cost):
    """Whoever starts first, the pending nodes' allowances for the same pool add up to at most
    the pool (the water-filling of ``engine.run.allocation`` when manual caps are set)."""
    shares = PendingShares(allocation(specs, max(100, available), cost))
    node_ids = list(shares.allocation.nodes)
    total = 0
    total_cost = 0.0
    for node_id in node_ids:
        tokens, dollars = shares.allowance(node_id, available - total, cost and cost - total_cost)
        shares.leave(node_id)
        assert tokens >= 0
        total += tokens
        if cost is not None:
            assert dollars is not None and dollars >= 0.0
            total_cost += dollars
    assert total <= available
    if cost is not None:
        assert total_cost <= cost + EPS


@given(st.integers(0, 10_000), st.integers(1, 10_000), st.none() | st.integers(0, 10_000))
def test_a_top_up_covers_one_call_within_the_manual_cap(allowance, need, manual):
    extra = top_up(allowance, need, manual)
    assert extra >= 0
    if extra:
        assert allowance + extra <= need
        if manual is not None:
            assert allowance + extra <= manual
    if allowance >= need:
        assert extra == 0
    if manual is None and allowance < need:
        assert allowance + extra == need
    assert limited_by_node(allowance, manual) == (manual is not None and allowance >= manual)
    if limited_by_node(allowance, manual):
        assert extra == 0


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 10), st.floats(0, 10))
def test_a_settlement_is_the_allowance_and_its_top_up(tokens, extra, cost, extra_cost):
    total = settlement(Grant(tokens, tokens, cost), Grant(extra, extra, extra_cost))
    assert total.tokens == tokens + extra
    assert math.isclose(total.cost_usd, cost + extra_cost)
    assert settlement(None, None) == NO_GRANT
    assert settlement(Grant(tokens, 0, cost), None).tokens == tokens


@given(st.floats(0, 1e6), st.none() | st.floats(1, 86_400), st.floats(0, 1e5))
def test_the_time_cap_passes_only_after_its_deadline(start, wall_time, elapsed):
    when = deadline(start, wall_time)
    if wall_time is None:
        assert when is None and not past_deadline(start + elapsed, when)
    else:
        assert when == start + wall_time
        assert past_deadline(start + elapsed, when) == (start + elapsed > when)


def test_the_stop_reasons_read_as_before():
    assert time_cap_reason(12.345, 10.0) == "time cap reached: 12.3 s of 10 s allowed"
    assert (
        token_cap_reason(950, 1000, 0.0, None, "s2", "Second")
        == "token cap reached: 950 of 1000 tokens used, not enough left for node 's2' (Second)"
    )
    assert token_cap_reason(950, 1000, 0.01234, 0.5, "s2", "Second") == (
        "token cap reached: 950 of 1000 tokens used and $0.0123 of $0.5, "
        "not enough left for node 's2' (Second)"
    )
