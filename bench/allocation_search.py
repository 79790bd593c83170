"""Per-node allocation search vs the exhaustive optimum, on recorded outcome tables: the
SIMULATED one and the REAL ones side by side.

Loads ``bench/data/outcome_table.json.gz`` (4 nodes × 5 options = 625 assignments × 60
examples, written by ``bench/make_outcome_table.py``; simulated, no model was run) and every
complete real table ``bench/data/real_outcomes_*.json.gz`` (3 nodes × 4 options = 64
assignments × 42 generated examples, every run made with the bundled model by
``bench/record_outcomes.py``; an incomplete one is reported and skipped), and, for three
budgets (the 30th, 50th and 80th percentile of the assignments' mean cost per example), runs
side by side in one process:

* ``exhaustive``: all 625 assignments, the optimum every other row is divided by;
* ``uniform``: the best assignment with the same option on every node (the uniform baseline);
* ``coordinate descent`` and ``successive halving``, each capped at 10% of the assignments
  (successive halving also as the mean over 10 seeds, since one seed can be lucky);
* ``random search`` with the same number of trials (mean of 10 seeds): the bar the methods
  must clear to be worth their logic;
* ``llm-guided`` (AgentTTS-style) with the bundled model, only with ``--llm`` (20 trials; takes
  minutes on 2 cores; run it as ``flock /tmp/arbor-model.lock .venv/bin/python ...``), next to
  its control: the same search without a model, where every round is a random mutation of the
  best so far (mean of 10 seeds).

Trials are full-dataset evaluations: successive halving's partial runs count as the fraction of
examples they ran, so "evals" is comparable across methods. The target is >= 95% of the
optimum's accuracy with <= 10% of the exhaustive trials. Usage::

    .venv/bin/python bench/allocation_search.py [--table PATH ...] [--llm] [--llm-trials 20]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.errors import ModelUnavailable
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback
from engine.plan.model_settings import GenerationConfig
from engine.tune.outcome_table import OutcomeTable, TableEvaluator
from engine.tune.search import (
    SearchResult,
    best_uniform,
    coordinate_descent,
    exhaustive,
    llm_guided_search,
    random_search,
    successive_halving,
)

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TABLE = DATA / "outcome_table.json.gz"
PERCENTILES = (30, 50, 80)
TRIAL_SHARE = 0.10
TARGET_RATIO = 0.95
SEEDS = 10


@dataclass
class Row:
    method: str
    percentile: int
    budget: float
    accuracy: float | None
    ratio: float | None
    trials_used: float
    evaluations: float
    seconds: float

    def meets(self, exhaustive_size: int) -> bool:
        return (
            self.ratio is not None
            and self.ratio >= TARGET_RATIO - 1e-9
            and self.evaluations <= TRIAL_SHARE * exhaustive_size + 1e-9
        )


def budget_at(costs: list[float], percentile: int) -> float:
    """Nearest-rank percentile of the assignments' mean costs (so some assignment costs it)."""
    ordered = sorted(costs)
    return ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]


def _row(result: SearchResult, percentile: int, optimum: float, seconds: float) -> Row:
    accuracy = result.best.accuracy if result.best is not None else None
    return Row(
        result.method,
        percentile,
        result.budget,
        accuracy,
        None if accuracy is None or optimum <= 0 else accuracy / optimum,
        result.trials_used,
        result.evaluations,
        seconds,
    )


class NoModel(Backend):
    """The control for llm-guided search: every call fails, so every round is a mutation."""

    label = "no model"

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        raise ModelUnavailable("the control run has no model")


def _proposal_summary(result: SearchResult) -> str:
    """How many rounds the model's proposal was used, and why the others fell back."""
    rounds = result.trials[1:]
    used = sum(t.note.startswith("llm proposal") for t in rounds)
    reasons = Counter(t.note.split(":")[1].strip() for t in rounds if t.note.startswith("fallback"))
    why = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    return f"{used} of {len(rounds)} model proposals used" + (f"; fallbacks: {why}" if why else "")


def _timed(run: Callable[[], SearchResult]) -> tuple[SearchResult, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _mean_row(
    name: str, search: Callable[[int], SearchResult], percentile: int, optimum: float
) -> Row:
    """One row averaging a seeded search over ``SEEDS`` seeds (one seed can be lucky)."""
    started = time.perf_counter()
    results = [search(seed) for seed in range(SEEDS)]
    seconds = (time.perf_counter() - started) / SEEDS
    accuracy = statistics.mean(r.best.accuracy if r.best else 0.0 for r in results)
    return Row(
        name,
        percentile,
        results[0].budget,
        accuracy,
        accuracy / optimum if optimum else None,
        statistics.mean(r.trials_used for r in results),
        statistics.mean(r.evaluations for r in results),
        seconds,
    )


def _compare(
    table: OutcomeTable,
    percentile: int,
    budget: float,
    cap: int,
    backend: Backend | None,
    llm_trials: int,
) -> list[Row]:
    """Every method at one budget, each with a fresh evaluator over the same table."""
    space = table.space
    found, seconds = _timed(lambda: exhaustive(space, TableEvaluator(table), budget=budget))
    optimum = found.best.accuracy if found.best is not None else 0.0
    rows = [_row(found, percentile, optimum, seconds)]
    where = space.describe(found.best.assignment) if found.best else "nothing feasible"
    print(f"p{percentile} budget {budget:.6g} {table.cost_unit}/example: optimum {optimum:.3f}")
    print(f"    = {where}")
    runs: list[Callable[[], SearchResult]] = [
        lambda: best_uniform(space, TableEvaluator(table), budget=budget),
        lambda: coordinate_descent(space, TableEvaluator(table), budget=budget, max_trials=cap),
        lambda: successive_halving(
            space, TableEvaluator(table), budget=budget, max_trials=cap, seed=0
        ),
    ]
    if backend is not None:
        runs.append(
            lambda: llm_guided_search(
                space, TableEvaluator(table), budget=budget, max_trials=llm_trials, backend=backend
            )
        )
    for run in runs:
        result, seconds = _timed(run)
        rows.append(_row(result, percentile, optimum, seconds))
        if result.method == "llm-guided":
            print(f"    llm-guided p{percentile}: {_proposal_summary(result)}")
    rows.append(
        _mean_row(
            f"successive halving, mean of {SEEDS} seeds",
            lambda seed: successive_halving(
                space, TableEvaluator(table), budget=budget, max_trials=cap, seed=seed
            ),
            percentile,
            optimum,
        )
    )
    rows.append(
        _mean_row(
            f"random search, mean of {SEEDS} seeds",
            lambda seed: random_search(
                space, TableEvaluator(table), budget=budget, max_trials=cap, seed=seed
            ),
            percentile,
            optimum,
        )
    )
    if backend is not None:
        # The control: the same search with every model call failing, so every round is a
        # mutation of the best so far. The model earns its cost only if it beats this.
        rows.append(
            _mean_row(
                f"llm-guided without a model (mutations), mean of {SEEDS} seeds",
                lambda seed: llm_guided_search(
                    space,
                    TableEvaluator(table),
                    budget=budget,
                    max_trials=llm_trials,
                    backend=NoModel(),
                    seed=seed,
                ),
                percentile,
                optimum,
            )
        )
    return rows


def default_tables() -> list[Path]:
    return [DEFAULT_TABLE, *sorted(DATA.glob("real_outcomes_*.json.gz"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, action="append", help="default: all of bench/data")
    parser.add_argument("--llm", action="store_true", help="also run llm-guided search")
    parser.add_argument("--llm-trials", type=int, default=20)
    args = parser.parse_args()
    backend = None
    if args.llm:
        from engine.models import backend_for
        from engine.plan.model_settings import ModelRef

        backend = backend_for(ModelRef())
    verdicts: list[str] = []
    for path in args.table or default_tables():
        verdicts.extend(_one_table(path, backend, args.llm_trials))
    print()
    print("\n".join(verdicts))
    return 0


def _one_table(path: Path, backend: Backend | None, llm_trials: int) -> list[str]:
    table = OutcomeTable.load(path)
    space = table.space
    size = space.size
    kind = (
        "SIMULATED"
        if "make_outcome_table" in str(table.metadata) or path == DEFAULT_TABLE
        else "REAL"
    )
    print(f"\n=== {path.name} ({kind}) ===")
    if not table.complete:
        print(f"incomplete: {len(table)} of {size} assignments recorded; skipped")
        return [f"{path.name} ({kind}): incomplete ({len(table)} of {size}), not compared"]
    cap = max(1, int(TRIAL_SHARE * size))
    print(
        f"{len(space.nodes)} nodes, "
        f"{' x '.join(str(len(o)) for o in space.options.values())} = {size} assignments, "
        f"{table.n_examples} examples, cost in {table.cost_unit} per example"
    )
    costs = list(table.assignment_costs().values())
    rows: list[Row] = []
    for percentile in PERCENTILES:
        rows.extend(
            _compare(
                table, percentile, budget_at(costs, percentile), cap, backend, min(cap, llm_trials)
            )
        )
    print()
    width = max(len(f"{row.method} @p{row.percentile}") for row in rows)
    header = (
        f"{'method':<{width}} {'budget':>10} {'accuracy':>8} {'acc/opt':>7} {'trials':>6} "
        f"{'evals':>6} {'evals/exh':>9} {'time s':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        accuracy = "-" if row.accuracy is None else f"{row.accuracy:.3f}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
        print(
            f"{row.method + f' @p{row.percentile}':<{width}} {row.budget:>10.6f} {accuracy:>8} "
            f"{ratio:>7} {row.trials_used:>6.1f} {row.evaluations:>6.1f} "
            f"{row.evaluations / size:>9.3f} {row.seconds:>7.2f}"
        )
    verdicts = []
    for method in dict.fromkeys(row.method for row in rows if row.method != "exhaustive"):
        mine = [row for row in rows if row.method == method]
        met = sum(row.meets(size) for row in mine)
        worst = min((row.ratio or 0.0) for row in mine)
        most = max(row.evaluations for row in mine) / size
        verdict = "MET" if met == len(mine) else "NOT met"
        verdicts.append(
            f"{path.name} ({kind}): target (>= {TARGET_RATIO:.0%} of optimum with <= "
            f"{TRIAL_SHARE:.0%} of trials) {verdict:<7} for {method}: {met}/{len(mine)} "
            f"budgets, worst acc/opt {worst:.3f}, most evals/exhaustive {most:.3f}"
        )
    return verdicts


if __name__ == "__main__":
    raise SystemExit(main())
