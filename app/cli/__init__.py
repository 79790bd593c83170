"""Arbor's command line (``python run.py ...`` or the ``arbor`` script): the CLI presenter.

One module per command group, each with ``register(commands)`` adding its subcommands and the
handlers they call::

    ui         no command: start the Streamlit UI (--host, --port)
    runs       run, resume, runs, export-run, query
    plans      decompose, expand, rate, export
    sessions   sessions (list, search, rename, duplicate, delete), export-session, import-session
    tune       allocate, eval, search (set up and saved by ``app.services.tuning``)
    models     models (list, add-local, add-remote, remove, test)
    annotate   annotate (label a run, node or call good/bad), annotations
    debug      fork; run control options of run and resume (pins, breakpoints, edits)
    playground playground (variants of one node of a recorded run, side by side)
    common     parent parsers (caps, pool, --model), plan files, tables, typed choices

Handlers import engine, storage and their libraries when they run, so ``run.py --help`` and
``run.py runs`` load no model library. ``main`` turns the errors a user can cause (Arbor's,
bad values, files, over-deep input) into one ``error: ...`` line on stderr and exit status 2,
and anything unexpected into one line and status 1 (``ARBOR_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.cli import annotate, debug, models, plans, playground, runs, sessions, tune, ui


def build_parser() -> argparse.ArgumentParser:
    # prog: argparse takes it from argv[0], so help reads "run.py" or "arbor" as invoked.
    parser = argparse.ArgumentParser(description="Arbor: plan, run, trace.")
    ui.register(parser)
    commands = parser.add_subparsers(dest="command")
    for group in (runs, debug, plans, sessions, tune, models, annotate, playground):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    from engine.errors import ArborError, user_message, validation_problems

    problem = _output_problem(getattr(args, "output", None))
    if problem:  # before any work: a decomposition is not thrown away for a typo in -o
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except ArborError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a value the user gave is out of range (pydantic's too)
        print(f"error: {validation_problems(exc) or exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder named on the command line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: the input is nested too deeply to read.", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback: one line, and how to see more
        if os.environ.get("ARBOR_DEBUG"):
            raise
        print(
            f"error: unexpected {user_message(exc)} (set ARBOR_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _output_problem(output: str | None) -> str | None:
    """Why ``-o OUTPUT`` cannot be written, or None: its folder is missing, or it is a folder."""
    if not output:
        return None
    path = Path(output)
    if path.is_dir():
        return f"-o {output} is a folder; give a file name in it."
    if not path.parent.is_dir():
        return f"-o {output}: the folder {path.parent} does not exist."
    return None


__all__ = ["build_parser", "main"]
