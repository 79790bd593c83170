"""Runs: ``run`` a plan or session file, ``resume`` an interrupted run, list ``runs``,
``export-run`` one run's spans, ``query`` the trace store with read-only SQL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli import debug
from app.cli.common import Subparsers, caps_from, caps_options, choice_option, shown

#: ``storage.traces.schema.RUN_KINDS``, written out so building the parser imports no storage.
_RUN_KINDS = ("execution", "decompose", "expand", "replan", "rate", "alternatives", "playground")


JSON_HELP = "print the result as one JSON object (status, answer, suspect nodes, tokens)"


def register(commands: Subparsers) -> None:
    run = commands.add_parser(
        "run", help="run a plan or session file headless", parents=[caps_options()]
    )
    run.add_argument("file")
    run.add_argument("--max-parallel", type=int)
    run.add_argument(
        "--no-cache", action="store_true", help="call every model again; reuse nothing recorded"
    )
    run.add_argument(
        "--rerun-from",
        action="append",
        metavar="NODE",
        help="run NODE and everything downstream again even if unchanged (repeatable)",
    )
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    debug.add_run_options(run)
    run.set_defaults(handler=run_file)

    res = commands.add_parser("resume", help="continue an interrupted run, reusing finished calls")
    res.add_argument("run_id", metavar="RUN_ID")
    res.add_argument("--json", action="store_true", help=JSON_HELP)
    debug.add_edit_options(res)
    res.set_defaults(handler=resume_run)

    rns = commands.add_parser("runs", help="list recent runs; flags interrupted ones")
    rns.add_argument("--limit", type=int, default=20, help="how many runs (newest first)")
    kinds = rns.add_mutually_exclusive_group()
    kinds.add_argument(
        "--kind",
        action="append",
        choices=_RUN_KINDS,
        help="only runs of this kind (repeatable); default: execution. Planner actions are "
        "decompose, expand, replan, rate, alternatives; playground variants are playground",
    )
    kinds.add_argument(
        "--all", action="store_true", help="every kind: plan executions and planner actions"
    )
    rns.add_argument("--tag", action="append", help="only runs with this tag (repeatable: all)")
    rns.set_defaults(handler=list_runs)

    tag = commands.add_parser("tag-run", help="name a run and set its tags (shown by `runs`)")
    tag.add_argument("run_id", metavar="RUN_ID")
    tag.add_argument("--name", help='a short name for the run ("" clears it)')
    tag.add_argument(
        "--tag",
        action="append",
        help="a tag (repeatable); replaces the run's tags unless --add is given",
    )
    tag.add_argument("--add", action="store_true", help="add the --tag tags to the run's own")
    tag.add_argument("--clear-tags", action="store_true", help="remove every tag of the run")
    tag.set_defaults(handler=tag_run)

    exr = commands.add_parser(
        "export-run", help="write a run's spans as OTLP JSON, Parquet or CSV, or send them (--to)"
    )
    exr.add_argument("run_id", metavar="RUN_ID")
    choice_option(exr, "--format", literal=_export_formats, default="otlp")
    target = exr.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", help="file to write")
    target.add_argument(
        "--to",
        metavar="URL",
        help="send the spans to an OTLP/HTTP receiver: its traces URL (.../v1/traces) or base"
        " URL; headers from OTEL_EXPORTER_OTLP_HEADERS",
    )
    exr.set_defaults(handler=export_run_file)

    qry = commands.add_parser("query", help="read-only SQL over the trace store")
    qry.add_argument("sql", nargs="?", help="one SELECT (tables: runs, node_executions, ...)")
    qry.add_argument("--saved", metavar="TITLE", help="run a saved or example query")
    qry.add_argument("--list", action="store_true", help="list saved and example queries")
    qry.add_argument("--limit", type=int, default=100, help="most rows to print")
    qry.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    qry.set_defaults(handler=query_traces)


def _export_formats():
    from storage.trace_export import ExportFormat

    return ExportFormat


def _load_run_target(path: Path, workspace):
    """The plan (and caps and session id, for a saved session's file) ``path`` holds."""
    from engine.errors import PlanError, SessionError
    from engine.plan.files import import_plan
    from storage.sessions import SESSION_FORMAT, ArborSession

    if not path.is_file():
        raise PlanError(f"{path} does not exist or is not a file.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if f'"{SESSION_FORMAT}"' in text[:200]:
        session = ArborSession.from_file_text(text, source=str(path))
        if session.plan is None:
            raise SessionError(f"{path} has no plan to run.")
        try:
            workspace.sessions.get(session.id)
            session_id = session.id
        except SessionError:
            session_id = None
        return session.plan, session.caps, session_id
    return import_plan(text, source=str(path)), None, None


def run_file(args: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    workspace = Workspace()
    plan, caps, session_id = _load_run_target(Path(args.file), workspace)
    caps = caps_from(args, caps)
    from app.services.run_preview import warn_if_unreachable

    warn_if_unreachable(plan, caps, workspace)
    if debug.controlled(args):  # pins, breakpoints, step mode
        result = debug.run_controlled(args, workspace, plan, caps, session_id, [print_progress])
        return report_run(result, workspace, as_json=getattr(args, "json", False))

    result = workspace.run_plan(
        plan,
        caps,
        session_id=session_id,
        listeners=[print_progress],
        use_cache=not args.no_cache,
        rerun=args.rerun_from or (),
    )
    return report_run(result, workspace, as_json=getattr(args, "json", False))


def print_progress(event: object) -> None:
    """A run listener that narrates node starts and ends on stderr."""
    from engine.run.events import NodeFinished, NodeStarted

    if isinstance(event, NodeStarted):
        print(f"  started  {event.node_id}: {event.title}", file=sys.stderr, flush=True)
    elif isinstance(event, NodeFinished):
        detail = f" ({event.error})" if event.error else ""
        if event.reused_from:
            detail = f" (reused from {event.reused_from})"
        if event.suspect:
            detail += f" [suspect: {event.suspect}]"
        print(f"  {event.status:8} {event.node_id}{detail}", file=sys.stderr, flush=True)


def run_summary(result) -> dict:
    """A finished run as plain JSON-able values (``run.py run --json``)."""
    return {
        "run_id": result.run_id,
        "status": result.status,
        "answered": result.answered,
        "stop_reason": result.stop_reason,
        "answer": result.answer,
        "suspect": result.suspects,
        "nodes": {
            node_id: {
                "status": node.status.value,
                "error": node.error,
                "suspect": node.suspect,
                "reused_from": node.reused_from,
            }
            for node_id, node in result.nodes.items()
        },
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd,
        "warnings": list(result.warnings),
    }


def report_run(result, workspace, *, as_json: bool = False) -> int:
    """Print a finished run's summary and answer; the exit status says whether it has an
    answer: 0 for "completed" and for "suspect" (answered, with a warning per suspect node)."""
    code = 0 if result.answered else 1
    if result.status == "paused":  # stopped at a breakpoint: exit status 3
        code = debug.paused_exit(result) or code
    if as_json:
        summary = run_summary(result) | {"traces": str(workspace.traces.path)}
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return code
    print(f"run id: {result.run_id}")
    print(f"status: {result.status}" + (f" ({result.stop_reason})" if result.stop_reason else ""))
    for node_id, reason in result.suspects.items():
        print(f"suspect: {node_id}: {reason}")
    print(f"tokens: {result.input_tokens} in, {result.output_tokens} out")
    if result.cost_usd:
        print(f"cost: ${result.cost_usd:.6f}")
    print(f"executed: {', '.join(result.executed) or 'none'}")
    print(f"reused: {', '.join(result.reused) or 'none'}")
    print(f"traces: {workspace.traces.path}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("answer:")
    print(result.answer if result.answer is not None else "(no answer)")
    if result.status == "suspect":
        print("warning: the answer is suspect; see the suspect nodes above", file=sys.stderr)
    return code


def resume_run(args: argparse.Namespace) -> int:
    """Continue a stopped run as a new run: recorded calls are reused, the rest run now."""
    from storage.workspace import Workspace

    workspace = Workspace()
    print(f"resuming {args.run_id}", file=sys.stderr, flush=True)
    if debug.controlled(args):  # edited outputs or instructions
        result = debug.resume_controlled(args, workspace, [print_progress])
        return report_run(result, workspace, as_json=getattr(args, "json", False))
    result = workspace.resume_run(args.run_id, listeners=[print_progress])
    return report_run(result, workspace, as_json=getattr(args, "json", False))


def list_runs(args: argparse.Namespace) -> int:
    """Recent runs, newest first; a run whose process died mid-run is marked interrupted."""
    from storage.workspace import Workspace

    kinds = None if args.all else (args.kind or ["execution"])
    traces = Workspace().traces
    wanted = set(getattr(args, "tag", None) or ())
    # A tag filter reads every run of those kinds, then keeps the newest ``limit`` tagged ones.
    runs = traces.runs(limit=None if wanted else args.limit, kinds=kinds)
    labels = traces.run_labels([run["run_id"] for run in runs]) if runs else {}
    if wanted:
        wanted = {tag.strip().lower() for tag in wanted}
        runs = [
            run
            for run in runs
            if run["run_id"] in labels and wanted <= set(labels[run["run_id"]].tags)
        ][: args.limit]
    if not runs:
        print(
            "no run has the tag(s) " + ", ".join(sorted(wanted))
            if wanted
            else "no runs recorded yet",
            file=sys.stderr,
        )
        return 0
    planner = kinds != ["execution"]
    kind_head = f" {'kind':12}" if planner else ""
    print(
        f"{'run id':30}{kind_head} {'status':11} {'nodes done':>10} {'tokens':>8} {'cost $':>9}"
        "  started"
    )
    for run in runs:
        reused = f" ({run['nodes_reused']}r)" if run["nodes_reused"] else ""
        tokens = (run["input_tokens"] or 0) + (run["output_tokens"] or 0)
        started = run["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        if run["origin"]:
            hint = f"  imported, read-only ({shown(run['origin'])})"
        elif run["resumed_by"]:
            hint = f"  -> resumed as {run['resumed_by']}"
        elif run["status"] in ("interrupted", "paused"):
            hint = f"  <- run.py resume {run['run_id']}"
        else:
            hint = ""
        if run.get("kind") not in (None, "execution") and not hint:
            hint = f"  {shown(run['task'] or '')[:60]}"
        kind = f" {run.get('kind') or 'execution':12}" if planner else ""
        label = labels.get(run["run_id"])
        if label is not None and (label.name or label.tags):
            named = [f'"{shown(label.name)}"'] if label.name else []
            hint = "  " + " ".join([*named, *(f"#{tag}" for tag in label.tags)]) + hint
        print(
            f"{run['run_id']:30}{kind} {run['status']:11} {str(run['nodes_done']) + reused:>10} "
            f"{tokens:>8} {run['cost_usd'] or 0:>9.4f}  {started}{hint}"
        )
    return 0


def tag_run(args: argparse.Namespace) -> int:
    """Name a run and set (or add to, or clear) its tags."""
    from storage.workspace import Workspace

    if args.name is None and args.tag is None and not args.clear_tags:
        print("error: give --name, --tag or --clear-tags", file=sys.stderr)
        return 2
    traces = Workspace().traces
    tags = None
    if args.clear_tags:
        tags = []
    elif args.tag is not None:
        own = traces.run_labels([args.run_id]).get(args.run_id)
        tags = [*(own.tags if args.add and own else ()), *args.tag]
    label = traces.label_run(args.run_id, name=args.name, tags=tags)
    tags_text = ", ".join(label.tags) or "none"
    print(f"run {args.run_id}: name {label.name or '(none)'!s}; tags {tags_text}")
    return 0


def export_run_file(args: argparse.Namespace) -> int:
    """Write one run's spans as OTLP JSON, Parquet or CSV, or send them to ``--to URL``."""
    from storage.trace_export import export_run
    from storage.workspace import Workspace

    if args.to:
        from app.services.otlp import send_recorded_run

        if args.format != "otlp":
            raise ValueError(f"--to sends OTLP; --format {args.format} is for files (-o).")

        print(send_recorded_run(Workspace().traces, args.run_id, args.to))
        return 0
    path = export_run(Workspace().traces, args.run_id, Path(args.output), args.format)
    print(f"exported run {args.run_id} as {args.format} to {path} ({path.stat().st_size:,} bytes)")
    return 0


def query_traces(args: argparse.Namespace) -> int:
    """Run one read-only SQL query (or a saved one) over the trace store; print a table."""
    from engine.errors import QueryRefused
    from storage.sql_console import SavedQueries, run_read_only
    from storage.workspace import Workspace

    workspace = Workspace()
    saved = SavedQueries(workspace.root)
    if args.list:
        for query in saved.list():
            print(f"{'example' if query.example else 'saved':8} {query.title}")
        return 0
    if args.saved:
        matches = [q for q in saved.list() if q.title == args.saved]
        if not matches:
            raise QueryRefused(f"no saved query titled {args.saved!r}; `run.py query --list`")
        sql = matches[0].sql
    elif args.sql:
        sql = args.sql
    else:
        raise QueryRefused("give a SELECT, --saved TITLE or --list")
    result = run_read_only(workspace.traces, sql, max_rows=args.limit)
    if args.csv:
        result.frame.to_csv(sys.stdout, index=False)
    else:
        print(result.frame.to_string(index=False, max_colwidth=60))
    more = " (more rows not shown; --limit)" if result.truncated else ""
    print(f"{len(result.frame)} row(s) in {result.elapsed_ms:.0f} ms{more}", file=sys.stderr)
    return 0
