"""Arbor's command line.

python run.py                     launch the UI on http://127.0.0.1:8501
python run.py run FILE            run a saved plan or session file headless
python run.py decompose "TASK"    print a plan for TASK as JSON
python run.py expand FILE NODE    split a node of a plan file with the planner (--replan)
python run.py rate FILE           rate the difficulty of a plan's unrated nodes
python run.py export FILE         print a plan (JSON or YAML file) as JSON or YAML
python run.py sessions            list saved sessions
python run.py runs                recent runs (interrupted ones flagged)
python run.py resume RUN_ID       continue an interrupted run, reusing its finished calls
python run.py models              the model registry (list, add-local, add-remote, remove, test)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def launch_ui(args: argparse.Namespace) -> int:
    """Start Streamlit on localhost (``--host`` to listen elsewhere)."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app" / "main.py"),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    print(f"Arbor UI on http://{args.host}:{args.port}", flush=True)
    # Replace this process so that signals (Ctrl-C, a test's terminate()) reach Streamlit itself.
    os.chdir(ROOT)
    os.execv(sys.executable, command)


def _load_run_target(path: Path, workspace):
    from engine.errors import PlanError, SessionError
    from engine.plan import Plan
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
    return Plan.from_json(text, source=str(path)), None, None


def run_file(args: argparse.Namespace) -> int:
    from engine.budget import RunCaps
    from storage.workspace import Workspace

    workspace = Workspace()
    plan, caps, session_id = _load_run_target(Path(args.file), workspace)
    caps = caps or RunCaps()
    overrides = {
        key: value
        for key, value in {
            "total_tokens": args.total_tokens,
            "max_tokens_per_node": args.max_tokens_per_node,
            "max_parallel": args.max_parallel,
        }.items()
        if value is not None
    }
    caps = caps.model_copy(update=overrides)
    RunCaps.model_validate(caps.model_dump())

    result = workspace.run_plan(
        plan,
        caps,
        session_id=session_id,
        listeners=[print_progress],
        use_cache=not args.no_cache,
        rerun=args.rerun_from or (),
    )
    return report_run(result, workspace)


def print_progress(event: object) -> None:
    """A run listener that narrates node starts and ends on stderr."""
    from engine.events import NodeFinished, NodeStarted

    if isinstance(event, NodeStarted):
        print(f"  started  {event.node_id}: {event.title}", file=sys.stderr, flush=True)
    elif isinstance(event, NodeFinished):
        detail = f" ({event.error})" if event.error else ""
        if event.reused_from:
            detail = f" (reused from {event.reused_from})"
        print(f"  {event.status:8} {event.node_id}{detail}", file=sys.stderr, flush=True)


def report_run(result, workspace) -> int:
    """Print a finished run's summary and answer; the exit status says whether it completed."""
    print(f"run id: {result.run_id}")
    print(f"status: {result.status}" + (f" ({result.stop_reason})" if result.stop_reason else ""))
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
    return 0 if result.status == "completed" else 1


def decompose_task(args: argparse.Namespace) -> int:
    from engine.decompose import decompose
    from engine.plan import ModelRef

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


def _read_plan(path: str):
    from engine.errors import PlanError
    from engine.plan_io import import_plan

    file = Path(path)
    if not file.is_file():
        raise PlanError(f"{path} does not exist or is not a file.")
    return import_plan(file.read_text(encoding="utf-8", errors="replace"), source=path)


def _write_plan(plan, output: str | None, fmt: str = "json") -> None:
    from engine.plan_io import export_plan

    text = export_plan(plan, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"plan written to {output}", file=sys.stderr)
    else:
        print(text)


def _model(args: argparse.Namespace, plan):
    from engine.plan import ModelRef

    return ModelRef(path=args.model) if args.model else plan.default_model


def expand_plan_node(args: argparse.Namespace) -> int:
    from engine.expand import expand_node, replan_subtree

    plan = _read_plan(args.file)
    split = replan_subtree if args.replan else expand_node
    result = split(plan, args.node, _model(args, plan))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    _write_plan(result.plan, args.output)
    return 1 if result.fallback else 0


def rate_plan(args: argparse.Namespace) -> int:
    from engine.difficulty import rate_difficulty

    plan = _read_plan(args.file)
    rated, notes = rate_difficulty(plan, _model(args, plan), only_missing=not args.all)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    _write_plan(rated, args.output)
    return 0


def export_plan_file(args: argparse.Namespace) -> int:
    _write_plan(_read_plan(args.file), args.output, args.format)
    return 0


def list_sessions(_: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    for session in Workspace().sessions.list():
        print(
            f"{session.id}  {session.updated_at:%Y-%m-%d %H:%M}  {len(session.run_ids):3} runs  "
            f"{session.name}"
        )
    return 0


def _registry():
    from engine.registry import Registry
    from storage import paths

    return Registry.in_data_dir(paths.data_dir())


def list_models(_: argparse.Namespace) -> int:
    registry = _registry()
    print(f"registry: {registry.path}  (models folder: {registry.models_dir})")
    for row in registry.rows():
        facts = ", ".join(
            str(part)
            for part in (
                row["architecture"],
                row["quantisation"],
                row["context"] and f"ctx {row['context']}",
                row["size_mb"] and f"{row['size_mb']:,.0f} MB",
                row["chat_format"] and f"chat {row['chat_format']}",
                row["key_variable"] and f"key ${row['key_variable']}",
            )
            if part
        )
        prices = f"${row['price_in_per_m']:g}/${row['price_out_per_m']:g} per M"
        print(
            f"{row['name']:24} {row['kind']:10} {prices}  x{row['max_concurrent']}  "
            f"{row['where']}" + (f"  [{facts}]" if facts else "")
        )
        if row["problem"]:
            print(f"{'':24} problem: {row['problem']}")
    return 0


def add_local_model(args: argparse.Namespace) -> int:
    settings = {"max_concurrent": args.max_concurrent} if args.max_concurrent else {}
    entry = _registry().add_local(args.path, args.name, **settings)
    print(f"added {entry.name!r}: {entry.path}")
    return 0


def add_remote_model(args: argparse.Namespace) -> int:
    entry = _registry().add_remote(
        args.name,
        args.base_url,
        args.model,
        api_key_env=args.key_env,
        price_in_per_m=args.price_in,
        price_out_per_m=args.price_out,
        max_concurrent=args.max_concurrent,
        timeout_s=args.timeout,
    )
    print(f"added {entry.name!r}: {entry.target}")
    return 0


def remove_model(args: argparse.Namespace) -> int:
    _registry().remove(args.name)
    print(f"removed {args.name!r}")
    return 0


def test_models(args: argparse.Namespace) -> int:
    from engine.registry import check_entry

    registry = _registry()
    entries = [registry.get(args.name)] if args.name else registry.entries()
    failed = 0
    for entry in entries:
        check = check_entry(entry)
        print(f"{entry.name}: {'ok' if check.ok else 'FAILED'}")
        for step in check.steps:
            mark = "ok  " if step.ok else "FAIL"
            print(f"  {mark} {step.name} ({step.seconds:.2f} s): {step.detail}")
        if not check.ok:
            failed += 1
            print(f"error: {check.summary()}", file=sys.stderr)
    return 1 if failed else 0


def list_runs(args: argparse.Namespace) -> int:
    """Recent runs, newest first; a run whose process died mid-run is marked interrupted."""
    from storage.workspace import Workspace

    runs = Workspace().traces.runs(limit=args.limit)
    if not runs:
        print("no runs recorded yet", file=sys.stderr)
        return 0
    print(f"{'run id':30} {'status':11} {'nodes done':>10} {'tokens':>8} {'cost $':>9}  started")
    for run in runs:
        reused = f" ({run['nodes_reused']}r)" if run["nodes_reused"] else ""
        tokens = (run["input_tokens"] or 0) + (run["output_tokens"] or 0)
        started = run["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        hint = f"  <- run.py resume {run['run_id']}" if run["status"] == "interrupted" else ""
        print(
            f"{run['run_id']:30} {run['status']:11} {str(run['nodes_done']) + reused:>10} "
            f"{tokens:>8} {run['cost_usd'] or 0:>9.4f}  {started}{hint}"
        )
    return 0


def resume_run(args: argparse.Namespace) -> int:
    """Continue a stopped run as a new run: recorded calls are reused, the rest run now."""
    from storage.workspace import Workspace

    workspace = Workspace()
    print(f"resuming {args.run_id}", file=sys.stderr, flush=True)
    result = workspace.resume_run(args.run_id, listeners=[print_progress])
    return report_run(result, workspace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="Arbor: plan, run, trace.")
    parser.add_argument("--host", default=os.environ.get("ARBOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ARBOR_PORT", "8501")))
    parser.set_defaults(handler=launch_ui)
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run a plan or session file headless")
    run.add_argument("file")
    run.add_argument("--total-tokens", type=int)
    run.add_argument("--max-tokens-per-node", type=int)
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
    run.set_defaults(handler=run_file)

    dec = commands.add_parser("decompose", help="split a task into a plan (JSON)")
    dec.add_argument("task")
    dec.add_argument("--model", help="path of a local GGUF file (default: bundled model)")
    dec.add_argument("-o", "--output", help="write the plan here instead of stdout")
    dec.set_defaults(handler=decompose_task)

    exp = commands.add_parser("expand", help="split one node of a plan file with the planner")
    exp.add_argument("file", help="plan file, JSON or YAML")
    exp.add_argument("node", help="id of the node to split")
    exp.add_argument("--replan", action="store_true", help="replace the node's subtree")
    exp.add_argument("--model", help="path of a local GGUF file (default: the plan's model)")
    exp.add_argument("-o", "--output", help="write the plan here instead of stdout")
    exp.set_defaults(handler=expand_plan_node)

    rate = commands.add_parser("rate", help="rate the difficulty (1-5) of unrated nodes")
    rate.add_argument("file", help="plan file, JSON or YAML")
    rate.add_argument("--all", action="store_true", help="re-rate rated nodes too")
    rate.add_argument("--model", help="path of a local GGUF file (default: the plan's model)")
    rate.add_argument("-o", "--output", help="write the plan here instead of stdout")
    rate.set_defaults(handler=rate_plan)

    out = commands.add_parser("export", help="print a plan file as JSON or YAML")
    out.add_argument("file", help="plan file, JSON or YAML")
    out.add_argument("--format", choices=["json", "yaml"], default="yaml")
    out.add_argument("-o", "--output", help="write the plan here instead of stdout")
    out.set_defaults(handler=export_plan_file)

    ses = commands.add_parser("sessions", help="list saved sessions")
    ses.set_defaults(handler=list_sessions)

    rns = commands.add_parser("runs", help="list recent runs; flags interrupted ones")
    rns.add_argument("--limit", type=int, default=20, help="how many runs (newest first)")
    rns.set_defaults(handler=list_runs)

    res = commands.add_parser("resume", help="continue an interrupted run, reusing finished calls")
    res.add_argument("run_id", metavar="RUN_ID")
    res.set_defaults(handler=resume_run)

    mod = commands.add_parser("models", help="the model registry (default: list it)")
    mod.set_defaults(handler=list_models)
    models = mod.add_subparsers(dest="models_command")
    models.add_parser("list", help="list registered and discovered models").set_defaults(
        handler=list_models
    )
    loc = models.add_parser("add-local", help="register a local GGUF file")
    loc.add_argument("path")
    loc.add_argument("--name", help="default: the file name without .gguf")
    loc.add_argument("--max-concurrent", type=int)
    loc.set_defaults(handler=add_local_model)
    rem = models.add_parser("add-remote", help="register an OpenAI-compatible endpoint")
    rem.add_argument("--name", required=True)
    rem.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    rem.add_argument("--model", required=True, help="model name the endpoint serves")
    rem.add_argument("--key-env", help="NAME of the environment variable holding the API key")
    rem.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens")
    rem.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    rem.add_argument("--max-concurrent", type=int, default=4)
    rem.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    rem.set_defaults(handler=add_remote_model)
    rmv = models.add_parser("remove", help="remove a registered model")
    rmv.add_argument("name")
    rmv.set_defaults(handler=remove_model)
    tst = models.add_parser("test", help="check models step by step (default: all)")
    tst.add_argument("name", nargs="?")
    tst.set_defaults(handler=test_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from engine.errors import ArborError

    try:
        return args.handler(args)
    except (ArborError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
