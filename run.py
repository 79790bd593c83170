"""Arbor's command line.

python run.py                     launch the UI on http://127.0.0.1:8501
python run.py run FILE            run a saved plan or session file headless
python run.py decompose "TASK"    print a plan for TASK as JSON
python run.py sessions            list saved sessions
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
    from engine.events import NodeFinished, NodeStarted
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

    def progress(event: object) -> None:
        if isinstance(event, NodeStarted):
            print(f"  started  {event.node_id}: {event.title}", file=sys.stderr, flush=True)
        elif isinstance(event, NodeFinished):
            detail = f" ({event.error})" if event.error else ""
            print(f"  {event.status:8} {event.node_id}{detail}", file=sys.stderr, flush=True)

    result = workspace.run_plan(plan, caps, session_id=session_id, listeners=[progress])
    print(f"run id: {result.run_id}")
    print(f"status: {result.status}" + (f" ({result.stop_reason})" if result.stop_reason else ""))
    print(f"tokens: {result.input_tokens} in, {result.output_tokens} out")
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


def list_sessions(_: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    for session in Workspace().sessions.list():
        print(
            f"{session.id}  {session.updated_at:%Y-%m-%d %H:%M}  {len(session.run_ids):3} runs  "
            f"{session.name}"
        )
    return 0


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
    run.set_defaults(handler=run_file)

    dec = commands.add_parser("decompose", help="split a task into a plan (JSON)")
    dec.add_argument("task")
    dec.add_argument("--model", help="path of a local GGUF file (default: bundled model)")
    dec.add_argument("-o", "--output", help="write the plan here instead of stdout")
    dec.set_defaults(handler=decompose_task)

    ses = commands.add_parser("sessions", help="list saved sessions")
    ses.set_defaults(handler=list_sessions)
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
