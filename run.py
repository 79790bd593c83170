"""Arbor's command line.

python run.py                     launch the UI on http://127.0.0.1:8501
python run.py run FILE            run a saved plan or session file headless
python run.py decompose "TASK"    print a plan for TASK as JSON
python run.py expand FILE NODE    split a node of a plan file with the planner (--replan)
python run.py rate FILE           rate the difficulty of a plan's unrated nodes
python run.py export FILE         print a plan (JSON or YAML file) as JSON or YAML
python run.py sessions            saved sessions (list, search, rename, duplicate, delete)
python run.py export-session ID -o FILE   one session and its runs as a portable .arbor file
python run.py import-session FILE import an .arbor file (or a JSON session or plan file)
python run.py runs                recent runs (interrupted ones flagged)
python run.py resume RUN_ID       continue an interrupted run, reusing its finished calls
python run.py models              the model registry (list, add-local, add-remote, remove, test)
python run.py allocate FILE       per-node budget allocation (policy, strategy, caps)
python run.py eval FILE DATASET   accuracy, tokens, cost, cost-of-pass, Pareto frontier
python run.py search FILE DATASET model + strategy + budget per node under a budget, on a dev set
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
    from storage.workspace import Workspace

    workspace = Workspace()
    plan, caps, session_id = _load_run_target(Path(args.file), workspace)
    caps = _caps_from(args, caps)

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
    from engine.run.events import NodeFinished, NodeStarted

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


def _read_plan(path: str):
    from engine.errors import PlanError
    from engine.plan.files import import_plan

    file = Path(path)
    if not file.is_file():
        raise PlanError(f"{path} does not exist or is not a file.")
    return import_plan(file.read_text(encoding="utf-8", errors="replace"), source=path)


def _write_plan(plan, output: str | None, fmt: str = "json") -> None:
    from engine.plan.files import export_plan

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
    from engine.planner.expand import expand_node, replan_subtree

    plan = _read_plan(args.file)
    split = replan_subtree if args.replan else expand_node
    result = split(plan, args.node, _model(args, plan))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    _write_plan(result.plan, args.output)
    return 1 if result.fallback else 0


def rate_plan(args: argparse.Namespace) -> int:
    from engine.planner.difficulty import rate_difficulty

    plan = _read_plan(args.file)
    rated, notes = rate_difficulty(plan, _model(args, plan), only_missing=not args.all)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    _write_plan(rated, args.output)
    return 0


def export_plan_file(args: argparse.Namespace) -> int:
    _write_plan(_read_plan(args.file), args.output, args.format)
    return 0


def _print_sessions(sessions) -> None:
    for session in sessions:
        print(
            f"{session.id}  {session.updated_at:%Y-%m-%d %H:%M}  {len(session.run_ids):3} runs  "
            f"{session.name}"
        )


def list_sessions(_: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    _print_sessions(Workspace().sessions.list())
    return 0


def search_sessions(args: argparse.Namespace) -> int:
    """Sessions whose name or task contains TEXT (any case), most recently updated first."""
    from storage.workspace import Workspace

    found = Workspace().sessions.search(args.text)
    if not found:
        print(f"no session's name or task contains {args.text!r}", file=sys.stderr)
    _print_sessions(found)
    return 0


def rename_session(args: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    session = Workspace().sessions.rename(args.session_id, args.name)
    print(f"renamed {session.id} to {session.name!r}")
    return 0


def duplicate_session(args: argparse.Namespace) -> int:
    """Copy task, plan and caps into a new session; the runs stay with the original."""
    from storage.workspace import Workspace

    copy = Workspace().sessions.duplicate(args.session_id, args.name)
    print(f"duplicated {args.session_id} as {copy.id} ({copy.name!r})")
    return 0


def delete_session(args: argparse.Namespace) -> int:
    from storage.workspace import Workspace

    deleted_runs = Workspace().delete_session(args.session_id, delete_runs=args.with_runs)
    detail = f" and {len(deleted_runs)} run(s)" if args.with_runs else " (its runs are kept)"
    print(f"deleted session {args.session_id}{detail}")
    return 0


def export_session_file(args: argparse.Namespace) -> int:
    """Write one session with its runs (or the --run ones) as a portable .arbor file."""
    from storage.bundles import export_session
    from storage.workspace import Workspace

    report = export_session(Workspace(), args.session_id, args.output, args.run)
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
    from storage.workspace import Workspace

    report = import_file(Workspace(), args.file)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary())
    print(f"session id: {report.session.id}")
    for run_id in report.runs_imported:
        print(f"  imported {run_id}")
    for run_id in report.runs_skipped:
        print(f"  skipped  {run_id} (already here)")
    return 0


def _registry():
    from engine.models.registry import Registry
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
    from engine.models.registry import check_entry

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


def export_run_file(args: argparse.Namespace) -> int:
    """Write one run's spans as OTLP JSON, Parquet or CSV."""
    from storage.trace_export import export_run
    from storage.workspace import Workspace

    path = export_run(Workspace().traces, args.run_id, Path(args.output), args.format)
    print(f"exported run {args.run_id} as {args.format} to {path} ({path.stat().st_size:,} bytes)")
    return 0


def query_traces(args: argparse.Namespace) -> int:
    """Run one read-only SQL query (or a saved one) over the trace store; print a table."""
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
            raise ValueError(f"no saved query titled {args.saved!r}; `run.py query --list`")
        sql = matches[0].sql
    elif args.sql:
        sql = args.sql
    else:
        raise ValueError("give a SELECT, --saved TITLE or --list")
    result = run_read_only(workspace.traces, sql, max_rows=args.limit)
    if args.csv:
        result.frame.to_csv(sys.stdout, index=False)
    else:
        print(result.frame.to_string(index=False, max_colwidth=60))
    more = " (more rows not shown; --limit)" if result.truncated else ""
    print(f"{len(result.frame)} row(s) in {result.elapsed_ms:.0f} ms{more}", file=sys.stderr)
    return 0


# -- test-time compute: allocation, evaluation, search ---------------------------------------
def _caps_from(args: argparse.Namespace, caps):
    """``caps`` with the command line's cap options applied (validated)."""
    from engine.run.budget import RunCaps

    overrides = {
        key: value
        for key, value in {
            "total_tokens": getattr(args, "total_tokens", None),
            "max_tokens_per_node": getattr(args, "max_tokens_per_node", None),
            "max_parallel": getattr(args, "max_parallel", None),
            "total_cost_usd": getattr(args, "cost_cap", None),
            "wall_time_s": getattr(args, "time_cap", None),
        }.items()
        if value is not None
    }
    return RunCaps.model_validate({**(caps or RunCaps()).model_dump(), **overrides})


def _print_table(rows: list[dict], columns: list[str]) -> None:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "inf" if value == float("inf") else f"{value:.4g}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def allocate_plan(args: argparse.Namespace) -> int:
    """Show (and with -o save) the per-node allocation a run of the plan would use."""
    from engine.plan.compute_config import strategy_from_spec
    from engine.run.allocation import allocate

    plan = _read_plan(args.file)
    if args.policy:
        plan.allocation = plan.allocation.model_copy(update={"kind": args.policy})
    if args.decay:
        plan.allocation = plan.allocation.model_copy(update={"decay": args.decay})
    if args.strategy:
        plan.default_strategy = strategy_from_spec(args.strategy)
    caps = _caps_from(args, None)
    rows = allocate(plan, caps).rows()
    _print_table(rows, ["node", "difficulty", "model", "strategy", "max_tokens",
                        "planned_tokens", "planned_usd", "token_cap", "source"])  # fmt: skip
    print(f"policy: {plan.allocation.kind}; {caps.total_tokens} tokens in all")
    if args.output:
        _write_plan(plan, args.output)
    return 0


def _dataset(name_or_path: str):
    from engine.tune.evaluation import load_dataset, shipped_datasets

    shipped = shipped_datasets()
    return load_dataset(shipped.get(name_or_path, name_or_path))


def _runner(args: argparse.Namespace, workspace):
    from storage.pools import pool_from_settings

    return pool_from_settings(workspace, ray_address=args.ray, workers=args.workers)


def evaluate_plan(args: argparse.Namespace) -> int:
    """Run a plan (or one configuration per --strategy) over a dataset; print the metrics."""
    from engine.plan.compute_config import strategy_from_spec
    from engine.tune.evaluation import (
        CheckerConfig,
        PlanConfiguration,
        accuracy_cost_chart,
        evaluate,
    )
    from storage.evaluations import save_report
    from storage.workspace import Workspace

    workspace = Workspace()
    plan = _read_plan(args.file)
    dataset = _dataset(args.dataset)
    caps = _caps_from(args, None)
    configurations = [PlanConfiguration("plan", plan, caps)]
    if args.strategy:
        configurations = []
        for spec in args.strategy:
            variant = plan.model_copy(deep=True)
            variant.default_strategy = strategy_from_spec(spec)
            variant.allocation = variant.allocation.model_copy(update={"kind": "uniform"})
            configurations.append(PlanConfiguration(spec, variant, caps))
    checker = CheckerConfig(kind=args.checker)

    def narrate(outcome) -> None:
        mark = "ok " if outcome.correct else "no "
        replay = " (replayed)" if outcome.replayed else ""
        print(f"  {mark}{outcome.configuration} {outcome.example_id}{replay}", file=sys.stderr)

    report = evaluate(
        dataset, configurations, checker, runner=_runner(args, workspace),
        on_outcome=narrate, limit=args.limit,
    )  # fmt: skip
    save_report(workspace.traces, report)
    _print_table(report.rows(), ["configuration", "n", "accuracy", "mean_tokens",
                                 "mean_cost_usd", "mean_latency_s", "cost_of_pass_tokens",
                                 "cost_of_pass_usd", "replayed"])  # fmt: skip
    unit = "usd" if any(r.mean_cost_usd for r in report.results) else "tokens"
    print(f"pareto frontier (accuracy vs {unit}): {', '.join(report.frontier(unit)) or '-'}")
    print(f"evaluation id: {report.evaluation_id} ({report.status})")
    if args.chart:
        accuracy_cost_chart(report, unit).save(args.chart)
        print(f"chart written to {args.chart}", file=sys.stderr)
    return 0 if report.status == "completed" else 1


def search_plan(args: argparse.Namespace) -> int:
    """Search model + strategy + output limit per node on a dev set, within a budget."""
    from engine.models import backend_for
    from engine.models.registry import Registry
    from engine.plan import ModelRef
    from engine.plan.compute_config import strategy_from_spec
    from engine.tune.dev_search import DatasetEvaluator, run_search
    from engine.tune.evaluation import CheckerConfig
    from engine.tune.search import SearchSpace
    from storage.evaluations import save_report
    from storage.workspace import Workspace

    workspace = Workspace()
    plan = _read_plan(args.file)
    registry = Registry.in_data_dir(workspace.root)
    models = []
    for name in args.models.split(","):
        name = name.strip()
        ref = ModelRef() if name == "bundled" else registry.get(name).ref
        models.append((name, ref))
    space = SearchSpace.from_choices(
        plan,
        models,
        [strategy_from_spec(spec) for spec in args.strategies.split(",")],
        [int(tokens) for tokens in args.max_tokens.split(",")],
        nodes=args.nodes.split(",") if args.nodes else None,
    )
    dataset = _dataset(args.dataset)
    if args.limit:
        dataset.examples = dataset.examples[: args.limit]
    evaluator = DatasetEvaluator(
        plan, space, dataset, CheckerConfig(kind=args.checker), _runner(args, workspace),
        _caps_from(args, None), cost_unit=args.cost,
    )  # fmt: skip
    proposer = backend_for(registry.get(args.proposer).ref if args.proposer else ModelRef())

    def narrate(trial) -> None:
        print(f"  trial: accuracy {trial.accuracy:.2f}, cost {trial.cost:.4g} {args.cost}"
              f" on {trial.n_examples} ({trial.note})", file=sys.stderr)  # fmt: skip

    result = run_search(
        args.method, evaluator, budget=args.budget, max_trials=args.max_trials,
        proposer=proposer if args.method == "llm" else None, on_trial=narrate,
    )  # fmt: skip
    for report in evaluator.reports:
        save_report(workspace.traces, report, kind="search")
    print(f"method: {result.method}; {result.trials_used} trial(s) of {space.size} possible;"
          f" stopped: {result.stop_reason}")  # fmt: skip
    if result.best is None:
        print(f"no assignment stays within {args.budget} {args.cost} per example")
        return 1
    best = result.best
    print(f"best: accuracy {best.accuracy:.2%} at {best.cost:.4g} {args.cost} per example")
    for node_id, label in space.describe(best.assignment).items():
        print(f"  {node_id}: {label}")
    if args.apply:
        _write_plan(space.apply(plan, best.assignment), args.output or args.file)
    return 0


def _cap_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--total-tokens", type=int)
    command.add_argument("--max-tokens-per-node", type=int)
    command.add_argument("--cost-cap", type=float, help="most dollars a run may spend")
    command.add_argument("--time-cap", type=float, help="most seconds a run may take")


def _pool_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--workers", type=int, default=1, help="runs at once")
    command.add_argument(
        "--ray", metavar="ADDRESS", help="run on Ray ('local' or a cluster; env ARBOR_RAY_ADDRESS)"
    )


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
    run.add_argument("--cost-cap", type=float, help="most dollars the run may spend")
    run.add_argument("--time-cap", type=float, help="most seconds the run may take")
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

    rns = commands.add_parser("runs", help="list recent runs; flags interrupted ones")
    rns.add_argument("--limit", type=int, default=20, help="how many runs (newest first)")
    rns.set_defaults(handler=list_runs)

    exr = commands.add_parser("export-run", help="write a run's spans as OTLP JSON, Parquet or CSV")
    exr.add_argument("run_id", metavar="RUN_ID")
    exr.add_argument("--format", choices=["otlp", "parquet", "csv"], default="otlp")
    exr.add_argument("-o", "--output", required=True, help="file to write")
    exr.set_defaults(handler=export_run_file)

    qry = commands.add_parser("query", help="read-only SQL over the trace store")
    qry.add_argument("sql", nargs="?", help="one SELECT (tables: runs, node_executions, ...)")
    qry.add_argument("--saved", metavar="TITLE", help="run a saved or example query")
    qry.add_argument("--list", action="store_true", help="list saved and example queries")
    qry.add_argument("--limit", type=int, default=100, help="most rows to print")
    qry.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    qry.set_defaults(handler=query_traces)

    res = commands.add_parser("resume", help="continue an interrupted run, reusing finished calls")
    res.add_argument("run_id", metavar="RUN_ID")
    res.set_defaults(handler=resume_run)

    alo = commands.add_parser("allocate", help="show the per-node budget allocation of a plan")
    alo.add_argument("file", help="plan file, JSON or YAML")
    alo.add_argument("--policy", choices=["uniform", "difficulty", "fast_deliberate"])
    alo.add_argument("--decay", choices=["constant", "linear", "polynomial", "exponential",
                                         "cosine"])  # fmt: skip
    alo.add_argument("--strategy", help="plan default strategy: single, bo3, sc5, refine2 ...")
    _cap_options(alo)
    alo.add_argument("-o", "--output", help="write the plan with these settings here")
    alo.set_defaults(handler=allocate_plan)

    evl = commands.add_parser("eval", help="run a plan over a dataset: accuracy, cost, frontier")
    evl.add_argument("file", help="plan file, JSON or YAML")
    evl.add_argument("dataset", help="CSV/JSONL file, or a shipped one: arithmetic, capitals ...")
    evl.add_argument(
        "--strategy",
        action="append",
        metavar="SPEC",
        help="one configuration per strategy (repeatable): single, bo3, sc5, refine2",
    )
    evl.add_argument(
        "--checker",
        default="normalised",
        choices=["exact", "normalised", "numeric", "regex", "judge"],
    )
    evl.add_argument("--limit", type=int, help="only the first N examples")
    evl.add_argument("--chart", help="write the accuracy-vs-cost chart (HTML/PNG/JSON) here")
    _pool_options(evl)
    _cap_options(evl)
    evl.set_defaults(handler=evaluate_plan)

    sea = commands.add_parser("search", help="search model + strategy + budget per node")
    sea.add_argument("file", help="plan file, JSON or YAML")
    sea.add_argument("dataset", help="CSV/JSONL file, or a shipped one")
    sea.add_argument("--budget", type=float, required=True, help="most cost per example")
    sea.add_argument("--cost", choices=["tokens", "usd"], default="tokens")
    sea.add_argument("--method", choices=["coordinate", "halving", "llm"], default="coordinate")
    sea.add_argument("--max-trials", type=int, default=12)
    sea.add_argument("--models", default="bundled", help="registry names, comma-separated")
    sea.add_argument("--strategies", default="single,sc3", help="e.g. single,sc3,bo3")
    sea.add_argument("--max-tokens", default="32", help="output limits, e.g. 16,64")
    sea.add_argument("--nodes", help="only these nodes (default: all)")
    sea.add_argument("--proposer", help="registry name of the LLM proposing (--method llm)")
    sea.add_argument(
        "--checker",
        default="normalised",
        choices=["exact", "normalised", "numeric", "regex", "judge"],
    )
    sea.add_argument("--limit", type=int, help="only the first N examples")
    sea.add_argument("--apply", action="store_true", help="write the best assignment's plan")
    sea.add_argument("-o", "--output", help="where --apply writes (default: the plan file)")
    _pool_options(sea)
    _cap_options(sea)
    sea.set_defaults(handler=search_plan)

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
