"""Write ``bench/data/outcome_table.json.gz``: a SIMULATED outcome table for the search benchmark.

Nothing in this table comes from running a model. It is drawn with a seeded RNG from a small
model of a four-step pipeline (extract -> plan -> solve -> check) whose shape follows what
AgentTTS (arXiv 2508.00890) observed on real multi-stage tasks:

* steps prefer different models: ``extract`` is nearly as good on the small model as on the
  large one, ``plan`` does best on the *medium* model, ``solve`` needs the large one, and
  ``check`` gains most from voting;
* extra compute has diminishing returns: success grows with log2 of the token budget, and a
  five-sample self-consistency vote adds less than a fifth of its cost would suggest;
* an earlier step's budget raises later steps' success (a fuller plan makes solving easier).

Each of the 60 examples has a latent difficulty shared by all steps; a step succeeds when a
uniform draw (shared by the options that use the same model, so more compute never loses an
example the same model already solved) falls below its success probability, and the pipeline
is right when every step succeeds. Cost is the sum of the steps' token costs at per-model
prices, with per-example noise in tokens and in the number of votes (early stopping). Every
node offers the same five options, so the uniform-allocation baseline is defined. Usage::

    .venv/bin/python bench/make_outcome_table.py [--seed 7] [--out bench/data/outcome_table.json.gz]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.plan.compute_config import StrategyConfig
from engine.plan.model_settings import ModelRef
from engine.tune.outcome_table import Outcome, OutcomeTable
from engine.tune.search import NodeOption, SearchSpace, strategy_short_label

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "outcome_table.json.gz"
SEED = 7
N_EXAMPLES = 60
NODES = ("extract", "plan", "solve", "check")
#: US dollars per million input / output tokens (made-up but in the usual ratio).
PRICES = {"small": (0.05, 0.20), "medium": (0.30, 1.20), "large": (1.50, 6.00)}
#: Output tokens per second, for latency.
SPEED = {"small": 90.0, "medium": 40.0, "large": 15.0}
#: (model, self-consistency samples or 1, max_tokens): the same five options on every node.
OPTIONS = (
    ("small", 1, 128),
    ("small", 5, 128),
    ("medium", 1, 256),
    ("medium", 5, 256),
    ("large", 1, 512),
)
#: Log-odds of a step's success per model, for an example of average difficulty.
SKILL = {
    "extract": {"small": 2.2, "medium": 2.5, "large": 2.7},
    "plan": {"small": 0.2, "medium": 2.0, "large": 1.2},
    "solve": {"small": -0.6, "medium": 0.6, "large": 2.2},
    "check": {"small": 0.8, "medium": 1.2, "large": 1.5},
}
#: Log-odds added per doubling of max_tokens above 128, and by a five-sample vote.
TOKEN_GAIN = {"extract": 0.1, "plan": 0.35, "solve": 0.45, "check": 0.1}
VOTE_GAIN = {"extract": 0.2, "plan": 0.5, "solve": 0.6, "check": 1.3}
#: Log-odds the next step gains per unit of this step's compute (log2 tokens + 1 for a vote).
UPSTREAM_GAIN = {"extract": 0.45, "plan": 0.55, "solve": 0.3, "check": 0.0}
#: How strongly the example's latent difficulty hurts each step.
DIFFICULTY_WEIGHT = {"extract": 0.5, "plan": 0.9, "solve": 1.2, "check": 0.6}
INPUT_TOKENS = 350
OUTPUT_SHARE = 0.6


def option_label(model: str, samples: int, max_tokens: int) -> str:
    strategy = _strategy(samples)
    return f"{model} · {strategy_short_label(strategy)} · {max_tokens}"


def _strategy(samples: int) -> StrategyConfig:
    if samples == 1:
        return StrategyConfig(kind="single", samples=1)
    return StrategyConfig(kind="self_consistency", samples=samples)


def _expected_cost(model: str, samples: int, max_tokens: int) -> float:
    price_in, price_out = PRICES[model]
    calls = 0.8 * samples if samples > 1 else 1
    per_call = INPUT_TOKENS * price_in + OUTPUT_SHARE * max_tokens * price_out
    return calls * per_call / 1e6


def build_space() -> SearchSpace:
    options = [
        NodeOption(
            label=option_label(model, samples, tokens),
            model=ModelRef(kind="remote", base_url="http://simulated.invalid/v1", model=model),
            strategy=_strategy(samples),
            max_tokens=tokens,
            cost_hint=_expected_cost(model, samples, tokens),
        )
        for model, samples, tokens in OPTIONS
    ]
    return SearchSpace(options={node: [o.model_copy() for o in options] for node in NODES})


def _compute(samples: int, max_tokens: int) -> float:
    return math.log2(max_tokens / 128) + (1.0 if samples > 1 else 0.0)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def build_table(seed: int = SEED, n_examples: int = N_EXAMPLES) -> OutcomeTable:
    """The simulated table; the same seed gives the same table."""
    rng = random.Random(seed)
    space = build_space()
    difficulty = [rng.gauss(0.0, 1.0) for _ in range(n_examples)]
    # One uniform per (step, example, model): options of one model succeed on nested sets.
    draws = {
        (node, e, model): rng.random()
        for node in NODES
        for e in range(n_examples)
        for model in PRICES
    }
    # Per (step, option, example): output-token share and votes drawn once, so a step's cost on
    # an example does not depend on the other steps' options (only its input does).
    usage = {}
    for node in NODES:
        for index, (_, samples, tokens) in enumerate(OPTIONS):
            for e in range(n_examples):
                share = min(1.0, OUTPUT_SHARE * math.exp(rng.gauss(0.0, 0.25)))
                calls = samples if samples == 1 else rng.randint(3, samples)
                usage[node, index, e] = (max(1, round(share * tokens)), calls)
    success_p = {}
    for node_number, node in enumerate(NODES):
        previous = NODES[node_number - 1] if node_number else None
        for index, (model, samples, tokens) in enumerate(OPTIONS):
            for prev_index, (_, prev_samples, prev_tokens) in enumerate(OPTIONS):
                boost = (
                    UPSTREAM_GAIN[previous] * _compute(prev_samples, prev_tokens)
                    if previous
                    else 0.0
                )
                base = (
                    SKILL[node][model]
                    + TOKEN_GAIN[node] * math.log2(tokens / 128)
                    + (VOTE_GAIN[node] if samples > 1 else 0.0)
                    + boost
                )
                for e in range(n_examples):
                    z = base - DIFFICULTY_WEIGHT[node] * difficulty[e]
                    success_p[node, index, prev_index, e] = _sigmoid(z)
    table = OutcomeTable(
        space,
        n_examples,
        "usd",
        metadata={
            "simulated": True,
            "description": "SIMULATED outcomes (no model was run) of a 4-step pipeline, drawn "
            "by bench/make_outcome_table.py to follow AgentTTS's observations.",
            "seed": seed,
            "generator": "bench/make_outcome_table.py",
        },
    )
    for assignment in space.all_assignments():
        outcomes = []
        for e in range(n_examples):
            correct, cost, total_tokens, latency = True, 0.0, 0, 0.0
            upstream_tokens = 0
            previous_index = 0
            for node in NODES:
                index = assignment[node]
                model, samples, _ = OPTIONS[index]
                out_tokens, calls = usage[node, index, e]
                in_tokens = INPUT_TOKENS + upstream_tokens // 2
                price_in, price_out = PRICES[model]
                cost += calls * (in_tokens * price_in + out_tokens * price_out) / 1e6
                total_tokens += calls * (in_tokens + out_tokens)
                latency += calls * out_tokens / SPEED[model] + 0.05 * calls
                p = success_p[node, index, previous_index, e]
                correct = correct and draws[node, e, model] < p
                upstream_tokens, previous_index = out_tokens, index
            outcomes.append(Outcome(correct, round(cost, 8), total_tokens, round(latency, 2)))
        table.record(assignment, outcomes)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    table = build_table(args.seed)
    path = table.save(args.out)
    costs = sorted(table.assignment_costs().values())
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): SIMULATED, {len(table)} "
        f"assignments x {table.n_examples} examples, seed {args.seed}, mean cost per example "
        f"${costs[0]:.6f}..${costs[-1]:.6f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
