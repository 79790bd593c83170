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


def decompose_task(args: argparse.Namespace) -> int:
    from engine.plan import ModelRef
    from engine.planner.decompose import decompose

    model = ModelRef(path=args.model) if args.model else ModelRef()
    result = decompose(args.task, model)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    text = result.plan.to_json()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"plan written to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def expand_plan_node(args: argparse.Namespace) -> int:
    from engine.planner.expand import expand_node, replan_subtree

    plan = read_plan(args.file)
    split = replan_subtree if args.replan else expand_node
    result = split(plan, args.node, _model(args, plan))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    write_plan(result.plan, args.output)
    return 1 if result.fallback else 0


def rate_plan(args: argparse.Namespace) -> int:
    from engine.planner.difficulty import rate_difficulty

    plan = read_plan(args.file)
    rated, notes = rate_difficulty(plan, _model(args, plan), only_missing=not args.all)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    write_plan(rated, args.output)
    return 0


def export_plan_file(args: argparse.Namespace) -> int:
    write_plan(read_plan(args.file), args.output, args.format)
    return 0
