"""Test-time compute: ``allocate`` (the per-node budget a run would use), ``eval`` (a plan over
a dataset: accuracy, cost, cost-of-pass, Pareto frontier) and ``search`` (model + strategy +
output limit per node within a budget, on a dev set).

``eval`` and ``search`` are set up, run and saved by ``app.services.tuning``, as the Evaluate
page's are; this module only reads flags and prints.
"""

from __future__ import annotations

import argparse
import sys

from app.cli.common import (
    Subparsers,
    caps_from,
    caps_options,
    choice_option,
    pool_options,
    print_table,
    read_plan,
    write_plan,
)

_FILE_HELP = "plan file, JSON or YAML"


def _policies():
    from engine.plan.compute_config import PolicyKind

    return PolicyKind


def _decays():
    from engine.plan.compute_config import DecaySchedule

    return DecaySchedule


def _checkers():
    from engine.tune.evaluation import CheckerKind

    return CheckerKind


def _cost_units():
    from engine.tune.dev_search import CostUnit

    return CostUnit


def _methods():
    from engine.tune.dev_search import SearchMethod

    return SearchMethod


def register(commands: Subparsers) -> None:
    caps, pool = caps_options(), pool_options()

    alo = commands.add_parser(
        "allocate", help="show the per-node budget allocation of a plan", parents=[caps]
    )
    alo.add_argument("file", help=_FILE_HELP)
    choice_option(alo, "--policy", literal=_policies)
    choice_option(alo, "--decay", literal=_decays)
    alo.add_argument("--strategy", help="plan default strategy: single, bo3, sc5, refine2 ...")
    alo.add_argument("-o", "--output", help="write the plan with these settings here")
    alo.set_defaults(handler=allocate_plan)

    evl = commands.add_parser(
        "eval", help="run a plan over a dataset: accuracy, cost, frontier", parents=[pool, caps]
    )
    evl.add_argument("file", help=_FILE_HELP)
    evl.add_argument(
        "dataset",
        help="CSV/JSONL/Parquet file or Hugging Face layout folder, a shipped one (arithmetic,"
        " capitals ...), or a generated one: gym:word_sorting, gym:chain_sum (see `datasets`)",
    )
    _dataset_options(evl)
    evl.add_argument(
        "--strategy",
        action="append",
        metavar="SPEC",
        help="one configuration per strategy (repeatable): single, bo3, sc5, refine2",
    )
    choice_option(evl, "--checker", literal=_checkers, default="normalised")
    evl.add_argument("--limit", type=int, help="only the first N examples")
    evl.add_argument("--chart", help="write the accuracy-vs-cost chart (HTML/PNG/JSON) here")
    evl.set_defaults(handler=evaluate_plan)

    lst = commands.add_parser("datasets", help="list shipped and generated datasets")
    lst.set_defaults(handler=list_datasets)

    sea = commands.add_parser(
        "search", help="search model + strategy + budget per node", parents=[pool, caps]
    )
    sea.add_argument("file", help=_FILE_HELP)
    sea.add_argument("dataset", help="a file, a shipped dataset or gym:FAMILY (see eval)")
    _dataset_options(sea)
    sea.add_argument("--budget", type=float, required=True, help="most cost per example")
    choice_option(sea, "--cost", literal=_cost_units, default="tokens")
    choice_option(sea, "--method", literal=_methods, default="coordinate")
    sea.add_argument("--max-trials", type=int, default=12)
    sea.add_argument("--models", default="bundled", help="registry names, comma-separated")
    sea.add_argument("--strategies", default="single,sc3", help="e.g. single,sc3,bo3")
    sea.add_argument("--max-tokens", default="32", help="output limits, e.g. 16,64")
    sea.add_argument("--nodes", help="only these nodes (default: all)")
    sea.add_argument("--proposer", help="registry name of the LLM proposing (--method llm)")
    choice_option(sea, "--checker", literal=_checkers, default="normalised")
    sea.add_argument("--limit", type=int, help="only the first N examples")
    sea.add_argument("--apply", action="store_true", help="write the best assignment's plan")
    sea.add_argument("-o", "--output", help="where --apply writes (default: the plan file)")
    sea.set_defaults(handler=search_plan)


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="gym:*: the generator's seed")
    parser.add_argument(
        "--difficulty", default="1", help="gym:*: levels 1-5, e.g. 2, 1-3 or 1,3 (default 1)"
    )
    parser.add_argument(
        "--per-level", type=int, default=10, help="gym:*: examples per level (default 10)"
    )
    parser.add_argument("--split", help="a Hugging Face layout folder's split (default: test)")


def _dataset(args: argparse.Namespace):
    from app.services import tuning
    from engine.tune.datasets import parse_levels

    return tuning.dataset_named(
        args.dataset,
        seed=args.seed,
        levels=parse_levels(args.difficulty),
        per_level=args.per_level,
        split=args.split,
    )


def list_datasets(args: argparse.Namespace) -> int:
    """The shipped datasets and the families a ``gym:`` dataset can be generated from."""
    from engine.tune.datasets import shipped_datasets
    from engine.tune.datasets.generated import RECOMMENDED, generated_families

    print("shipped: " + ", ".join(shipped_datasets()))
    print("generated (gym:NAME), fitting the bundled model: " + ", ".join(RECOMMENDED))
    others = [name for name in generated_families() if name not in RECOMMENDED]
    print(f"generated, all other families ({len(others)}): " + ", ".join(others))
    return 0


def allocate_plan(args: argparse.Namespace) -> int:
    """Show (and with -o save) the per-node allocation a run of the plan would use."""
    from engine.plan.compute_config import strategy_from_spec
    from engine.run.allocation import allocate

    plan = read_plan(args.file)
    if args.policy:
        plan.allocation = plan.allocation.model_copy(update={"kind": args.policy})
    if args.decay:
        plan.allocation = plan.allocation.model_copy(update={"decay": args.decay})
    if args.strategy:
        plan.default_strategy = strategy_from_spec(args.strategy)
    caps = caps_from(args, None)
    rows = allocate(plan, caps).rows()
    print_table(rows, ["node", "difficulty", "model", "strategy", "max_tokens",
                       "planned_tokens", "planned_usd", "token_cap", "source"])  # fmt: skip
    print(f"policy: {plan.allocation.kind}; {caps.total_tokens} tokens in all")
    if args.output:
        write_plan(plan, args.output)
    return 0


def evaluate_plan(args: argparse.Namespace) -> int:
    """Run a plan (or one configuration per --strategy) over a dataset; print the metrics."""
    from app.services import tuning
    from engine.tune.evaluation import CheckerConfig, accuracy_cost_chart
    from storage.workspace import Workspace

    workspace = Workspace()
    plan = read_plan(args.file)
    dataset = _dataset(args)
    caps = caps_from(args, None)
    configurations = tuning.configurations_for(plan, args.strategy or [tuning.AS_IS], caps)
    checker = CheckerConfig(kind=args.checker)

    def narrate(outcome) -> None:
        mark = "ok " if outcome.correct else "no "
        replay = " (replayed)" if outcome.replayed else ""
        print(f"  {mark}{outcome.configuration} {outcome.example_id}{replay}", file=sys.stderr)

    report = tuning.run_evaluation(
        workspace, dataset, configurations, checker,
        runner=tuning.pool(workspace, ray_address=args.ray, workers=args.workers),
        on_outcome=narrate, limit=args.limit,
    )  # fmt: skip
    print_table(report.rows(), ["configuration", "n", "accuracy", "mean_tokens",
                                "mean_cost_usd", "mean_latency_s", "cost_of_pass_tokens",
                                "cost_of_pass_usd", "replayed"])  # fmt: skip
    if report.difficulty_levels():
        print("by difficulty level:")
        print_table(report.level_rows(), ["difficulty", "configuration", "n", "accuracy",
                                          "mean_tokens", "cost_of_pass_tokens"])  # fmt: skip
    unit = tuning.cost_unit_of(report)
    print(f"pareto frontier (accuracy vs {unit}): {', '.join(report.frontier(unit)) or '-'}")
    print(f"evaluation id: {report.evaluation_id} ({report.status})")
    if args.chart:
        accuracy_cost_chart(report, unit).save(args.chart)
        print(f"chart written to {args.chart}", file=sys.stderr)
    return 0 if report.status == "completed" else 1


def search_plan(args: argparse.Namespace) -> int:
    """Search model + strategy + output limit per node on a dev set, within a budget; every
    trial's report is saved with the search id and its trial number."""
    from app.services import tuning
    from engine.tune.evaluation import CheckerConfig
    from storage.workspace import Workspace

    workspace = Workspace()
    plan = read_plan(args.file)
    models = tuning.models_named(workspace, [name.strip() for name in args.models.split(",")])
    space = tuning.search_space(
        plan,
        models,
        args.strategies.split(","),
        [int(tokens) for tokens in args.max_tokens.split(",")],
        nodes=args.nodes.split(",") if args.nodes else None,
    )
    dataset = tuning.first_examples(_dataset(args), args.limit)
    proposer = tuning.models_named(workspace, [args.proposer])[0][1] if args.proposer else None
    request = tuning.SearchRequest(
        plan=plan,
        space=space,
        dataset=dataset,
        checker=CheckerConfig(kind=args.checker),
        caps=caps_from(args, None),
        method=args.method,
        budget=args.budget,
        cost_unit=args.cost,
        max_trials=args.max_trials,
        proposer=proposer,
    )
    search = tuning.SearchRun(
        workspace,
        request,
        runner=tuning.pool(workspace, ray_address=args.ray, workers=args.workers),
    )

    def narrate(trial) -> None:
        print(f"  trial: accuracy {trial.accuracy:.2f}, cost {trial.cost:.4g} {args.cost}"
              f" on {trial.n_examples} ({trial.note})", file=sys.stderr)  # fmt: skip

    result = search.run(on_trial=narrate)
    print(f"method: {result.method}; {result.trials_used} trial(s) of {space.size} possible;"
          f" stopped: {result.stop_reason}")  # fmt: skip
    print(f"search id: {search.search_id}")
    if result.best is None:
        print(f"no assignment stays within {args.budget} {args.cost} per example")
        return 1
    best = result.best
    print(f"best: accuracy {best.accuracy:.2%} at {best.cost:.4g} {args.cost} per example")
    for node_id, label in space.describe(best.assignment).items():
        print(f"  {node_id}: {label}")
    if args.apply:
        write_plan(space.apply(plan, best.assignment), args.output or args.file)
    return 0
