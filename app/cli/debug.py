"""Run control on the command line: ``run --pin/--break-before/--break-after/--step``,
``resume --set-output/--set-instruction`` and ``fork RUN_ID --from NODE`` (which also takes
``--set-model`` and ``--set-strategy``).

Without a terminal a breakpoint ends the run with status ``paused`` and exit status 3
(``EXIT_PAUSED``); ``run.py resume RUN_ID`` continues it. With a terminal the run asks at each
pause: continue, step, skip or quit. The workflows are ``app.services.run_control``'s.
"""

from __future__ import annotations

import argparse
import sys

from app.cli.common import Subparsers

_VALUE_HELP = "NODE=TEXT, or NODE=@file.txt to read the text from a file (repeatable)"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``run``'s run control options."""
    parser.add_argument(
        "--pin", action="append", metavar="NODE=TEXT", help=f"hold a node's output: {_VALUE_HELP}"
    )
    parser.add_argument(
        "--break-before", action="append", metavar="NODE", help="pause before NODE (repeatable)"
    )
    parser.add_argument(
        "--break-after", action="append", metavar="NODE", help="pause after NODE (repeatable)"
    )
    parser.add_argument("--step", action="store_true", help="pause before every node")


def add_edit_options(parser: argparse.ArgumentParser) -> None:
    """``resume``'s and ``fork``'s edits."""
    parser.add_argument(
        "--set-output",
        action="append",
        metavar="NODE=TEXT",
        help=f"use this output for NODE, no model call: {_VALUE_HELP}",
    )
    parser.add_argument(
        "--set-instruction",
        action="append",
        metavar="NODE=TEXT",
        help=f"edit NODE's instruction for this run: {_VALUE_HELP}",
    )


def register(commands: Subparsers) -> None:
    frk = commands.add_parser(
        "fork", help="run a past run again from a node, with changes; upstream is reused"
    )
    frk.add_argument("run_id", metavar="RUN_ID")
    frk.add_argument("--from", dest="from_node", required=True, metavar="NODE")
    add_edit_options(frk)
    frk.add_argument(
        "--set-model",
        action="append",
        metavar="NODE=MODEL",
        help="run NODE on this model: a registry name, 'bundled' or a GGUF file (repeatable)",
    )
    frk.add_argument(
        "--set-strategy",
        action="append",
        metavar="NODE=SPEC",
        help="run NODE with this strategy: single, boN, scN or refineK, e.g. sc5 (repeatable)",
    )
    frk.add_argument("--json", action="store_true", help="print the result as one JSON object")
    frk.set_defaults(handler=fork_run)


def controlled(args: argparse.Namespace) -> bool:
    """Whether ``args`` ask for any run control (so the plain path stays as it was)."""
    names = ("pin", "break_before", "break_after", "step", "set_output", "set_instruction")
    return any(getattr(args, name, None) for name in names)


def _controller():
    from app.services.run_control import TerminalController

    return TerminalController() if sys.stdin.isatty() and sys.stderr.isatty() else None


def run_controlled(args: argparse.Namespace, workspace, plan, caps, session_id, listeners):
    """``run FILE`` with pins and breakpoints."""
    from app.services.run_control import parse_assignments, run_with_control

    pins = parse_assignments(args.pin, "--pin")
    return run_with_control(
        workspace,
        plan,
        caps,
        pins=pins,
        break_before=args.break_before or (),
        break_after=args.break_after or (),
        step=args.step,
        controller=_controller(),
        session_id=session_id,
        listeners=listeners,
        use_cache=not args.no_cache,
        rerun=args.rerun_from or (),
    )


def resume_controlled(args: argparse.Namespace, workspace, listeners):
    """``resume RUN_ID`` with edited outputs or instructions."""
    from app.services.run_control import parse_assignments, resume_with_edits

    return resume_with_edits(
        workspace,
        args.run_id,
        set_output=parse_assignments(args.set_output, "--set-output"),
        set_instruction=parse_assignments(args.set_instruction, "--set-instruction"),
        controller=_controller(),
        listeners=listeners,
    )


def paused_exit(result) -> int | None:
    """Say where a paused run stopped and how to go on; its exit status (3), else None."""
    from app.services.run_control import EXIT_PAUSED

    if result.status != "paused":
        return None
    print(
        f"paused at {result.paused_node}: continue with `run.py resume {result.run_id}` "
        "(--set-output NODE=TEXT, --set-instruction NODE=TEXT)",
        file=sys.stderr,
    )
    return EXIT_PAUSED


def fork_run(args: argparse.Namespace) -> int:
    from app.cli.runs import print_progress, report_run
    from app.services.run_control import fork, node_changes, parse_assignments
    from storage.workspace import Workspace

    workspace = Workspace()
    changes = node_changes(
        workspace,
        set_model=parse_assignments(args.set_model, "--set-model"),
        set_strategy=parse_assignments(args.set_strategy, "--set-strategy"),
    )
    report = fork(
        workspace,
        args.run_id,
        args.from_node,
        set_output=parse_assignments(args.set_output, "--set-output"),
        set_instruction=parse_assignments(args.set_instruction, "--set-instruction"),
        changes=changes,
        controller=_controller(),
        listeners=[print_progress],
    )
    code = report_run(report.result, workspace, as_json=args.json)
    if not args.json:
        print(report.summary())
    return code


__all__ = [
    "add_edit_options",
    "add_run_options",
    "controlled",
    "paused_exit",
    "register",
    "resume_controlled",
    "run_controlled",
]
