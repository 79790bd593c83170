"""Tokens/s of JSON-schema constrained decoding: the full grammar check vs the lazy one.

"full" applies the grammar to all 262k candidates before every draw (llama-cpp-python's
order, Arbor's before the change); "lazy" draws first, checks only the drawn token against the
grammar and resamples with the grammar applied to everything only when that token is refused
(llama.cpp's ``common_sampler_sample``). Both run through ``engine.models.batch_decode.decode``
exactly as ``LocalBackend.complete`` calls it (prompt rendered by ``render_prompt``, the
model's lock held), on two workloads:

- planner: the real ``decompose`` call (``planner_messages``, ``PLAN_SCHEMA``, the worked-example
  copy stops, temperature 0.7, 560 max tokens);
- small: a two-field answer schema on a one-line question (temperature 0.7, 128 max tokens).

Each repetition runs both modes with the same seed, in alternating order, so background load
on the shared machine hits both alike. The prompt's whole chunks stay cached between calls (as
in real use), so every call re-reads the same tail; its cost (measured with unconstrained
one-token calls) is subtracted for "gen tok/s", while "e2e tok/s" is tokens / wall time of the
call. "resampled" is the share of grammar steps whose first draw the grammar refused.

The lazy check changes the distribution at temperature > 0, so ``--plans`` also asks whether the
planner still produces usable plans: every shipped example task (``assets/examples/tasks.json``)
goes through the real ``decompose`` (both attempts, its repairs and fallback) once per check,
switched with ``batch_decode.GRAMMAR_CHECK``, and the model plans vs fallbacks are counted.
Usage::

    flock /tmp/arbor-model.lock .venv/bin/python bench/grammar_speed.py [--reps 3] [--plans]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jsonschema

from engine.models import batch_decode, local
from engine.models.base import ChatMessage
from engine.models.bundled import bundled_model_path
from engine.planner.decompose import (
    PLAN_SCHEMA,
    PLANNER_MAX_TOKENS,
    PLANNER_TEMPERATURES,
    copy_stops,
    decompose,
    planner_messages,
    worked_examples,
)

PLANNER_TASK = "Plan a three-day trip to Lisbon on a small budget"
EXAMPLE_TASKS = Path(__file__).resolve().parent.parent / "assets" / "examples" / "tasks.json"
SMALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1, "maxLength": 80},
        "confidence": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
    },
    "required": ["answer", "confidence"],
}
SMALL_PROMPT: list[ChatMessage] = [
    {"role": "user", "content": "Why is the sky blue? Answer as JSON with your confidence."}
]
MODES: tuple[batch_decode.GrammarCheck, ...] = ("full", "lazy")


@dataclass(frozen=True)
class Workload:
    name: str
    messages: list[ChatMessage]
    schema: dict[str, Any]
    stop: Sequence[str]
    temperature: float
    max_tokens: int


@dataclass
class Tally:
    """One mode's results on one workload."""

    e2e: list[float] = field(default_factory=list)
    gen: list[float] = field(default_factory=list)
    tokens: int = 0
    steps: int = 0
    resamples: int = 0
    valid: int = 0
    finishes: list[str] = field(default_factory=list)


def _rendered(entry: Any, workload: Workload) -> local.RenderedPrompt:
    return local.render_prompt(entry.llama, workload.messages, workload.stop, workload.schema)


def _prompt_tail_seconds(path: Path, workload: Workload, reps: int = 3) -> float:
    """Median wall time of re-reading the uncached prompt tail (one unconstrained token)."""
    times = []
    with local._using(path) as entry:
        prompt = _rendered(entry, workload)
        params = [batch_decode.SampleParams(workload.temperature, 0.95, 1)]
        for _ in range(reps):
            started = time.perf_counter()
            batch_decode.decode(entry.llama, prompt.tokens, params, max_tokens=1)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run(
    path: Path, workload: Workload, mode: batch_decode.GrammarCheck, seed: int
) -> tuple[float, batch_decode.SequenceOutput]:
    with local._using(path) as entry:
        prompt = _rendered(entry, workload)
        local._ensure_context(entry, path, len(prompt.tokens) + workload.max_tokens, "bench")
        params = [batch_decode.SampleParams(workload.temperature, 0.95, seed)]
        started = time.perf_counter()
        (output,) = batch_decode.decode(
            entry.llama,
            prompt.tokens,
            params,
            max_tokens=workload.max_tokens,
            stop=prompt.stop,
            grammar=prompt.grammar,
            grammar_check=mode,
        )
        return time.perf_counter() - started, output


def _is_valid(text: str, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(text, strict=False), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def compare_plans(path: Path) -> list[str]:
    """Decompose every shipped example task under each check; one summary line per check."""
    tasks = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))
    lines = []
    for mode in MODES:
        batch_decode.GRAMMAR_CHECK = mode
        plans, seconds, tokens = 0, 0.0, 0
        for task in tasks:
            started = time.perf_counter()
            result = decompose(task["task"], backend=local.LocalBackend(path))
            elapsed = time.perf_counter() - started
            seconds += elapsed
            tokens += sum(c.usage.output_tokens for c in result.calls)
            plans += not result.fallback
            outcome = "fallback" if result.fallback else f"{len(result.plan.root.children)} steps"
            print(
                f"plans {mode}: {task['id']:16} {outcome:9} attempts {result.attempts} "
                f"{elapsed:5.1f} s",
                flush=True,
            )
        lines.append(
            f"plans   {mode:4}: {plans}/{len(tasks)} model plans (rest fell back), "
            f"{seconds:.0f} s, {tokens} output tokens"
        )
    batch_decode.GRAMMAR_CHECK = "lazy"
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7, help="first seed; rep r uses seed + r")
    parser.add_argument("--only", choices=["planner", "small"], default=None)
    parser.add_argument("--plans", action="store_true", help="also compare plan usability")
    args = parser.parse_args()

    path = bundled_model_path()
    workloads = [
        Workload(
            "planner",
            planner_messages(PLANNER_TASK),
            PLAN_SCHEMA,
            copy_stops(worked_examples()),
            PLANNER_TEMPERATURES[0],
            PLANNER_MAX_TOKENS,
        ),
        Workload("small", SMALL_PROMPT, SMALL_SCHEMA, (), 0.7, 128),
    ]
    # --reps 0 skips the speed comparison (e.g. with --plans alone).
    workloads = [w for w in workloads if args.only in (None, w.name) and args.reps > 0]
    local.LocalBackend(path).check()  # load outside the timings

    seeds = f"seeds {args.seed}..{args.seed + args.reps - 1}" if args.reps > 0 else "no speed runs"
    print(f"model {path.name}, reps {args.reps}, {seeds}")
    summary = []
    for workload in workloads:
        _run(path, workload, "lazy", args.seed)  # warm: fills the prompt cache, first-call costs
        tail = _prompt_tail_seconds(path, workload)
        tallies = {mode: Tally() for mode in MODES}
        for rep in range(args.reps):
            order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
            for mode in order:
                seconds, out = _run(path, workload, mode, args.seed + rep)
                tally = tallies[mode]
                tally.e2e.append(out.completion_tokens / seconds)
                tally.gen.append(out.completion_tokens / max(seconds - tail, 1e-6))
                tally.tokens += out.completion_tokens
                tally.steps += out.grammar_steps
                tally.resamples += out.grammar_resamples
                tally.valid += _is_valid(out.text, workload.schema)
                tally.finishes.append(out.finish_reason)
                print(
                    f"{workload.name:7} rep {rep + 1} {mode}: {out.completion_tokens:4d} tokens "
                    f"in {seconds:6.2f} s = {tally.e2e[-1]:5.1f} tok/s e2e, "
                    f"{tally.gen[-1]:5.1f} gen; resampled {out.grammar_resamples}/"
                    f"{out.grammar_steps}; {out.finish_reason}",
                    flush=True,
                )
        print(f"{workload.name}: prompt tail re-read {tail:.2f} s per call")
        for mode in MODES:
            tally = tallies[mode]
            share = tally.resamples / tally.steps if tally.steps else 0.0
            summary.append(
                f"{workload.name:7} {mode:4}: median {statistics.median(tally.e2e):5.1f} tok/s "
                f"e2e, {statistics.median(tally.gen):5.1f} gen; {tally.tokens} tokens; "
                f"resampled {tally.resamples}/{tally.steps} = {share:.1%}; "
                f"valid JSON {tally.valid}/{args.reps}; finish {','.join(tally.finishes)}"
            )
        full, lazy = tallies["full"], tallies["lazy"]
        summary.append(
            f"{workload.name:7} lazy/full: e2e x"
            f"{statistics.median(lazy.e2e) / statistics.median(full.e2e):.2f}, gen x"
            f"{statistics.median(lazy.gen) / statistics.median(full.gen):.2f}"
        )
    if args.plans:
        summary.extend(compare_plans(path))
    print("\n".join(["", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
