"""What traces cost an evaluation, end to end: wall time with traces over wall time without.

An evaluation of ``--examples`` examples under 4 configurations of a 3-node plan (two leaves
and a root that uses both; the configurations differ in the leaves' strategy: single, sc3, bo2,
refine1) on an instant backend, so only Arbor's own work costs time. Two runners, interleaved
and repeated, median reported:

- ``traces``: ``storage.pools.LocalPool`` over a workspace in a temp dir, the evaluation path of
  ``run.py eval`` and the Evaluate page: every run written to the DuckDB trace store as it goes
  and every call looked up in the store's call cache first;
- ``no traces``: ``engine.tune.runners.ThreadRunner``, the same executor with no listener and
  no cache.

Every prompt holds its example's input and each repetition uses a fresh workspace, so a lookup
hits only where two configurations share a call on the same example (same prompt, sample and
seed: the first sample of the leaves), as in daily use; the untraced runner makes those calls
again, at no cost on this backend. The target is a ratio of at most 1.05.

Usage::

    .venv/bin/python bench/evaluation_overhead.py [--examples 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.orchestration_overhead import InstantBackend
from engine.plan import ModelRef, Node, Plan
from engine.plan.compute_config import NodeBudget, strategy_from_spec
from engine.run.budget import RunCaps
from engine.tune.checking import CheckerConfig
from engine.tune.datasets import Dataset, Example
from engine.tune.evaluation import evaluate
from engine.tune.runners import PlanConfiguration, PlanRunner, ThreadRunner
from storage import workspace as workspace_module
from storage.pools import LocalPool
from storage.workspace import Workspace

TARGET_RATIO = 1.05
STRATEGIES = ("single", "sc3", "bo2", "refine1")
CAPS = RunCaps(total_tokens=100_000, max_tokens_per_node=16, max_parallel=2)


def configuration(strategy: str) -> PlanConfiguration:
    model = ModelRef(remote="instant")
    leaves = [
        # The input is in every prompt, so no example's calls are another's.
        Node(
            id=f"part{i}",
            title=f"Part {i}",
            instruction=f"Answer part {i} of: {{{{ task }}}}",
            model=model,
        )
        for i in (1, 2)
    ]
    for leaf in leaves:
        leaf.budget = NodeBudget(strategy=strategy_from_spec(strategy))
    root = Node(
        id="root",
        title="Answer",
        instruction="Combine the parts.",
        model=model,
        children=leaves,
    )
    return PlanConfiguration(strategy, Plan(task="Evaluate {input}", root=root), CAPS)


def dataset(examples: int) -> Dataset:
    return Dataset(
        "bench",
        [Example(id=f"e{i:03d}", input=f"question {i}", expected="ok") for i in range(examples)],
        "generated",
    )


def run_evaluation(runner: PlanRunner, examples: int) -> float:
    configurations = [configuration(strategy) for strategy in STRATEGIES]
    started = time.perf_counter()
    report = evaluate(
        dataset(examples),
        configurations,
        CheckerConfig(kind="exact"),
        runner=runner,
        evaluation_id="bench",
    )
    elapsed = time.perf_counter() - started
    assert report.status == "completed", report.status
    runs = sum(c.n for c in report.results)
    assert runs == examples * len(STRATEGIES), runs
    return elapsed


def with_traces(examples: int) -> float:
    backend = InstantBackend()
    original = workspace_module.registry_backend_factory
    workspace_module.registry_backend_factory = lambda root: (lambda ref: backend, None)  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory(prefix="arbor-bench-eval-") as tmp:
            workspace = Workspace(Path(tmp))
            workspace.traces.schema_version()  # the store exists before, as in daily use
            elapsed = run_evaluation(LocalPool(workspace), examples)
            runs = workspace.traces.runs(sync=True)
            assert len(runs) == examples * len(STRATEGIES), len(runs)
            assert {run["status"] for run in runs} == {"completed"}
            workspace.traces.release()
            return elapsed
    finally:
        workspace_module.registry_backend_factory = original  # type: ignore[assignment]


def without_traces(examples: int) -> float:
    backend = InstantBackend()
    return run_evaluation(ThreadRunner(lambda ref: backend), examples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    runs = args.examples * len(STRATEGIES)
    print(
        f"evaluation: {args.examples} examples x {len(STRATEGIES)} configurations"
        f" ({', '.join(STRATEGIES)}) = {runs} runs of a 3-node plan, instant backend;"
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    )
    variants: dict[str, Callable[[], float]] = {
        "traces": lambda: with_traces(args.examples),
        "no traces": lambda: without_traces(args.examples),
    }
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(args.reps):
        for name in names[rep % 2 :] + names[: rep % 2]:  # alternate which goes first
            times[name].append(variants[name]())
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in names:
        every = ", ".join(f"{t:.2f}" for t in times[name])
        print(
            f"  {name:10} {medians[name]:6.2f} s, {medians[name] * 1000 / runs:5.2f} ms per run"
            f"   [{every}]"
        )
    ratio = medians["traces"] / medians["no traces"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ratio traces/no traces: {ratio:.3f} (target <= {TARGET_RATIO}: {verdict})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work skews both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
