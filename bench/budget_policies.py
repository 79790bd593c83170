"""Budget policies against uniform on REAL recorded runs; is the planner's difficulty rating right?

Reads the tables ``bench/record_outcomes.py`` wrote (``bench/data/real_outcomes_FAMILY.json.gz``:
the three-node draft -> check -> final plan, every node with four options ordered by cost:
``0`` single · short, ``1`` single · long, ``2`` sc3 · long, ``3`` sc5 · long) and compares, at
equal token budget:

* ``uniform k``: every node option ``k`` (the baseline curve, k = 0..3);
* ``difficulty k`` (Plan-and-Budget, arXiv 2505.16122): node ``n`` gets option
  ``clip(k + r_n - mean(r))``: more compute where the planner rated the step harder, less where
  easier, the same on average;
* ``fast/deliberate t`` (SCALE, arXiv 2512.00466): nodes rated ``>= t`` get the deliberate
  option (sc5 · long), the others the fast one (single · short);
* ``measured k``: Plan-and-Budget with each node's *measured* failure rate (on the recorded
  runs of uniform option 1) in place of the planner's rating.

Ratings ``r_n`` are the planner's own (``engine.planner.difficulty.rate_difficulty``, bundled
model), one per node per example (the step's title and the example's question), and a policy
uses each node's median over the examples. Ratings are cached in
``bench/data/difficulty_ratings_FAMILY.json`` (``--rate`` makes them again; needs the model).

For each policy point: accuracy and mean tokens per example, the uniform curve's accuracy at the
same tokens (linear between its neighbours), the uniform curve's tokens at the same accuracy,
and cost-of-pass (tokens / accuracy); 95% intervals from 2,000 bootstrap resamples of the
examples (the same resample for the policy and for uniform, so the difference is paired).

Then the difficulty rating: over every (node, example), the rank correlation (Spearman) between
the planner's 1-5 rating and the node's own failure (its output scored as an answer, uniform
option 1), with a bootstrap interval; and the same for the generator's level (1-3), the
difficulty that is known. Usage::

    .venv/bin/python bench/budget_policies.py [--family chain_sum --family word_sorting] [--rate]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record_outcomes import DATA, LEVELS, SEED, node_scores_path, read_json, table_path
from engine.tune.metrics import rank_correlation
from engine.tune.outcome_table import OutcomeTable

RESAMPLES = 2000
DELIBERATE, FAST = 3, 0


def ratings_path(family: str) -> Path:
    return DATA / f"difficulty_ratings_{family}.json"


# -- ratings ---------------------------------------------------------------------------------
def rate_examples(family: str, per_level: int) -> dict[str, list[int | None]]:
    """The planner's rating of every node for every example (needs the bundled model)."""
    from engine.models import backend_for
    from engine.plan import ModelRef
    from engine.planner.difficulty import rate_difficulty
    from engine.tune.datasets import GeneratedSpec, generate_dataset
    from engine.tune.datasets.plans import few_shot_plan

    dataset = generate_dataset(GeneratedSpec(family, SEED, LEVELS, per_level))
    template = few_shot_plan(family)
    backend = backend_for(ModelRef())
    ratings: dict[str, list[int | None]] = {node.id: [] for node, _ in template.iter_nodes()}
    for example in dataset.examples:
        plan = template.model_copy(deep=True)
        plan.task = example.input
        question = " ".join(example.input.split())
        for node, _ in plan.iter_nodes():
            node.instruction = question
        rated, _notes = rate_difficulty(plan, backend=backend, only_missing=False, seed=7)
        for node, _ in rated.iter_nodes():
            ratings[node.id].append(node.difficulty)
    return ratings


# -- policies --------------------------------------------------------------------------------
Assignment = dict[str, int]


def _clip(value: float) -> int:
    return max(0, min(3, round(value)))


def difficulty_policy(signal: dict[str, float], k: int) -> Assignment:
    mean = statistics.mean(signal.values())
    return {node: _clip(k + value - mean) for node, value in signal.items()}


def fast_deliberate_policy(signal: dict[str, float], threshold: float) -> Assignment:
    return {node: DELIBERATE if value >= threshold else FAST for node, value in signal.items()}


def per_example_policies(
    nodes: Sequence[str], example_rating: list[float], example_signal: list[float]
) -> list[tuple[str, Choice]]:
    """Query-level allocation: every node of an example gets the same option, chosen from the
    example's difficulty (``example_rating``: the planner's mean rating of its steps;
    ``example_signal``: the measured failure rate of its level, 1-5)."""
    points: list[tuple[str, Choice]] = []
    for label, signal in (("rated", example_rating), ("level-measured", example_signal)):
        mean = statistics.mean(signal)
        for k in range(4):
            points.append(
                (
                    f"per-example {label} {k}",
                    [dict.fromkeys(nodes, _clip(k + v - mean)) for v in signal],
                )
            )
        for t in sorted(set(signal))[1:]:
            points.append(
                (
                    f"per-example {label} f/d >={t:.2g}",
                    [dict.fromkeys(nodes, DELIBERATE if v >= t else FAST) for v in signal],
                )
            )
    return points


def policies(
    nodes: Sequence[str], rated: dict[str, float], measured: dict[str, float]
) -> list[tuple[str, Choice]]:
    points: list[tuple[str, Choice]] = [(f"uniform {k}", dict.fromkeys(nodes, k)) for k in range(4)]
    points += [(f"difficulty {k}", difficulty_policy(rated, k)) for k in range(4)]
    points += [
        (f"fast/deliberate >={t:g}", fast_deliberate_policy(rated, t))
        for t in sorted(set(rated.values()))
    ]
    points += [(f"measured {k}", difficulty_policy(measured, k)) for k in range(4)]
    return points


# -- evaluation with paired bootstrap --------------------------------------------------------
@dataclass
class Point:
    name: str
    assignment: Assignment
    accuracy: float
    tokens: float
    uniform_accuracy_at_tokens: float | None
    uniform_tokens_at_accuracy: float | None
    cost_of_pass: float
    intervals: dict[str, tuple[float, float]]


#: A policy's choice: one assignment for every example, or one per example (in order).
Choice = Assignment | list[Assignment]


def _per_example(choice: Choice, n: int) -> list[Assignment]:
    return choice if isinstance(choice, list) else [choice] * n


def _metrics(table: OutcomeTable, choice: Choice, sample: Sequence[int]) -> tuple[float, float]:
    chosen = _per_example(choice, table.n_examples)
    picked = [table.outcomes(chosen[i])[i] for i in sample]
    return (
        sum(o.correct for o in picked) / len(picked),
        sum(o.tokens for o in picked) / len(picked),
    )


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """y at x on the piecewise-linear curve through (xs, ys) sorted by xs; None outside."""
    pairs = sorted(zip(xs, ys, strict=True))
    for (x0, y0), (x1, y1) in itertools.pairwise(pairs):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def _monotone(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """The uniform curve as its upper envelope (best accuracy reachable at or under each
    token level), so 'uniform at equal tokens' is the best uniform choice, never a worse one."""
    pairs = sorted(zip(xs, ys, strict=True))
    out_x, out_y, best = [], [], -1.0
    for x, y in pairs:
        best = max(best, y)
        out_x.append(x)
        out_y.append(best)
    return out_x, out_y


Curve = tuple[list[float], list[float]]


def _uniform_curve(table: OutcomeTable, uniform: list[Assignment], sample: Sequence[int]) -> Curve:
    """Uniform's best accuracy reachable at each token level, on ``sample``."""
    points = [_metrics(table, u, sample) for u in uniform]
    return _monotone([t for _, t in points], [a for a, _ in points])


def _evaluate_point(
    table: OutcomeTable, curve: Curve, assignment: Choice, sample: Sequence[int]
) -> dict[str, float | None]:
    accuracy, tokens = _metrics(table, assignment, sample)
    xs, ys = curve
    at_tokens = _interpolate(xs, ys, tokens)
    # Tokens uniform needs for this accuracy: the inverse of the (monotone) curve.
    at_accuracy = None
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if y0 <= accuracy <= y1 and y1 > y0:
            at_accuracy = x0 + (x1 - x0) * (accuracy - y0) / (y1 - y0)
            break
    if at_accuracy is None and ys and accuracy <= ys[0]:
        at_accuracy = xs[0]
    return {
        "accuracy": accuracy,
        "tokens": tokens,
        "delta_accuracy": None if at_tokens is None else accuracy - at_tokens,
        "token_change": None if at_accuracy is None else tokens / at_accuracy - 1,
        "cost_of_pass": tokens / accuracy if accuracy else float("inf"),
        "uniform_accuracy_at_tokens": at_tokens,
        "uniform_tokens_at_accuracy": at_accuracy,
    }


def _interval(values: list[float]) -> tuple[float, float]:
    finite = sorted(v for v in values if v is not None and v != float("inf"))
    if not finite:
        return (float("nan"), float("nan"))
    lo = finite[int(0.025 * (len(finite) - 1))]
    hi = finite[int(0.975 * (len(finite) - 1))]
    return (lo, hi)


def compare(
    table: OutcomeTable, points: list[tuple[str, Choice]], seed: int = 0
) -> list[dict[str, Any]]:
    n = table.n_examples
    everyone = list(range(n))
    uniform = [a for name, a in points if name.startswith("uniform") and isinstance(a, dict)]
    rng = random.Random(seed)
    samples = [[rng.randrange(n) for _ in range(n)] for _ in range(RESAMPLES)]
    # Uniform's curve depends only on the resample: computed once per resample, not per policy.
    whole = _uniform_curve(table, uniform, everyone)
    curves = [_uniform_curve(table, uniform, sample) for sample in samples]
    rows = []
    for name, assignment in points:
        if any(a not in table for a in _per_example(assignment, n)):
            rows.append({"policy": name, "assignment": assignment, "missing": True})
            continue
        found = _evaluate_point(table, whole, assignment, everyone)
        boot = [
            _evaluate_point(table, curve, assignment, sample)
            for curve, sample in zip(curves, samples, strict=True)
        ]
        intervals = {
            key: _interval([b[key] for b in boot])  # type: ignore[misc]
            for key in ("accuracy", "tokens", "delta_accuracy", "token_change", "cost_of_pass")
        }
        rows.append({"policy": name, "assignment": assignment, **found, "intervals": intervals})
    return rows


# -- the difficulty rating against measured failure ------------------------------------------
spearman = rank_correlation


def correlation_with_interval(
    pairs: list[tuple[float, float]], seed: int = 0
) -> tuple[float | None, tuple[float, float]]:
    rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
    rng = random.Random(seed)
    boot = []
    for _ in range(RESAMPLES):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        value = spearman([a for a, _ in sample], [b for _, b in sample])
        if value is not None:
            boot.append(value)
    return rho, _interval(boot)


def report(family: str, rate: bool, record_missing: bool = False) -> dict[str, Any]:
    if record_missing:
        # The policies' assignments only (not the whole table): uniform first, because the
        # measured policy reads the nodes' failures under uniform option 1.
        from bench.record_outcomes import NODE_IDS, record

        record(family, only=[dict.fromkeys(NODE_IDS, k) for k in range(4)])
    table = OutcomeTable.load(table_path(family))
    nodes = list(table.space.nodes)
    per_level = table.n_examples // len(LEVELS)
    if rate or not ratings_path(family).exists():
        ratings_path(family).write_text(json.dumps(rate_examples(family, per_level)) + "\n")
    ratings: dict[str, list[int | None]] = json.loads(ratings_path(family).read_text())
    node_scores: dict[str, dict[str, str]] = read_json(node_scores_path(family))
    reference = "-".join("1" for _ in nodes)  # uniform option 1: single call, long budget
    failures = {node: [1 - int(c) for c in node_scores[reference][node]] for node in nodes}
    rated = {
        node: statistics.median([r for r in ratings[node] if r is not None] or [3])
        for node in nodes
    }
    measured = {
        node: 1 + 4 * statistics.mean(failures[node]) for node in nodes
    }  # failure rate 0..1 -> 1..5
    levels = [lvl for lvl in LEVELS for _ in range(per_level)]
    points = policies(nodes, rated, measured)
    wanted = [a for _, a in points if isinstance(a, dict)]
    if record_missing and any(a not in table for a in wanted):
        from bench.record_outcomes import record

        record(family, only=wanted)
        table = OutcomeTable.load(table_path(family))
    example_rating = [
        statistics.mean([float(ratings[node][e] or 3) for node in nodes])
        for e in range(table.n_examples)
    ]
    level_failure = {
        level: statistics.mean(
            failures[node][e]
            for node in nodes
            for e in range(table.n_examples)
            if levels[e] == level
        )
        for level in LEVELS
    }
    example_signal = [1 + 4 * level_failure[levels[e]] for e in range(table.n_examples)]
    points += per_example_policies(nodes, example_rating, example_signal)
    rows = compare(table, points)
    pairs_rating = [
        (float(ratings[node][e]), float(failures[node][e]))
        for node in nodes
        for e in range(table.n_examples)
        if ratings[node][e] is not None
    ]
    pairs_level = [
        (float(levels[e]), float(failures[node][e]))
        for node in nodes
        for e in range(table.n_examples)
    ]
    return {
        "family": family,
        "examples": table.n_examples,
        "rated": rated,
        "measured_failure": {node: statistics.mean(failures[node]) for node in nodes},
        "rows": rows,
        "rating_vs_failure": correlation_with_interval(pairs_rating),
        "rated_pairs": len(pairs_rating),
        "rating_spread": sorted({a for a, _ in pairs_rating}),
        "level_vs_failure": correlation_with_interval(pairs_level),
        "level_failure": level_failure,
    }


def _fmt_interval(interval: tuple[float, float], scale: float = 1, digits: int = 2) -> str:
    lo, hi = interval
    return f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def print_report(found: dict[str, Any]) -> None:
    print(f"\n== {found['family']}: {found['examples']} examples, levels {LEVELS} ==")
    print(f"planner's ratings (median per node): {found['rated']}")
    print(f"measured node failure (uniform option 1): "
          f"{ {k: round(v, 3) for k, v in found['measured_failure'].items()} }")  # fmt: skip
    header = (f"{'policy':<32} {'options':<14} {'accuracy':>8} {'95% CI':>14} {'tokens':>7} "
              f"{'Δacc@tokens':>11} {'95% CI':>16} {'Δtokens@acc':>11} {'95% CI':>18} "
              f"{'cost/pass':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in found["rows"]:
        choice = row["assignment"]
        if isinstance(choice, list):
            counts = Counter(next(iter(a.values())) for a in choice)
            options = " ".join(f"{k}:{counts[k]}" for k in sorted(counts))
        else:
            options = "".join(str(v) for v in choice.values())
        if row.get("missing"):
            print(f"{row['policy']:<32} {options:<14} (not in the table)")
            continue
        ci = row["intervals"]
        delta = row["delta_accuracy"]
        change = row["token_change"]
        print(
            f"{row['policy']:<32} {options:<14} {row['accuracy']:>8.3f} "
            f"{_fmt_interval(ci['accuracy']):>14} {row['tokens']:>7.0f} "
            f"{'-' if delta is None else f'{delta:+.3f}':>11} "
            f"{_fmt_interval(ci['delta_accuracy'], digits=3):>16} "
            f"{'-' if change is None else f'{change:+.1%}':>11} "
            f"{_fmt_interval(ci['token_change'], 100, 1):>18} "
            f"{row['cost_of_pass']:>9.0f}"
        )
    rho, interval = found["rating_vs_failure"]
    shown = "undefined (no spread)" if rho is None else f"{rho:+.3f}"
    print(f"planner rating vs node failure, {found['rated_pairs']} (node, example) pairs, "
          f"ratings seen {found['rating_spread']}: Spearman {shown} "
          f"{_fmt_interval(interval, digits=3)}")  # fmt: skip
    rho, interval = found["level_vs_failure"]
    shown = "undefined" if rho is None else f"{rho:+.3f}"
    print(f"generator level vs node failure: Spearman {shown} "
          f"{_fmt_interval(interval, digits=3)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", help="default: every recorded table")
    parser.add_argument("--rate", action="store_true", help="rate the nodes again (model)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--record-missing",
        action="store_true",
        help="record the policies' assignments a table lacks (model; minutes)",
    )
    args = parser.parse_args(argv)
    families = args.family or sorted(
        p.name.removeprefix("real_outcomes_").removesuffix(".json.gz")
        for p in DATA.glob("real_outcomes_*.json.gz")
    )
    found = [report(family, args.rate, args.record_missing) for family in families]
    for item in found:
        print_report(item)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
