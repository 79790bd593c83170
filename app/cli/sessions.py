"""Saved sessions: ``sessions`` (list, search, rename, duplicate, delete), ``export-session``
to a portable ``.arbor`` file, ``import-session`` from one (or a JSON session or plan file)."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import Subparsers, shown


def register(commands: Subparsers) -> None:
    ses = commands.add_parser("sessions", help="saved sessions (default: list them)")
    ses.set_defaults(handler=list_sessions)
    sessions = ses.add_subparsers(dest="sessions_command")
    sessions.add_parser("list", help="list saved sessions, newest first").set_defaults(
        handler=list_sessions
    )
    ses_find = sessions.add_parser("search", help="sessions whose name or task contains TEXT")
    ses_find.add_argument("text")
    ses_find.set_defaults(handler=search_sessions)
    ses_name = sessions.add_parser("rename", help="give a session another name")
    ses_name.add_argument("session_id", metavar="ID")
    ses_name.add_argument("name", metavar="NAME")
    ses_name.set_defaults(handler=rename_session)
    ses_copy = sessions.add_parser("duplicate", help="copy a session (task, plan, caps; no runs)")
    ses_copy.add_argument("session_id", metavar="ID")
    ses_copy.add_argument("--name", help="default: NAME (copy)")
    ses_copy.set_defaults(handler=duplicate_session)
    ses_del = sessions.add_parser("delete", help="delete a session (its runs are kept)")
    ses_del.add_argument("session_id", metavar="ID")
    ses_del.add_argument(
        "--with-runs", action="store_true", help="also delete its runs from the trace store"
    )
    ses_del.set_defaults(handler=delete_session)

    sxp = commands.add_parser("export-session", help="write a session and its runs to .arbor")
    sxp.add_argument("session_id", metavar="ID")
    sxp.add_argument("-o", "--output", required=True, metavar="FILE", help="e.g. haiku.arbor")
    sxp.add_argument(
        "--run",
        action="append",
        metavar="RUN_ID",
        help="carry only this run (repeatable; default: all of the session's runs)",
    )
    sxp.set_defaults(handler=export_session_file)

    sim = commands.add_parser("import-session", help="import an .arbor, session or plan file")
    sim.add_argument("file", metavar="FILE")
    sim.set_defaults(handler=import_session_file)


def _workspace():
    from storage.workspace import Workspace

    return Workspace()


def _print_sessions(sessions) -> None:
    for session in sessions:
        print(
            f"{session.id}  {session.updated_at:%Y-%m-%d %H:%M}  {len(session.run_ids):3} runs  "
            f"{shown(session.name)}"
        )


def list_sessions(_: argparse.Namespace) -> int:
    _print_sessions(_workspace().sessions.list())
    return 0


def search_sessions(args: argparse.Namespace) -> int:
    """Sessions whose name or task contains TEXT (any case), most recently updated first."""
    found = _workspace().sessions.search(args.text)
    if not found:
        print(f"no session's name or task contains {args.text!r}", file=sys.stderr)
    _print_sessions(found)
    return 0


def rename_session(args: argparse.Namespace) -> int:
    session = _workspace().sessions.rename(args.session_id, args.name)
    print(f"renamed {session.id} to {session.name!r}")
    return 0


def duplicate_session(args: argparse.Namespace) -> int:
    """Copy task, plan and caps into a new session; the runs stay with the original."""
    copy = _workspace().sessions.duplicate(args.session_id, args.name)
    print(f"duplicated {args.session_id} as {copy.id} ({copy.name!r})")
    return 0


def delete_session(args: argparse.Namespace) -> int:
    deleted_runs = _workspace().delete_session(args.session_id, delete_runs=args.with_runs)
    detail = f" and {len(deleted_runs)} run(s)" if args.with_runs else " (its runs are kept)"
    print(f"deleted session {args.session_id}{detail}")
    return 0


def export_session_file(args: argparse.Namespace) -> int:
    """Write one session with its runs (or the --run ones) as a portable .arbor file."""
    from storage.bundles import export_session

    report = export_session(_workspace(), args.session_id, args.output, args.run)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"exported session {report.session_id} with {len(report.run_ids)} run(s) to "
        f"{report.path} ({report.size_bytes:,} bytes)"
    )
    return 0


def import_session_file(args: argparse.Namespace) -> int:
    """Import an .arbor file, a JSON session file or a plan file as a new session."""
    from storage.bundles import import_file

    report = import_file(_workspace(), args.file)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary())
    print(f"session id: {report.session.id}")
    for run_id in report.runs_imported:
        print(f"  imported {run_id}")
    for run_id in report.runs_skipped:
        print(f"  skipped  {run_id} (already here)")
    return 0
