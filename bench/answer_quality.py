"""Answer quality of single-step questions on the bundled model: chat prompts vs the default.

Issue 13's first benchmark. Each question of ``bench/data/answer_questions.jsonl`` (facts, short
lists, short explanations, simple calculations in en, fr, de, es, it and pt; see
``bench/answer_scoring.py`` for how answers are graded) runs as a one-node plan through the real
executor (``engine.run.executor.execute_plan`` on ``single_node_plan``) twice, interleaved, with
the same seed:

* ``chat`` (old): ``GenerationConfig(prompt_format="chat")``, the node prompt in the model's chat
  format;
* ``default`` (new): ``GenerationConfig()``, whatever the default ``prompt_format`` is ("auto":
  few-shot base prompts for base models such as the bundled Gemma 3 270M). If the default is
  still "chat" the second arm would repeat the first, so it is skipped and reported missing.

Both arms share one loaded model (one ``LocalBackend``), warmed up by one call first. Reported per
arm: share on-topic, share of echoes (the benchmark's own measure *and*
``engine.output_check.check_output``'s, when that module exists), share correct among questions
with a reference, median seconds per question; then the same per language and per category. The
raw results (every answer, its verdicts, the prompt sent) go to a JSON file under
``bench/results/``. Usage::

    nice -n 10 .venv/bin/python bench/answer_quality.py [--limit N] [--languages en,fr]
        [--out bench/results/answer_quality.json]

Targets (issue 13): echoes in under 5% of answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_scoring import score_answer
from engine.models import backend_for
from engine.plan import GenerationConfig, ModelRef, single_node_plan
from engine.run.budget import RunCaps
from engine.run.events import ModelCallFinished, NodeFinished
from engine.run.executor import execute_plan

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "answer_questions.jsonl"
RESULTS = ROOT / "bench" / "results"
SEED = 1234
MAX_TOKENS = 128
ECHO_TARGET = 0.05


def load_questions(path: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def round_robin(items: Sequence[dict[str, Any]], key: str = "language") -> list[dict[str, Any]]:
    """Items reordered one ``key`` value at a time, so ``--limit`` still covers every value."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item[key], []).append(item)
    queues = list(groups.values())
    ordered: list[dict[str, Any]] = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def question_order(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One language at a time, each language's questions one category at a time."""
    by_language: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_language.setdefault(item["language"], []).append(item)
    mixed = [q for group in by_language.values() for q in round_robin(group, "category")]
    return round_robin(mixed)


def default_prompt_format() -> str:
    return str(GenerationConfig().prompt_format)


def arms() -> dict[str, GenerationConfig | None]:
    """Arm name -> generation settings; None for an arm that cannot run in this checkout."""
    old = GenerationConfig(prompt_format="chat", seed=SEED, max_tokens=MAX_TOKENS)
    new = GenerationConfig(seed=SEED, max_tokens=MAX_TOKENS)
    return {"chat": old, "default": None if new.prompt_format == "chat" else new}


def engine_echo_check() -> Callable[..., list[Any]] | None:
    try:
        from engine.output_check import check_output
    except ImportError:
        return None
    return check_output


class Recorder:
    """Keeps the last model call and node verdict of one run (the executor's events)."""

    def __init__(self) -> None:
        self.calls: list[ModelCallFinished] = []
        self.suspect: str | None = None

    def __call__(self, event: Any) -> None:
        if isinstance(event, ModelCallFinished):
            self.calls.append(event)
        elif isinstance(event, NodeFinished):
            self.suspect = getattr(event, "suspect", None)


def prompt_text(prompt: str | None) -> str:
    """The rendered prompt of a ``ModelCallFinished`` (messages as JSON) as plain text."""
    if not prompt:
        return ""
    try:
        messages = json.loads(prompt)
    except ValueError:
        return prompt
    if isinstance(messages, list):
        return "\n\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return str(messages)


def wrong_language(answer: str, language: str) -> bool:
    """The answer's detected language (when it can be told) is not the question's."""
    from engine.language import detect_language

    found = detect_language(answer)
    return found is not None and found != language


def rescore(
    rows: list[dict[str, Any]],
    questions: dict[str, dict[str, Any]],
    check: Callable[..., list[Any]] | None,
) -> None:
    """Recompute the verdicts of saved answers against the current labels and checks."""
    for row in rows:
        item = questions[row["id"]]
        row |= score_answer(item, row["answer"], prompt_text(row.get("prompt")))
        row["wrong_language"] = wrong_language(row["answer"], item["language"])
        if check is not None:
            problems = check(
                row["answer"],
                prompt=prompt_text(row.get("prompt")) or item["question"],
                instruction=item["question"],
                finish_reason=row.get("finish_reason"),
                expected_language=item["language"],
            )
            row["engine_problems"] = sorted({p.kind for p in problems})
            row["engine_echo"] = "echo" in row["engine_problems"]


def run_one(
    item: dict[str, Any],
    config: GenerationConfig,
    factory: Callable[[ModelRef], Any],
    check: Callable[..., list[Any]] | None,
) -> dict[str, Any]:
    plan = single_node_plan(item["question"])
    plan.root.generation = config
    recorder = Recorder()
    caps = RunCaps(total_tokens=20_000, max_tokens_per_node=MAX_TOKENS, max_parallel=1)
    started = time.perf_counter()
    result = execute_plan(plan, caps, listeners=[recorder], backend_factory=factory)
    seconds = time.perf_counter() - started
    node = result.nodes.get("root")
    answer = (node.output if node is not None else None) or result.answer or ""
    last = recorder.calls[-1] if recorder.calls else None
    sent = prompt_text(last.prompt if last else None)
    row: dict[str, Any] = {
        "id": item["id"],
        "language": item["language"],
        "category": item["category"],
        "question": item["question"],
        "answer": answer,
        "status": result.status,
        "error": node.error if node is not None else result.stop_reason,
        "seconds": round(seconds, 3),
        "output_tokens": result.output_tokens,
        "calls": len(recorder.calls),
        "finish_reason": last.finish_reason if last else None,
        "prompt": last.prompt if last else None,
        "suspect": recorder.suspect,
        **score_answer(item, answer, sent),
        "wrong_language": wrong_language(answer, item["language"]),
    }
    if check is not None:
        problems = check(
            answer,
            prompt=sent or item["question"],
            instruction=item["question"],
            finish_reason=row["finish_reason"],
            expected_language=item["language"],
        )
        kinds = sorted({p.kind for p in problems})
        row["engine_problems"] = kinds
        row["engine_echo"] = "echo" in kinds
    return row


def pct(flags: Sequence[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f}%" if flags else "-"


def metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    graded = [r for r in rows if r["correct"] is not None]
    engine = [r["engine_echo"] for r in rows if "engine_echo" in r]
    return {
        "n": len(rows),
        "on_topic": sum(r["on_topic"] for r in rows) / len(rows) if rows else None,
        "echo": sum(r["echo"] for r in rows) / len(rows) if rows else None,
        "engine_echo": sum(engine) / len(engine) if engine else None,
        "correct": sum(r["correct"] for r in graded) / len(graded) if graded else None,
        "graded": len(graded),
        "empty": sum(r["empty"] for r in rows) / len(rows) if rows else None,
        "wrong_language": sum(r["wrong_language"] for r in rows) / len(rows) if rows else None,
        "failed": sum(r["status"] not in ("completed", "suspect") for r in rows),
        "median_s": statistics.median(r["seconds"] for r in rows) if rows else None,
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(
    rows: Sequence[dict[str, Any]], names: Sequence[str], group: str | None = None
) -> list[str]:
    """Markdown lines: one row per arm (and per ``group`` value, when given)."""
    head = "| " + (f"{group} | " if group else "") + "prompts | n | on-topic | echo (bench) "
    head += "| echo (output_check) | correct (of graded) | wrong language | empty | median s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    keys = sorted({r[group] for r in rows}) if group else [None]
    for key in keys:
        for name in names:
            chosen = [r for r in rows if r["arm"] == name and (group is None or r[group] == key)]
            if not chosen:
                continue
            m = metrics(chosen)
            lines.append(
                "| "
                + (f"{key} | " if group else "")
                + f"{name} | {m['n']} | {_cell(m['on_topic'])} | {_cell(m['echo'])} | "
                f"{_cell(m['engine_echo'])} | {_cell(m['correct'])} ({m['graded']}) | "
                f"{_cell(m['wrong_language'])} | {_cell(m['empty'])} | {m['median_s']:.2f} |"
            )
    return lines


def report(rows: Sequence[dict[str, Any]], runnable: Sequence[str]) -> None:
    print()
    print("## Answer quality, bundled model (chat vs default prompts)")
    print()
    print("\n".join(table(rows, runnable)))
    print()
    print("### Per language")
    print()
    print("\n".join(table(rows, runnable, "language")))
    print()
    print("### Per category")
    print()
    print("\n".join(table(rows, runnable, "category")))
    print()
    for name in runnable:
        m = metrics([r for r in rows if r["arm"] == name])
        verdict = "meets" if m["echo"] is not None and m["echo"] < ECHO_TARGET else "misses"
        print(f"{name}: echo {_cell(m['echo'])} (bench measure) {verdict} the < 5% target")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N questions (all langs)")
    parser.add_argument("--languages", default=None, help="comma-separated, e.g. en,fr")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="no model: re-grade a saved results file against the current labels, print tables",
    )
    args = parser.parse_args(argv)
    if args.rescore is not None:
        saved = json.loads(args.rescore.read_text(encoding="utf-8"))
        rows = saved["rows"]
        rescore(rows, {q["id"]: q for q in load_questions()}, engine_echo_check())
        report(rows, saved["arms"])
        return 0

    questions = load_questions()
    if args.languages:
        wanted = {code.strip() for code in args.languages.split(",") if code.strip()}
        questions = [q for q in questions if q["language"] in wanted]
    questions = question_order(questions)[: args.limit]
    if not questions:
        print("no questions selected", file=sys.stderr)
        return 2

    configs = arms()
    runnable = [name for name, config in configs.items() if config is not None]
    missing = [name for name, config in configs.items() if config is None]
    check = engine_echo_check()
    backend = backend_for(ModelRef())
    factory: Callable[[ModelRef], Any] = lambda ref: backend  # noqa: E731 - one loaded model
    warm = single_node_plan("Say hello.")
    execute_plan(warm, RunCaps(max_tokens_per_node=16), backend_factory=factory)

    print(
        f"{len(questions)} questions; arms: {', '.join(runnable)}"
        + (
            f" (missing: {', '.join(missing)}: the default prompt_format is still 'chat')"
            if missing
            else ""
        )
        + f"; default prompt_format = {default_prompt_format()!r}; seed {SEED}; "
        f"max_tokens {MAX_TOKENS}; output_check: {'yes' if check else 'missing'}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    interrupted = False
    try:
        for index, item in enumerate(questions):
            order = runnable if index % 2 == 0 else runnable[::-1]
            done = []
            for name in order:
                config = configs[name]
                assert config is not None
                row = run_one(item, config, factory, check) | {"arm": name}
                done.append(row)
                flags = "echo " if row["echo"] else ""
                flags += "on-topic " if row["on_topic"] else "off-topic "
                flags += {True: "correct", False: "wrong", None: ""}[row["correct"]]
                print(
                    f"[{index + 1}/{len(questions)}] {item['id']} {name:7} "
                    f"{row['seconds']:5.1f}s {flags:26} {row['answer'][:70]!r}",
                    flush=True,
                )
            rows.extend(done)  # both arms of a question, or neither
    except KeyboardInterrupt:  # Ctrl-C: report the questions finished so far
        interrupted = True
        print("\ninterrupted: reporting the questions finished so far", flush=True)

    report(rows, runnable)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"answer_quality-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {name: metrics([r for r in rows if r["arm"] == name]) for name in runnable}
    out.write_text(
        json.dumps(
            {
                "benchmark": "answer_quality",
                "finished_at": stamp,
                "seed": SEED,
                "max_tokens": MAX_TOKENS,
                "default_prompt_format": default_prompt_format(),
                "arms": runnable,
                "missing_arms": missing,
                "output_check": check is not None,
                "interrupted": interrupted,
                "questions": len({r["id"] for r in rows}),
                "summary": summary,
                "rows": rows,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
