"""Arbor's command line (``python run.py ...`` or the ``arbor`` script): the CLI presenter.

One module per command group, each with ``register(commands)`` adding its subcommands and the
handlers they call::

    ui         no command: start the Streamlit UI (--host, --port)
    runs       run, resume, runs, export-run, query
    plans      decompose, expand, rate, export
    sessions   sessions (list, search, rename, duplicate, delete), export-session, import-session
    tune       allocate, eval, search (set up and saved by ``app.services.tuning``)
    models     models (list, add-local, add-remote, remove, test)
    common     parent parsers (caps, pool, --model), plan files, tables, typed choices

Handlers import engine, storage and their libraries when they run, so ``run.py --help`` and
``run.py runs`` load no model library. ``main`` turns the errors a user can cause into one
``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import models, plans, runs, sessions, tune, ui


def build_parser() -> argparse.ArgumentParser:
    # prog: argparse takes it from argv[0], so help reads "run.py" or "arbor" as invoked.
    parser = argparse.ArgumentParser(description="Arbor: plan, run, trace.")
    ui.register(parser)
    commands = parser.add_subparsers(dest="command")
    for group in (runs, plans, sessions, tune, models):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    from engine.errors import ArborError, user_message

    try:
        return args.handler(args)
    except (ArborError, ValueError) as exc:  # ValueError covers pydantic's ValidationError
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
