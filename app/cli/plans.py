"""Plan authoring: ``decompose`` a task, ``expand`` a node, ``rate`` difficulties, ``export`` a
plan file as JSON or YAML. Repair notes go to stderr as ``note: ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.common import Subparsers, choice_option, model_option, read_plan, write_plan

_OUTPUT_HELP = "write the plan here instead of stdout"
_FILE_HELP = "plan file, JSON or YAML"


def register(commands: Subparsers) -> None:
    dec = commands.add_parser(
        "decompose",
        help="split a task into a plan (JSON)",
        parents=[model_option("bundled model")],
    )
    dec.add_argument("task")
    dec.add_argument("-o", "--output", help=_OUTPUT_HELP)
    dec.set_defaults(handler=decompose_task)

    exp = commands.add_parser(
        "expand",
        help="split one node of a plan file with the planner",
        parents=[model_option("the plan's model")],
    )
    exp.add_argument("file", help=_FILE_HELP)
    exp.add_argument("node", help="id of the node to split")
    exp.add_argument("--replan", action="store_true", help="replace the node's subtree")
    exp.add_argument("-o", "--output", help=_OUTPUT_HELP)
    exp.set_defaults(handler=expand_plan_node)

    rate = commands.add_parser(
        "rate",
        help="rate the difficulty (1-5) of unrated nodes",
        parents=[model_option("the plan's model")],
    )
    rate.add_argument("file", help=_FILE_HELP)
    rate.add_argument("--all", action="store_true", help="re-rate rated nodes too")
    rate.add_argument("-o", "--output", help=_OUTPUT_HELP)
    rate.set_defaults(handler=rate_plan)

    out = commands.add_parser("export", help="print a plan file as JSON or YAML")
    out.add_argument("file", help=_FILE_HELP)
    choice_option(out, "--format", literal=_plan_formats, default="yaml")
    out.add_argument("-o", "--output", help=_OUTPUT_HELP)
    out.set_defaults(handler=export_plan_file)


def _plan_formats():
    from engine.plan.files import PlanFormat

    return PlanFormat


def _model(args: argparse.Namespace, plan):
    from engine.plan import ModelRef

    return ModelRef(path=args.model) if args.model else plan.default_model


def _traced() -> dict:
    """Where planner actions are recorded: the data directory's trace store."""
    from storage.workspace import Workspace

    return {"store": Workspace().traces, "on_recorded": _say_recorded}


def _say_recorded(run_id: str) -> None:
    print(f"recorded as planner run {run_id} (run.py runs --all)", file=sys.stderr)


def _say_stage(stage: str) -> None:
    print(f"planner: {stage}", file=sys.stderr, flush=True)


def decompose_task(args: argparse.Namespace) -> int:
    from app.services.planning import decompose_traced
    from engine.plan import ModelRef

    model = ModelRef(path=args.model) if args.model else ModelRef()
    result = decompose_traced(args.task, model, on_progress=_say_stage, **_traced())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.clarification is not None:
        print(f"needs detail: {result.clarification.message}", file=sys.stderr)
        for example in result.clarification.examples:
            print(f"  e.g. {example}", file=sys.stderr)
    for index, candidate in enumerate(result.candidates):
        mark = "*" if index == result.chosen else " "
        scores = " ".join(f"{k}={v:.2f}" for k, v in candidate.scores.items())
        problem = f" unusable: {candidate.problem}" if candidate.plan is None else ""
        print(
            f"candidate {mark}{index + 1} {candidate.source}: total {candidate.total:.2f}"
            f" {scores}{problem}",
            file=sys.stderr,
        )
    text = result.plan.to_json()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"plan written to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def expand_plan_node(args: argparse.Namespace) -> int:
    from app.services.planning import split_traced

    plan = read_plan(args.file)
    result = split_traced(plan, args.node, _model(args, plan), replace=args.replan, **_traced())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    write_plan(result.plan, args.output)
    return 1 if result.fallback else 0


def rate_plan(args: argparse.Namespace) -> int:
    from app.services.planning import rate_traced

    plan = read_plan(args.file)
    rated, notes = rate_traced(plan, _model(args, plan), only_missing=not args.all, **_traced())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    write_plan(rated, args.output)
    return 0


def export_plan_file(args: argparse.Namespace) -> int:
    write_plan(read_plan(args.file), args.output, args.format)
    return 0
