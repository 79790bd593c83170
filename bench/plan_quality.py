"""Plan quality on the bundled model: the JSON-grammar planner ("old") vs the default ("new").

Issue 13's second benchmark. Each task of ``bench/data/plan_tasks.jsonl`` (research summaries,
launch and business plans, comparisons with a recommendation, Fermi estimates, trips, study
designs, debugging, writing with a review, decisions under trade-offs, numbered steps, and vague
one-word tasks, in en, fr, de, es, it and pt, each labelled with the aspects a good plan must
cover) is decomposed by both planners, interleaved, on one loaded model:

* ``old``: the planner as it was before issue 13 (``--old-rev``, default ``fae3e5c``): that
  commit is checked out into a temporary git worktree and its ``decompose(task)`` runs in a child
  process on the same machine, task by task, interleaved with the new one. ``--old-rev ''`` uses
  this checkout's JSON planner instead (``decompose(task, style="chat")``, which already has
  the vague-task check);
* ``new``: ``decompose(task)``, the default.

Each call is timed with ``time.perf_counter`` (the model is loaded and warmed up first). Scoring
is ``bench/plan_scoring.py``: aspect coverage, off-topic subtasks, near-duplicate pairs, one-node
fallbacks, vague tasks answered with a clarification, median and p90 seconds. The table checks
issue 13's targets: at least 80% of plans cover all labelled aspects or all but one, at least 90%
have no off-topic subtask, every vague task gets the clarification, p90 at most 30 s, median at
most 15 s. Raw results (every plan's subtasks, notes, verdicts) go to a JSON file under
``bench/results/``. Usage::

    nice -n 10 .venv/bin/python bench/plan_quality.py [--limit N] [--only old|new]
        [--languages en,fr] [--out bench/results/plan_quality.json] [--old-rev REV]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_quality import round_robin
from bench.plan_scoring import TARGETS, meets, score_plan, summarise
from engine.models import backend_for
from engine.plan import GenerationConfig, ModelRef
from engine.planner.decompose import decompose

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "plan_tasks.jsonl"
RESULTS = ROOT / "bench" / "results"
PLANNERS = ("old", "new")


def load_tasks(path: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def task_order(tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Clear tasks one language at a time, vague ones spread among them (for ``--limit``)."""
    clear = round_robin([t for t in tasks if not t["vague"]])
    vague = round_robin([t for t in tasks if t["vague"]])
    if not vague:
        return clear
    step = max(1, -(-len(clear) // len(vague)))
    ordered: list[dict[str, Any]] = []
    for index, item in enumerate(clear):
        if index % step == step - 1 and vague:
            ordered.append(vague.pop(0))
        ordered.append(item)
    return ordered + vague


def has_style() -> bool:
    return "style" in inspect.signature(decompose).parameters


#: The child process that runs an older checkout's planner: one JSON task per line in, one JSON
#: result per line out (the plan as Arbor's plan JSON, fallback, notes, calls, seconds).
OLD_PLANNER_CHILD = """
import json, sys, time
import engine
from engine.planner.decompose import decompose
print(json.dumps({"ready": engine.__file__}), flush=True)
for line in sys.stdin:
    task = json.loads(line)["task"]
    started = time.perf_counter()
    result = decompose(task)
    print(json.dumps({
        "plan": result.plan.to_json(), "fallback": result.fallback, "notes": result.notes,
        "calls": len(result.calls), "seconds": time.perf_counter() - started,
    }), flush=True)
"""


@contextlib.contextmanager
def old_planner(revision: str) -> Iterator[Callable[[str], Any]]:
    """``decompose`` of ``revision``, run in a child process from a temporary git worktree."""
    from engine.plan import Plan

    with tempfile.TemporaryDirectory(prefix="arbor-old-") as folder:
        tree = Path(folder) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
            check=True,
            capture_output=True,
        )
        child = subprocess.Popen(
            [sys.executable, "-c", OLD_PLANNER_CHILD],
            cwd=tree,
            env={**__import__("os").environ, "PYTHONPATH": str(tree)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            ready = json.loads(child.stdout.readline())["ready"]
            if not ready.startswith(str(tree)):
                raise RuntimeError(f"the old planner imported {ready}, not the worktree's code")

            def plan(task: str) -> Any:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(json.dumps({"task": task}) + "\n")
                child.stdin.flush()
                answer = json.loads(child.stdout.readline())
                return SimpleNamespace(
                    plan=Plan.from_json(answer["plan"]),
                    fallback=answer["fallback"],
                    notes=answer["notes"],
                    calls=[None] * answer["calls"],
                    style="old",
                    seconds=answer["seconds"],
                )

            yield plan
        finally:
            child.kill()
            child.wait()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )


def planners(backend: Any) -> dict[str, Callable[[str], Any] | None]:
    """Planner name -> a call that decomposes a task; None when it is missing here."""
    if not has_style():
        return {"old": lambda task: decompose(task, backend=backend), "new": None}
    return {
        "old": lambda task: decompose(task, backend=backend, style="chat"),
        "new": lambda task: decompose(task, backend=backend),
    }


def run_one(item: dict[str, Any], planner: Callable[[str], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    error = None
    try:
        result = planner(item["task"])
    except Exception as exc:  # a benchmark row, not a crash: the table counts it as no plan
        result = None
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    # The old planner times itself in its child process (no pipe overhead).
    seconds = getattr(result, "seconds", None) or seconds
    subtasks: list[dict[str, str]] = []
    node_count = 0
    extra: dict[str, Any] = {"error": error}
    if result is not None:
        nodes = [node for node, _ in result.plan.iter_nodes()]
        node_count = len(nodes)
        subtasks = [
            {"id": n.id, "title": n.title, "instruction": n.instruction}
            for n in nodes
            if n.id != result.plan.root.id
        ]
        clarification = getattr(result, "clarification", None)
        extra |= {
            "style": getattr(result, "style", None),
            "pattern": getattr(result, "pattern", None),
            "detected_language": getattr(result, "language", None),
            "reported_fallback": bool(result.fallback),
            "clarification": getattr(clarification, "message", None),
            "candidates": len(getattr(result, "candidates", []) or []),
            "calls": len(result.calls),
            "notes": list(result.notes),
        }
    clarified = result is not None and bool(getattr(result, "needs_detail", False))
    verdict = score_plan(item, subtasks, node_count=node_count, clarified=clarified)
    return {
        "id": item["id"],
        "language": item["language"],
        "task": item["task"],
        "listed_parts": item["listed_parts"],
        "seconds": round(seconds, 3),
        "plan": subtasks,
        **extra,
        **verdict,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


#: (metric, label, formatter) rows of the main table.
ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("mean_aspect_coverage", "mean aspect coverage", _pct),
    ("covers_all", "plans covering all aspects", _pct),
    ("covers_all_or_all_but_one", "plans covering all aspects or all but one", _pct),
    ("plans_without_off_topic", "plans without an off-topic subtask", _pct),
    ("off_topic_subtasks", "off-topic subtasks (count)", str),
    ("plans_with_near_duplicates", "plans with a near-duplicate pair", _pct),
    ("near_duplicate_pairs", "near-duplicate pairs (count)", str),
    ("fallbacks", "one-node fallbacks (clear tasks)", _pct),
    ("clear_asked_detail", "clear tasks asked for detail", _pct),
    ("vague_handled", "vague tasks given the clarification", _pct),
    ("mean_subtasks", "mean subtasks (clear tasks)", lambda v: "-" if v is None else f"{v:.1f}"),
    ("median_s", "median seconds", _secs),
    ("p90_s", "p90 seconds", _secs),
]


def main_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    names = list(summaries)
    lines = [
        "| metric | " + " | ".join(names) + " | target |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for key, label, fmt in ROWS:
        cells = []
        for name in names:
            value = summaries[name][key]
            verdict = meets(key, value)
            mark = "" if verdict is None else (" ✅" if verdict else " ❌")
            cells.append(fmt(value) + mark)
        target = ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            target = f"{op} {bound:.0%}" if bound <= 1 else f"{op} {bound:.0f} s"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return lines


def language_table(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    lines = [
        "| language | planner | tasks | all or all-but-one | no off-topic | near-dup plans "
        "| fallbacks | vague handled | median s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for language in sorted({r["language"] for r in rows}):
        for name in names:
            chosen = [r for r in rows if r["planner"] == name and r["language"] == language]
            if not chosen:
                continue
            s = summarise(chosen)
            lines.append(
                f"| {language} | {name} | {len(chosen)} | {_pct(s['covers_all_or_all_but_one'])} "
                f"| {_pct(s['plans_without_off_topic'])} | {_pct(s['plans_with_near_duplicates'])} "
                f"| {_pct(s['fallbacks'])} | {_pct(s['vague_handled'])} | {_secs(s['median_s'])} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N tasks (all languages)")
    parser.add_argument("--only", choices=PLANNERS, default=None, help="run one planner")
    parser.add_argument("--languages", default=None, help="comma-separated, e.g. en,fr")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--old-rev",
        default="fae3e5c",
        help="git revision whose planner is 'old' ('' = this checkout's JSON planner)",
    )
    args = parser.parse_args(argv)

    tasks = load_tasks()
    if args.languages:
        wanted = {code.strip() for code in args.languages.split(",") if code.strip()}
        tasks = [t for t in tasks if t["language"] in wanted]
    tasks = task_order(tasks)[: args.limit]
    if not tasks:
        print("no tasks selected", file=sys.stderr)
        return 2

    backend = backend_for(ModelRef())
    backend.complete([{"role": "user", "content": "Hello"}], GenerationConfig(max_tokens=4))
    available = planners(backend)
    with contextlib.ExitStack() as stack:
        if args.old_rev and args.only != "new":
            available["old"] = stack.enter_context(old_planner(args.old_rev))
            print(f"old planner: revision {args.old_rev}, in a child process", flush=True)
        return _run(args, tasks, available)


def _run(args: argparse.Namespace, tasks: list[dict[str, Any]], available: dict[str, Any]) -> int:
    wanted_names = [args.only] if args.only else list(PLANNERS)
    runnable = [n for n in wanted_names if available.get(n) is not None]
    missing = [n for n in wanted_names if available.get(n) is None]
    print(
        f"{len(tasks)} tasks ({sum(t['vague'] for t in tasks)} vague); planners: "
        f"{', '.join(runnable) or 'none'}"
        + (
            f" (missing: {', '.join(missing)}: decompose() has no style parameter)"
            if missing
            else ""
        )
        + f"; style parameter: {'yes' if has_style() else 'no'}",
        flush=True,
    )
    if not runnable:
        return 2

    rows: list[dict[str, Any]] = []
    interrupted = False
    try:
        for index, item in enumerate(tasks):
            order = runnable if index % 2 == 0 else runnable[::-1]
            done = []
            for name in order:
                planner = available[name]
                assert planner is not None
                row = run_one(item, planner) | {"planner": name}
                done.append(row)
                titles = "; ".join(s["title"] for s in row["plan"])[:90]
                flags = "CLARIFY " if row["asked_detail"] else ""
                flags += "FALLBACK " if row["fallback"] else ""
                flags += f"{row['aspects_covered']}/{row['aspects']} aspects"
                flags += f", {len(row['off_topic'])} off-topic" if row["off_topic"] else ""
                print(
                    f"[{index + 1}/{len(tasks)}] {item['id']} {name:3} {row['seconds']:5.1f}s "
                    f"{flags} | {titles}" + (f" | ERROR {row['error']}" if row["error"] else ""),
                    flush=True,
                )
            rows.extend(done)
    except KeyboardInterrupt:  # Ctrl-C: report the tasks finished so far
        interrupted = True
        print("\ninterrupted: reporting the tasks finished so far", flush=True)

    summaries = {name: summarise([r for r in rows if r["planner"] == name]) for name in runnable}
    print()
    print("## Plan quality, bundled model")
    print()
    print("\n".join(main_table(summaries)))
    print()
    print("### Per language")
    print()
    print("\n".join(language_table(rows, runnable)))
    print()
    print("### Tasks with listed parts vs without (all or all-but-one aspects covered)")
    print()
    for name in runnable:
        for listed in (True, False):
            chosen = [
                r
                for r in rows
                if r["planner"] == name and r["listed_parts"] == listed and not r["vague"]
            ]
            if chosen:
                s = summarise(chosen)
                print(
                    f"- {name}, {'listed parts' if listed else 'no listed parts'}: "
                    f"{_pct(s['covers_all_or_all_but_one'])} of {len(chosen)}"
                )

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"plan_quality-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "plan_quality",
                "finished_at": stamp,
                "planners": runnable,
                "missing_planners": missing,
                "style_parameter": has_style(),
                "interrupted": interrupted,
                "tasks": len({r["id"] for r in rows}),
                "summary": summaries,
                "rows": rows,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
