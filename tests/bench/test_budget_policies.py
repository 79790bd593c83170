"""bench/budget_policies.py and the recorded real tables: the statistics can go either way, and
the shipped recordings are what they say they are."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from bench.budget_policies import (
    _interpolate,
    compare,
    difficulty_policy,
    fast_deliberate_policy,
    per_example_policies,
    spearman,
)
from bench.record_outcomes import NODE_IDS, node_scores_path, table_path
from engine.plan.compute_config import SINGLE_CALL
from engine.plan.model_settings import ModelRef
from engine.tune.outcome_table import Outcome, OutcomeTable
from engine.tune.search import NodeOption, SearchSpace


def test_spearman_follows_the_ranks_and_is_undefined_without_spread():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [0, 1, 0, 1]) == pytest.approx(0.0)
    assert spearman([3, 3, 3], [0, 1, 0]) is None
    # Ties share their mean rank: (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)


def test_interpolation_is_linear_inside_and_none_outside():
    assert _interpolate([100, 200], [0.2, 0.4], 150) == pytest.approx(0.3)
    assert _interpolate([200, 100], [0.4, 0.2], 100) == pytest.approx(0.2)
    assert _interpolate([100, 200], [0.2, 0.4], 250) is None


def test_policies_spend_where_the_signal_is_high():
    signal = {"a": 1.0, "b": 3.0, "c": 5.0}
    assert difficulty_policy(signal, 1) == {"a": 0, "b": 1, "c": 3}
    assert difficulty_policy(signal, 3) == {"a": 1, "b": 3, "c": 3}
    assert fast_deliberate_policy(signal, 3) == {"a": 0, "b": 3, "c": 3}
    flat = {"a": 2.0, "b": 2.0}
    assert difficulty_policy(flat, 2) == {"a": 2, "b": 2}


def _table(correct: dict[tuple[int, int], list[bool]], tokens: dict[int, int]) -> OutcomeTable:
    options = [
        NodeOption(label=f"o{i}", model=ModelRef(kind="local"), strategy=SINGLE_CALL, max_tokens=8)
        for i in range(4)
    ]
    space = SearchSpace(options={"x": options, "y": [o.model_copy() for o in options]})
    n = len(next(iter(correct.values())))
    table = OutcomeTable(space, n, "tokens")
    for assignment in space.all_assignments():
        key = (assignment["x"], assignment["y"])
        flags = correct.get(key, [False] * n)
        cost = tokens[assignment["x"]] + tokens[assignment["y"]]
        table.record(assignment, [Outcome(f, float(cost), cost, 0.0) for f in flags])
    return table


def test_a_policy_that_beats_uniform_at_the_same_tokens_shows_a_positive_difference():
    correct = {
        (0, 0): [True] * 2 + [False] * 8,
        (1, 1): [True] * 4 + [False] * 6,
        (2, 2): [True] * 5 + [False] * 5,
        (3, 3): [True] * 6 + [False] * 4,
        (0, 2): [True] * 8 + [False] * 2,  # as cheap as (1, 1), twice as right
        (0, 1): [True] * 5 + [False] * 5,  # uniform 2's accuracy for half its tokens
    }
    table = _table(correct, {0: 10, 1: 20, 2: 30, 3: 40})
    points = [(f"uniform {k}", {"x": k, "y": k}) for k in range(4)]
    points += [("skewed", {"x": 0, "y": 2}), ("thrifty", {"x": 0, "y": 1})]
    rows = {row["policy"]: row for row in compare(table, points)}
    skewed = rows["skewed"]
    assert skewed["tokens"] == 40 and skewed["accuracy"] == pytest.approx(0.8)
    assert skewed["delta_accuracy"] == pytest.approx(0.4)  # uniform 1 gets 0.4 at 40 tokens
    assert skewed["token_change"] is None  # no uniform choice ever reaches 0.8
    thrifty = rows["thrifty"]  # 0.5 for 30 tokens; uniform reaches 0.5 at 60 (uniform 2)
    assert thrifty["token_change"] == pytest.approx(-0.5)
    low, high = skewed["intervals"]["delta_accuracy"]
    assert low <= 0.4 <= high and low > 0
    assert rows["uniform 1"]["delta_accuracy"] == pytest.approx(0.0)
    assert math.isclose(rows["uniform 3"]["cost_of_pass"], 80 / 0.6)


@pytest.mark.parametrize(("family", "recorded"), [("chain_sum", 64), ("word_sorting", 64)])
def test_the_recorded_table_is_real_and_agrees_with_its_node_scores(family, recorded):
    table = OutcomeTable.load(table_path(family))
    assert table.n_examples == 42 and len(table) == recorded
    assert table.complete == (recorded == 64)
    meta = table.metadata
    assert meta["source"].startswith("recorded") and len(meta["model_sha256"]) == 64
    assert meta["seeds"] == {"dataset": 7, "sampling": 11} and meta["recording_s"] > 0
    for resumed in meta.get("resumed", []):  # a resumed recording names the code it went on with
        assert resumed["arbor_version"] and 0 < resumed["recorded_before"] < recorded
    scores = json.loads(gzip.decompress(node_scores_path(family).read_bytes()))
    assert len(scores) == recorded
    for assignment in table.space.all_assignments():
        if assignment not in table:
            continue
        name = "-".join(str(assignment[node]) for node in NODE_IDS)
        final = scores[name]["final"]
        # The pipeline's answer is the final node's output, scored by the same scorer.
        assert final == "".join("1" if o.correct else "0" for o in table.outcomes(assignment))
        assert all(o.tokens > 0 for o in table.outcomes(assignment))
    # More samples never cost fewer tokens than one call of the same budget on every node.
    single = table.outcomes(dict.fromkeys(NODE_IDS, 1))
    voted = table.outcomes(dict.fromkeys(NODE_IDS, 3))
    assert sum(o.tokens for o in voted) > sum(o.tokens for o in single)


def test_per_example_policies_give_harder_examples_more_and_are_evaluated_per_example():
    nodes = ("x", "y")
    points = dict(per_example_policies(nodes, [1.0, 3.0, 5.0], [2.0, 2.0, 4.0]))
    assert [a["x"] for a in points["per-example rated 1"]] == [0, 1, 3]
    assert [a["y"] for a in points["per-example rated f/d >=5"]] == [0, 0, 3]
    assert [a["x"] for a in points["per-example level-measured f/d >=4"]] == [0, 0, 3]
    # Example 0 right only under option 0, example 1 only under option 3: a per-example
    # choice of (0, 3) gets both, which no uniform option does.
    correct = {(0, 0): [True, False], (3, 3): [False, True]}
    table = _table(correct, {0: 10, 1: 20, 2: 30, 3: 40})
    uniform = [(f"uniform {k}", {"x": k, "y": k}) for k in range(4)]
    choice = [{"x": 0, "y": 0}, {"x": 3, "y": 3}]
    rows = {row["policy"]: row for row in compare(table, [*uniform, ("mixed", choice)])}
    assert rows["mixed"]["accuracy"] == 1.0 and rows["mixed"]["tokens"] == 50


@pytest.mark.model
def test_the_recorder_resumes_and_a_rerun_calls_no_model(tmp_path):
    from bench.record_outcomes import _calls, record
    from storage.workspace import Workspace

    out = tmp_path / "table.json.gz"
    store = tmp_path / "store"
    first = dict.fromkeys(NODE_IDS, 0)
    second = {**first, "final": 1}
    assert record("chain_sum", per_level=1, out=out, workspace=store, only=[first]) == 0
    table = OutcomeTable.load(out)
    assert len(table) == 1 and first in table and table.n_examples == 3
    made = _calls(Workspace(store))
    assert made >= 9  # three nodes, three examples, one call each
    # A second assignment that changes only the final node re-runs only the final node.
    assert record("chain_sum", per_level=1, out=out, workspace=store, only=[first, second]) == 0
    table = OutcomeTable.load(out)
    assert len(table) == 2 and _calls(Workspace(store)) - made == 3
    # Asking again records nothing and calls nothing.
    calls = _calls(Workspace(store))
    assert record("chain_sum", per_level=1, out=out, workspace=store, only=[first, second]) == 0
    assert _calls(Workspace(store)) == calls
    assert json.loads(gzip.decompress(out.read_bytes()))["metadata"]["recorded_assignments"] == 2
