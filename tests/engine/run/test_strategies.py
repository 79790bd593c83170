"""Strategies and budget enforcement as logic, on a scripted instant backend.

What is checked here is bookkeeping: which calls a strategy makes, how votes settle, which
sample is selected, that no node and no run passes its caps, that recorded calls replay. The
same strategies on the real bundled model are in ``test_strategies_real.py``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CallCancelled
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.compute_config import NodeBudget, SelectorConfig, StrategyConfig
from engine.run.budget import RunCaps
from engine.run.events import BudgetUpdate, ModelCallFinished, NodeFinished
from engine.run.executor import execute_plan
from engine.run.node_calls import sample_seeds
from engine.run.strategies import leader_probability, vote_settled
from tests.support.fake_backend import MemoryCache

URL = "http://scripted.invalid/v1"


class Scripted(Backend):
    """Answers by role: samples from ``samples`` by sample index, judges and critics by rule."""

    def __init__(
        self,
        samples: list[str],
        *,
        judge: dict[str, int] | None = None,
        critiques: list[bool] | None = None,
        price_in: float = 0.0,
        price_out: float = 0.0,
        sleep_s: float = 0.0,
        output_tokens: int = 10,
    ):
        self.label = "scripted"
        self.samples = samples
        self.judge = judge or {}
        self.critiques = list(critiques or [])
        self.price_in_per_m = price_in
        self.price_out_per_m = price_out
        self.sleep_s = sleep_s
        self.output_tokens = output_tokens
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    def _index(self, seed: int | None) -> int:
        base = sample_seeds(None, 0, 1)[0]
        return 0 if seed is None else (seed - base) // 7919

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = messages[-1]["content"]
        if self.sleep_s and cancel is not None and cancel.wait(self.sleep_s):
            raise CallCancelled("scripted call cancelled")
        with self.lock:
            if "give the answer a score" in text:
                answer = text.rsplit("Candidate answer:", 1)[1].strip()
                out, role = json.dumps({"score": self.judge.get(answer, 0)}), "judge"
            elif text.startswith("You review answers"):
                ok = self.critiques.pop(0) if self.critiques else True
                out, role = json.dumps({"ok": ok, "problems": "" if ok else "too vague"}), "crit"
            elif text.startswith("You improve answers"):
                out, role = f"revised {len(self.calls)}", "revise"
            else:
                out = self.samples[self._index(config.seed) % len(self.samples)]
                role = "sample"
            self.calls.append(role)
        tokens = min(config.max_tokens, self.output_tokens)
        return Completion(out, Usage(self.count_tokens(text), tokens), 0.0, self.label, "stop")


def one_node(strategy: StrategyConfig, **node: Any) -> Plan:
    return Plan(
        task="What is 7 + 5?",
        root=Node(id="root", title="Answer", instruction="Add.", strategy=strategy, **node),
        default_model=ModelRef(kind="remote", base_url=URL, model="m"),
    )


def run(
    plan: Plan,
    backend: Backend,
    caps: RunCaps | None = None,
    *,
    extra_listeners: tuple[Any, ...] | list[Any] = (),
    **kw: Any,
):
    events: list[Any] = []
    result = execute_plan(
        plan,
        caps or RunCaps(),
        backend_factory=lambda ref: backend,
        listeners=[events.append, *extra_listeners],
        **kw,
    )
    calls = [e for e in events if isinstance(e, ModelCallFinished)]
    nodes = {e.node_id: e for e in events if isinstance(e, NodeFinished)}
    return result, calls, nodes, events


# -- vote arithmetic -------------------------------------------------------------------------


def test_leader_probability_matches_the_beta_posterior():
    # Beta(4, 1): P(X > 1/2) = 1 - 0.5**4
    assert leader_probability(3, 0) == pytest.approx(1 - 0.5**4)
    assert leader_probability(4, 0) == pytest.approx(1 - 0.5**5)
    assert leader_probability(2, 2) == pytest.approx(0.5)
    assert leader_probability(5, 1) > leader_probability(4, 1) > leader_probability(3, 1)


def test_a_vote_is_settled_when_the_leader_cannot_be_caught_or_is_confidently_ahead():
    from collections import Counter

    assert vote_settled(Counter(a=3), 3, 5, 0.95)[0]  # 3 - 0 > 2 left
    assert not vote_settled(Counter(a=3), 3, 9, 0.95)[0]  # P = 0.9375 < 0.95
    assert vote_settled(Counter(a=4), 4, 9, 0.95)[0]  # P = 0.969
    assert not vote_settled(Counter(a=2, b=1), 3, 5, 0.95)[0]


# -- self-consistency ------------------------------------------------------------------------


def test_self_consistency_stops_once_the_vote_is_settled_and_traces_every_vote():
    backend = Scripted(["The answer is 12.", "12", "12", "7", "12"])
    plan = one_node(StrategyConfig(kind="self_consistency", samples=5, min_samples=3))
    result, calls, nodes, _ = run(plan, backend)
    assert result.status == "completed"
    assert backend.calls == ["sample"] * 3  # 3-0 with 2 left: settled
    assert [c.vote for c in calls] == ["12", "12", "12"]
    assert [c.role for c in calls] == ["sample"] * 3
    assert sum(bool(c.selected) for c in calls) == 1
    node = nodes["root"]
    assert node.samples == 3 and node.agreement == 1.0
    assert "stopped after 3 of 5 samples" in (node.note or "")
    assert result.answer == "The answer is 12."  # the full text of the first winning sample


def test_without_early_stop_every_sample_is_drawn_and_agreement_counts_dissent():
    backend = Scripted(["12", "7", "12", "7", "12"])
    plan = one_node(StrategyConfig(kind="self_consistency", samples=5, early_stop=False))
    result, calls, nodes, _ = run(plan, backend)
    assert len(calls) == 5 and nodes["root"].agreement == pytest.approx(0.6)
    assert result.answer == "12"
    assert [c.sample_index for c in calls] == [0, 1, 2, 3, 4]
    assert len({c.seed for c in calls}) == 5


def test_a_split_vote_keeps_sampling_to_the_limit():
    backend = Scripted(["1", "2", "3", "4", "5", "6"])
    plan = one_node(StrategyConfig(kind="self_consistency", samples=6, min_samples=3))
    _, calls, nodes, _ = run(plan, backend)
    assert len(calls) == 6
    assert nodes["root"].agreement == pytest.approx(1 / 6)


# -- best-of-N -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (SelectorConfig(kind="regex", pattern=r"\b42\b"), "bar 42"),
        (SelectorConfig(kind="expression", expression="length"), "a much longer answer"),
        (
            SelectorConfig(
                kind="json_schema",
                json_schema='{"type": "object", "required": ["x"]}',
            ),
            '{"x": 1}',
        ),
    ],
)
def test_best_of_n_picks_by_the_analysts_check(selector, expected):
    backend = Scripted(["foo", "bar 42", "a much longer answer", '{"x": 1}'])
    plan = one_node(StrategyConfig(kind="best_of_n", samples=4, selector=selector))
    result, calls, _, _ = run(plan, backend)
    assert result.answer == expected
    assert [c.selected for c in calls].count(True) == 1
    assert all(c.score is not None for c in calls)
    assert backend.calls == ["sample"] * 4  # a check costs no model call


def test_best_of_n_with_a_judge_scores_every_sample_and_ties_go_to_the_earliest():
    backend = Scripted(["alpha", "beta", "gamma"], judge={"beta": 9, "gamma": 9, "alpha": 3})
    plan = one_node(StrategyConfig(kind="best_of_n", samples=3))
    result, calls, _, _ = run(plan, backend)
    assert result.answer == "beta"
    judges = [c for c in calls if c.role == "judge"]
    samples = [c for c in calls if c.role == "sample"]
    assert len(judges) == 3 and len(samples) == 3
    assert [s.score for s in samples] == [3.0, 9.0, 9.0]
    assert [s.selected for s in samples] == [False, True, False]


# -- self-refine -----------------------------------------------------------------------------


def test_self_refine_alternates_critique_and_revision_until_the_critic_is_satisfied():
    backend = Scripted(["first draft"], critiques=[False, True])
    plan = one_node(StrategyConfig(kind="self_refine", refine_rounds=3))
    result, calls, nodes, _ = run(plan, backend)
    assert [c.role for c in calls] == ["answer", "critique", "revise", "critique"]
    assert result.answer.startswith("revised")
    assert [c.selected for c in calls if c.role in ("answer", "revise")] == [False, True]
    assert "no problems in round 2" in (nodes["root"].note or "")


def test_self_refine_stops_after_its_rounds():
    backend = Scripted(["draft"], critiques=[False, False])
    plan = one_node(StrategyConfig(kind="self_refine", refine_rounds=2))
    _, calls, nodes, _ = run(plan, backend)
    assert [c.role for c in calls].count("revise") == 2
    assert nodes["root"].samples == 3  # the answer and two revisions


# -- budgets ---------------------------------------------------------------------------------


def test_a_manual_node_cap_limits_the_samples_drawn_and_says_so():
    backend = Scripted(["12"], output_tokens=40)
    # prompt of about 20 words + 40 output per sample: room for 2 samples in 130 tokens.
    strategy = StrategyConfig(kind="best_of_n", samples=8, selector=SelectorConfig(
        kind="regex", pattern="1"))  # fmt: skip
    plan = one_node(strategy, budget=NodeBudget(tokens=130))
    plan.default_generation = GenerationConfig(max_tokens=40)
    result, calls, nodes, _ = run(plan, backend)
    node = nodes["root"]
    assert result.status == "completed"
    assert 1 <= len(calls) < 8
    assert node.input_tokens + node.output_tokens <= 130 == node.token_cap
    assert f"allowed {len(calls)} of 8 samples" in (node.note or "")


def test_the_money_cap_stops_sampling_before_it_is_passed():
    backend = Scripted(["12"], price_in=1000.0, price_out=1000.0, output_tokens=50)
    plan = one_node(StrategyConfig(kind="self_consistency", samples=10, early_stop=False))
    plan.default_generation = GenerationConfig(max_tokens=50)
    result, calls, _, _ = run(plan, backend, RunCaps(total_cost_usd=0.5, total_tokens=100_000))
    assert result.cost_usd <= 0.5
    assert 1 <= len(calls) < 10


def test_a_budget_update_reports_spent_against_allowed():
    backend = Scripted(["12"])
    plan = one_node(StrategyConfig(kind="self_consistency", samples=3, early_stop=False))
    result, _, _, events = run(plan, backend, RunCaps(total_tokens=5000, wall_time_s=60))
    updates = [e for e in events if isinstance(e, BudgetUpdate)]
    assert updates, "no live meter update"
    last = updates[-1]
    assert last.tokens_used == result.total_tokens and last.tokens_allowed == 5000
    assert last.time_allowed_s == 60 and last.elapsed_s >= 0


def test_the_time_cap_stops_the_run_and_keeps_samples_already_drawn():
    backend = Scripted(["12"], sleep_s=0.4)
    plan = one_node(StrategyConfig(kind="self_consistency", samples=32, min_samples=1))
    plan.root.strategy = StrategyConfig(
        kind="self_consistency", samples=32, min_samples=1, confidence=1.0
    )
    started = time.perf_counter()
    result, calls, nodes, _ = run(plan, backend, RunCaps(wall_time_s=1.0))
    elapsed = time.perf_counter() - started
    assert result.status == "stopped" and "time cap reached" in (result.stop_reason or "")
    assert elapsed < 1.0 + 2.0
    assert nodes["root"].status == "done" and result.answer == "12"
    assert 1 <= sum(c.status == "ok" for c in calls) < 32


def _random_plan(draw: Any) -> tuple[Plan, RunCaps]:
    count = draw(st.integers(1, 6))
    kinds = st.sampled_from(["single", "best_of_n", "self_consistency", "self_refine"])
    children = []
    for index in range(count):
        kind = draw(kinds)
        cap = draw(st.one_of(st.none(), st.integers(16, 400)))
        children.append(
            Node(
                id=f"n{index}",
                title=f"step {index}",
                instruction="do it",
                strategy=StrategyConfig(
                    kind=kind,
                    samples=draw(st.integers(1, 6)),
                    selector=SelectorConfig(kind="regex", pattern="1"),
                    refine_rounds=draw(st.integers(1, 3)),
                ),
                budget=NodeBudget(tokens=cap) if cap else None,
            )
        )
    plan = Plan(
        task="t",
        root=Node(id="root", title="root", instruction="combine", children=children),
        default_model=ModelRef(kind="remote", base_url=URL, model="m"),
        default_generation=GenerationConfig(max_tokens=draw(st.integers(16, 80))),
    )
    caps = RunCaps(
        total_tokens=draw(st.integers(100, 3000)),
        max_parallel=draw(st.integers(1, 4)),
        total_cost_usd=draw(st.one_of(st.none(), st.floats(0.001, 0.2))),
    )
    return plan, caps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_node_and_no_run_ever_exceeds_its_cap(data):
    plan, caps = _random_plan(data.draw)
    backend = Scripted(["12", "7", "12 1"], price_in=50.0, price_out=200.0, output_tokens=30)
    result, _, nodes, _ = run(plan, backend, caps)
    assert result.total_tokens <= caps.total_tokens
    if caps.total_cost_usd is not None:
        assert result.cost_usd <= caps.total_cost_usd + 1e-12
    for node_id, node in nodes.items():
        spent = node.input_tokens + node.output_tokens
        if node.token_cap is not None:
            assert spent <= node.token_cap, node_id
        manual = plan.node(node_id).budget
        if manual is not None and manual.tokens is not None:
            assert spent <= manual.tokens, node_id
        if node.cost_cap_usd is not None:
            assert node.cost_usd <= node.cost_cap_usd + 1e-12


# -- replay ----------------------------------------------------------------------------------


def test_a_second_run_replays_every_sample_and_counts_their_recorded_cost():
    backend = Scripted(["12", "7", "12"], price_in=10.0, price_out=10.0)
    cache = MemoryCache()
    plan = one_node(StrategyConfig(kind="self_consistency", samples=3, early_stop=False))
    first, _, _, _ = execute_and_record(plan, backend, cache)
    calls_before = len(backend.calls)
    second, calls, nodes, _ = execute_and_record(plan, backend, cache)
    assert len(backend.calls) == calls_before  # no model call the second time
    assert second.answer == first.answer and second.total_tokens == 0
    assert second.attempt_tokens == first.total_tokens
    assert second.attempt_cost_usd == pytest.approx(first.cost_usd)
    assert second.replayed and nodes["root"].reused_from == first.run_id
    assert all(c.reused_from == first.run_id for c in calls)
    third, _, _, _ = execute_and_record(plan, backend, cache)
    assert third.attempt_tokens == first.total_tokens  # replays of replays keep the real cost


def execute_and_record(plan: Plan, backend: Backend, cache: MemoryCache):
    """A run whose calls the memory cache both answers and records."""
    return run(plan, backend, cache=cache, extra_listeners=[cache])
