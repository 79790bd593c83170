"""Orchestration overhead per node: Arbor's executor vs LangGraph on the same 1000-node DAG.

The DAG (seeded, so every run measures the same graph): a random recursive tree of N nodes
(node i's parent is a uniformly chosen earlier node, so the tree is shallow and bushy, like a
plan expanded many times) plus about N/2 extra "uses the output of" edges, each from a node to a
later-numbered node that is not its parent. Tree edges run child -> parent and extra edges run
later -> earlier, so the graph is acyclic by construction.

Every node does the same instant work on both sides: gather the outputs of its predecessors into
a prompt and answer a fixed string. Arbor runs through ``engine.run.executor.execute_plan`` with an
in-process ``Backend`` that answers at once; LangGraph runs a ``StateGraph`` in which each node
waits for all its predecessors (``add_edge([preds...], node)``). Variants, interleaved and
repeated, median reported:

- ``arbor+traces``: events written to a real DuckDB file in a temp dir by ``TraceWriter``
  (timed until the RunFinished flush and the writer's close, i.e. until it is on disk);
- ``arbor+traces+cache``: the same plus a call-cache lookup for every node against that store
  (what ``Workspace.run_plan`` does; the store is fresh, so every lookup misses);
- ``arbor``: no listeners, no cache;
- ``langgraph``: the StateGraph (compile time excluded, reported separately).

Usage::

    .venv/bin/python bench/orchestration_overhead.py [--nodes 1000] [--reps 3] [--profile]

LangGraph is an optional extra: ``.venv/bin/pip install -e '.[bench]'`` (or
``.venv/bin/pip install langgraph``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.traces import TraceStore, TraceWriter

SEED = 20240611
ANSWER = "ok"
TARGET_MS_PER_NODE = 1.0
CAPS = RunCaps(total_tokens=200_000, max_tokens_per_node=16, max_parallel=8)


class InstantBackend(Backend):
    """Answers every call at once with the same text: only orchestration costs time."""

    label = "instant"
    max_concurrent = 64

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return Completion(ANSWER, Usage(10, 1), 0.0, self.label, finish_reason="stop")

    def count_tokens(self, text: str) -> int:
        return 10


# -- the DAG ---------------------------------------------------------------------------------
def random_dag(n: int, extra_edges: int, seed: int = SEED) -> tuple[list[int], dict[int, set]]:
    """``parent[i]`` of a random recursive tree and ``deps[i]``: extra predecessors of ``i``.

    Node 0 is the root. An extra edge ``j -> i`` (j > i) means i uses j's output.
    """
    rng = random.Random(seed)
    parent = [-1] + [rng.randrange(i) for i in range(1, n)]
    deps: dict[int, set[int]] = {i: set() for i in range(n)}
    added = 0
    while added < extra_edges:
        i = rng.randrange(n - 1)
        j = rng.randrange(i + 1, n)
        if parent[j] == i or j in deps[i]:
            continue
        deps[i].add(j)
        added += 1
    return parent, deps


def arbor_plan(parent: list[int], deps: dict[int, set[int]]) -> Plan:
    nodes = [
        Node(id=f"n{i}", title=f"Step {i}", instruction=f"Do step {i}.") for i in range(len(parent))
    ]
    for i, node in enumerate(nodes):
        node.depends_on = [f"n{j}" for j in sorted(deps[i])]
    for i in range(len(parent) - 1, 0, -1):  # children in index order
        nodes[parent[i]].children.insert(0, nodes[i])
    return Plan(
        task="Orchestration benchmark.",
        root=nodes[0],
        default_model=ModelRef(kind="remote", base_url="http://instant.invalid/v1", model="x"),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=16, seed=1),
    )


def predecessors(parent: list[int], deps: dict[int, set[int]]) -> dict[int, list[int]]:
    preds: dict[int, list[int]] = {i: sorted(deps[i]) for i in range(len(parent))}
    for child, p in enumerate(parent):
        if p >= 0:
            preds[p].append(child)
    return preds


def merge(left: dict[str, str], right: dict[str, str]) -> dict[str, str]:
    """LangGraph reducer: each node adds its output to the shared map."""
    return {**left, **right}


class State(TypedDict):
    outputs: Annotated[dict[str, str], merge]


# -- the runners -----------------------------------------------------------------------------
def run_arbor(plan: Plan, *, traces: bool, cache: bool) -> tuple[float, dict[str, int] | None]:
    backend = InstantBackend()
    with tempfile.TemporaryDirectory(prefix="arbor-bench-") as tmp:
        store = TraceStore(Path(tmp) / "traces.duckdb")
        store.schema_version()  # create the file outside the timing, as a workspace would
        writer = TraceWriter(store) if traces else None
        started = time.perf_counter()
        result = execute_plan(
            plan,
            CAPS,
            listeners=[writer] if writer else [],
            backend_factory=lambda ref: backend,
            cache=store if cache else None,
        )
        if writer is not None:
            writer.close()
        elapsed = time.perf_counter() - started
        assert result.status == "completed", (result.status, result.stop_reason)
        assert not result.warnings, result.warnings
        if writer is not None:
            [row] = store.runs()
            assert row["status"] == "completed" and row["nodes_done"] == len(result.nodes)
        return elapsed, (dict(writer.stats) if writer else None)


def build_langgraph(preds: dict[int, list[int]]) -> Callable[[], float] | None:
    try:
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None

    def make(node: str, inputs: list[str]) -> Callable[[State], dict[str, Any]]:
        def step(state: State) -> dict[str, Any]:
            outputs = state["outputs"]
            prompt = f"Do {node}.\n" + "\n".join(outputs[p] for p in inputs)
            assert len(prompt) > 0
            return {"outputs": {node: ANSWER}}

        return step

    builder = StateGraph(State)
    for i, inputs in preds.items():
        builder.add_node(f"n{i}", make(f"n{i}", [f"n{p}" for p in inputs]))
    for i, inputs in preds.items():
        if inputs:
            builder.add_edge([f"n{p}" for p in inputs], f"n{i}")
        else:
            builder.add_edge(START, f"n{i}")
    builder.add_edge("n0", END)
    compile_started = time.perf_counter()
    graph = builder.compile()
    compile_s = time.perf_counter() - compile_started
    print(f"langgraph compile: {compile_s * 1000:.0f} ms (not counted)")

    def run() -> float:
        started = time.perf_counter()
        final = graph.invoke({"outputs": {}}, {"recursion_limit": 100_000})
        elapsed = time.perf_counter() - started
        assert len(final["outputs"]) == len(preds), len(final["outputs"])
        return elapsed

    return run


def profile_arbor(plan: Plan, top: int) -> None:
    """cProfile of one traced run (the coordinating thread, where orchestration happens)."""
    backend = InstantBackend()
    with tempfile.TemporaryDirectory(prefix="arbor-bench-") as tmp:
        store = TraceStore(Path(tmp) / "traces.duckdb")
        store.schema_version()
        writer = TraceWriter(store)
        profiler = cProfile.Profile()
        profiler.enable()
        execute_plan(
            plan, CAPS, listeners=[writer], backend_factory=lambda ref: backend, cache=store
        )
        writer.close()
        profiler.disable()
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print(f"\n-- profile, arbor+traces+cache, coordinating thread, top {top} by {sort} --")
        print("\n".join(lines[start - 2 : start + top + 1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--extra-edges", type=int, help="default: half the node count")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one traced run")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    n = args.nodes
    extra = args.extra_edges if args.extra_edges is not None else n // 2

    parent, deps = random_dag(n, extra)
    preds = predecessors(parent, deps)
    plan = arbor_plan(parent, deps)
    edges = sum(len(p) for p in preds.values())
    depth = plan_depth(preds)
    print(
        f"DAG: {n} nodes, {edges} edges ({n - 1} tree + {extra} extra), longest path {depth},"
        f" seed {SEED}; caps: max_parallel {CAPS.max_parallel}"
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    langgraph = build_langgraph(preds)
    if langgraph is None:
        print(
            "LangGraph is not installed; install the bench extra to compare:\n"
            "    .venv/bin/pip install -e '.[bench]'   (or: .venv/bin/pip install langgraph)"
        )
    variants: dict[str, Callable[[], float]] = {
        "arbor+traces": lambda: run_arbor(plan, traces=True, cache=False)[0],
        "arbor+traces+cache": lambda: run_arbor(plan, traces=True, cache=True)[0],
        "arbor": lambda: run_arbor(plan, traces=False, cache=False)[0],
    }
    if langgraph is not None:
        variants["langgraph"] = langgraph
    for run in variants.values():  # warm-up: imports, first DuckDB file, JIT-free caches
        run()

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate: fair to all
        for name in order:
            times[name].append(variants[name]())

    print(f"\nms per node, median of {args.reps} interleaved repetitions (all reps in brackets)")
    medians = {}
    for name in names:
        medians[name] = statistics.median(times[name]) * 1000 / n
        reps = ", ".join(f"{t * 1000 / n:.3f}" for t in times[name])
        print(f"  {name:20} {medians[name]:7.3f} ms/node   [{reps}]")
    _, stats = run_arbor(plan, traces=True, cache=False)
    print(f"  trace writer: {stats}")
    traced = medians["arbor+traces"]
    verdict = "meets" if traced <= TARGET_MS_PER_NODE else "misses"
    print(f"\ntarget <= {TARGET_MS_PER_NODE} ms/node with traces: {traced:.3f} ({verdict})")
    if langgraph is not None:
        lg = medians["langgraph"]
        for name in ("arbor+traces", "arbor+traces+cache", "arbor"):
            ratio = medians[name] / lg
            print(
                f"ratio {name}/langgraph: {ratio:.2f}"
                f" ({'no slower' if ratio <= 1 else 'slower'} than LangGraph)"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work skews all variants)")
    if args.profile:
        profile_arbor(plan, args.top)
    return 0


def plan_depth(preds: dict[int, list[int]]) -> int:
    """Nodes on the longest dependency path (LangGraph's super-steps)."""
    depth: dict[int, int] = {}
    for i in sorted(preds, reverse=True):  # predecessors always have larger indices
        depth[i] = 1 + max((depth[p] for p in preds[i]), default=0)
    return max(depth.values())


if __name__ == "__main__":
    sys.exit(main())
