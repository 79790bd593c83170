"""Metrics: accuracy, mean cost and latency, cost-of-pass, and the accuracy/cost Pareto frontier.

Following Cost-of-Pass (arXiv 2504.13359), *cost-of-pass* is the expected cost of one correct
answer: mean cost per attempt / accuracy, infinite when it never passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from engine.errors import EvaluationError
from engine.tune.checking import CheckerConfig

if TYPE_CHECKING:
    import altair


@dataclass
class ExampleOutcome:
    """One configuration's attempt at one example, checked."""

    configuration: str
    example_id: str
    run_id: str
    output: str | None
    expected: str
    correct: bool
    detail: str
    #: Tokens and dollars of the attempt, replayed calls counted at what they cost when made.
    tokens: int
    cost_usd: float
    latency_s: float
    #: Every call came from recorded outcomes; nothing was computed again.
    replayed: bool
    error: str | None = None
    #: The example's difficulty level (1-5) where the dataset gives one.
    difficulty: int | None = None


@dataclass
class ConfigurationResult:
    """One configuration's metrics over the examples it finished."""

    name: str
    n: int
    correct: int
    accuracy: float
    mean_tokens: float
    mean_cost_usd: float
    mean_latency_s: float
    #: Expected dollars (tokens) per correct answer: mean cost / accuracy; inf if none passed.
    cost_of_pass_usd: float
    cost_of_pass_tokens: float
    replayed: int
    outcomes: list[ExampleOutcome] = field(default_factory=list)


def summarise(name: str, outcomes: Sequence[ExampleOutcome]) -> ConfigurationResult:
    """Metrics of one configuration's outcomes (no outcomes: accuracy 0, costs 0)."""
    n = len(outcomes)
    correct = sum(1 for outcome in outcomes if outcome.correct)
    accuracy = correct / n if n else 0.0
    mean_tokens = sum(o.tokens for o in outcomes) / n if n else 0.0
    mean_cost = sum(o.cost_usd for o in outcomes) / n if n else 0.0
    mean_latency = sum(o.latency_s for o in outcomes) / n if n else 0.0
    return ConfigurationResult(
        name=name,
        n=n,
        correct=correct,
        accuracy=accuracy,
        mean_tokens=mean_tokens,
        mean_cost_usd=mean_cost,
        mean_latency_s=mean_latency,
        cost_of_pass_usd=mean_cost / accuracy if accuracy else math.inf,
        cost_of_pass_tokens=mean_tokens / accuracy if accuracy else math.inf,
        replayed=sum(1 for outcome in outcomes if outcome.replayed),
        outcomes=list(outcomes),
    )


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, accuracy)`` points no other point dominates, sorted by cost.

    A point is dominated by one with lower-or-equal cost and higher-or-equal accuracy, at
    least one of them strictly. Identical points do not dominate each other, so both stay.
    Ties in cost are ordered by accuracy, highest first, then by index.
    """
    frontier = [
        i
        for i, (cost, accuracy) in enumerate(points)
        if not any(
            other_cost <= cost
            and other_accuracy >= accuracy
            and (other_cost < cost or other_accuracy > accuracy)
            for other_cost, other_accuracy in points
        )
    ]
    return sorted(frontier, key=lambda i: (points[i][0], -points[i][1], i))


CostUnit = Literal["usd", "tokens"]


def _cost_of(result: ConfigurationResult, cost: str) -> float:
    if cost == "usd":
        return result.mean_cost_usd
    if cost == "tokens":
        return result.mean_tokens
    raise EvaluationError(f"Unknown cost unit {cost!r}: use 'usd' or 'tokens'.")


@dataclass
class EvaluationReport:
    """What an evaluation found, per configuration; ``status`` is completed, cancelled or
    failed (``error`` says why), and holds what finished either way."""

    evaluation_id: str
    dataset: str
    checker: CheckerConfig
    results: list[ConfigurationResult]
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None = None

    def frontier(self, cost: str = "usd") -> list[str]:
        """Names of the configurations on the accuracy/cost Pareto frontier, cheapest first.

        ``cost`` is ``usd`` (mean dollars per attempt) or ``tokens`` (mean tokens per attempt);
        configurations that finished no example are left out.
        """
        measured = [result for result in self.results if result.n]
        points = [(_cost_of(result, cost), result.accuracy) for result in measured]
        return [measured[i].name for i in pareto_frontier(points)]

    def cost_unit(self) -> str:
        """Dollars when any configuration cost money, else tokens (local models are free)."""
        return "usd" if any(result.mean_cost_usd for result in self.results) else "tokens"

    def rows(self, cost: str = "usd") -> list[dict[str, Any]]:
        """One table row per configuration; ``on_frontier`` is by ``cost`` (dollars)."""
        on_frontier = set(self.frontier(cost))
        return [
            {
                "configuration": r.name,
                "n": r.n,
                "correct": r.correct,
                "accuracy": r.accuracy,
                "mean_tokens": r.mean_tokens,
                "mean_cost_usd": r.mean_cost_usd,
                "mean_latency_s": r.mean_latency_s,
                "cost_of_pass_usd": r.cost_of_pass_usd,
                "cost_of_pass_tokens": r.cost_of_pass_tokens,
                "replayed": r.replayed,
                "on_frontier": r.name in on_frontier,
            }
            for r in self.results
        ]

    def outcomes(self) -> list[ExampleOutcome]:
        """Every outcome, configuration by configuration."""
        return [outcome for result in self.results for outcome in result.outcomes]

    def difficulty_levels(self) -> list[int]:
        return sorted({o.difficulty for o in self.outcomes() if o.difficulty is not None})

    def at_level(self, level: int) -> EvaluationReport:
        """The same report over the examples of difficulty ``level`` only."""
        results = [
            summarise(r.name, [o for o in r.outcomes if o.difficulty == level])
            for r in self.results
        ]
        return replace(self, dataset=f"{self.dataset}, level {level}", results=results)

    def level_rows(self) -> list[dict[str, Any]]:
        """``rows()`` per difficulty level, each with its ``difficulty`` (empty without levels);
        ``on_frontier`` is by the report's ``cost_unit``."""
        unit = self.cost_unit()
        return [
            {"difficulty": level, **row}
            for level in self.difficulty_levels()
            for row in self.at_level(level).rows(unit)
        ]


# -- does difficulty predict failure? ---------------------------------------------------------
def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side has no spread (it is undefined)."""
    if len(xs) != len(ys):
        raise ValueError("rank_correlation needs two sequences of the same length")
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else None


def level_failure_correlation(report: EvaluationReport) -> dict[str, float | None]:
    """Per configuration, the rank correlation between an example's difficulty level and its
    failure (1 wrong, 0 right): positive when harder levels fail more, as a difficulty signal
    that is worth allocating by must. Examples without a level are left out."""
    found: dict[str, float | None] = {}
    for result in report.results:
        rated = [o for o in result.outcomes if o.difficulty is not None]
        found[result.name] = rank_correlation(
            [float(o.difficulty or 0) for o in rated], [0.0 if o.correct else 1.0 for o in rated]
        )
    return found


# -- chart -----------------------------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def accuracy_cost_chart(report: EvaluationReport, cost: str = "usd") -> altair.LayerChart:
    """Accuracy against mean cost per attempt, one point per configuration; the Pareto
    frontier drawn as a line through larger, filled points. Tooltips give the name, accuracy,
    cost and cost-of-pass (blank when infinite)."""
    import altair as alt  # heavy: only charts need it

    frontier = set(report.frontier(cost))
    unit = "mean $ per attempt" if cost == "usd" else "mean tokens per attempt"
    rows: list[dict[str, Any]] = [
        {
            "configuration": r.name,
            "accuracy": r.accuracy,
            "cost": _cost_of(r, cost),
            "cost_of_pass": _finite_or_none(
                r.cost_of_pass_usd if cost == "usd" else r.cost_of_pass_tokens
            ),
            "frontier": r.name in frontier,
        }
        for r in report.results
        if r.n
    ]
    data = alt.Data(values=rows)
    tooltip = [
        alt.Tooltip("configuration:N", title="configuration"),
        alt.Tooltip("accuracy:Q", title="accuracy", format=".0%"),
        alt.Tooltip("cost:Q", title=unit, format=".6g"),
        alt.Tooltip("cost_of_pass:Q", title="cost-of-pass", format=".6g"),
    ]
    # Room right of the costliest point for its label; from 0 so costs compare by length.
    most = max((row["cost"] for row in rows), default=0.0) or 1.0
    base = alt.Chart(data).encode(
        x=alt.X("cost:Q", title=unit, scale=alt.Scale(domain=[0, most * 1.25], nice=False)),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=tooltip,
    )
    points = base.mark_circle(size=70, opacity=0.6)
    on_frontier = base.transform_filter("datum.frontier")
    line = on_frontier.mark_line(strokeDash=[4, 3]).encode(order="cost:Q")
    marked = on_frontier.mark_point(size=140, filled=True, shape="diamond")
    labels = base.mark_text(align="left", dx=8, dy=-6).encode(text="configuration:N")
    return (points + line + marked + labels).properties(
        title=f"Accuracy vs cost on {report.dataset} (frontier: diamonds)"
    )


__all__ = [
    "ConfigurationResult",
    "CostUnit",
    "EvaluationReport",
    "ExampleOutcome",
    "accuracy_cost_chart",
    "pareto_frontier",
    "summarise",
]
