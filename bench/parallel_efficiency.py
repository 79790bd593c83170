"""Parallel efficiency: makespan of width-8 DAGs over their critical-path time (target <= 1.15).

Every node is a remote model on one loopback OpenAI-compatible server
(tests/support/loopback.py) that
answers each call after a fixed latency, with room for all calls at once. Plans run through
``engine.run.executor.execute_plan`` with ``RemoteBackend(max_concurrent=16)`` and
``RunCaps(max_parallel=16)``, so only the executor and the client can make them slower than the
graph allows.

The critical-path time is the longest path's node count times the median latency of one call
*measured through RemoteBackend* in the same run (not the server's configured latency), so
client overhead counts against the executor only where calls overlap badly. Usage::

    .venv/bin/python bench/parallel_efficiency.py [--latency 0.2] [--reps 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import networkx as nx

from engine.models import Backend, RemoteBackend
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from tests.support.loopback import LoopbackServer

WIDTH = 8
TARGET = 1.15
TARGET_ISSUE_16 = 1.05
MAX_CONCURRENT = 16
GENERATION = GenerationConfig(temperature=0.0, max_tokens=32, seed=1)


def _node(node_id: str, ref: ModelRef, deps: list[str] | None = None, **rest: Any) -> Node:
    return Node(
        id=node_id,
        title=f"step {node_id}",
        instruction=f"Do step {node_id}.",
        depends_on=deps or [],
        model=ref,
        generation=GENERATION,
        **rest,
    )


def fan_out(ref: ModelRef) -> Plan:
    """8 independent leaves under a root that combines them (critical path 2)."""
    leaves = [_node(f"l{i}", ref) for i in range(WIDTH)]
    return Plan(task="fan-out", root=_node("root", ref, children=leaves))


def layers(ref: ModelRef, depth: int = 3) -> Plan:
    """``depth`` layers of 8; each node uses two neighbours of the layer before (path 4)."""
    children: list[Node] = []
    for layer in range(depth):
        for i in range(WIDTH):
            deps = []
            if layer:
                deps = [f"n{layer - 1}_{i}", f"n{layer - 1}_{(i + 1) % WIDTH}"]
            children.append(_node(f"n{layer}_{i}", ref, deps))
    return Plan(task="layers", root=_node("root", ref, children=children))


def random_diamonds(ref: ModelRef, depth: int = 4, seed: int = 7) -> Plan:
    """``depth`` layers of 8, each node depending on 2-3 random nodes of the layer before."""
    rng = random.Random(seed)
    children: list[Node] = []
    for layer in range(depth):
        for i in range(WIDTH):
            deps: list[str] = []
            if layer:
                picks = rng.sample(range(WIDTH), rng.choice([2, 3]))
                deps = [f"d{layer - 1}_{j}" for j in sorted(picks)]
            children.append(_node(f"d{layer}_{i}", ref, deps))
    return Plan(task="random diamonds", root=_node("root", ref, children=children))


def tree(ref: ModelRef) -> Plan:
    """A two-level tree: 2 parents of 4 leaves each (width 8 at the leaves, path 3)."""
    parents = [
        _node(f"p{p}", ref, children=[_node(f"p{p}_{i}", ref) for i in range(4)]) for p in range(2)
    ]
    return Plan(task="tree 2x4", root=_node("root", ref, children=parents))


def longest_path_nodes(plan: Plan) -> int:
    return nx.dag_longest_path_length(plan.execution_graph()) + 1


def width(plan: Plan) -> int:
    """The most nodes in one generation of the graph (what can run at once)."""
    return max(len(gen) for gen in nx.topological_generations(plan.execution_graph()))


def idle_breakdown(
    started: float, ended: float, arrivals: list[float], finishes: list[float]
) -> tuple[float, float, float]:
    """Where a run's time went besides serving calls: (before the first request arrived,
    total time with no request in flight in between, after the last reply ended)."""
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in finishes])
    idle, in_flight, last = 0.0, 0, events[0][0]
    for moment, step in events:
        if in_flight == 0:
            idle += moment - last
        in_flight += step
        last = moment
    return events[0][0] - started, idle, ended - events[-1][0]


class InProcessServer:
    """The loopback server on a thread of this process: its request handling shares the
    interpreter lock with the client and the executor (how the tests run it)."""

    placement = "thread"

    def __init__(self, latency_s: float):
        self.server = LoopbackServer(latency_s=latency_s).start()
        self.base_url = self.server.base_url

    def reset(self) -> None:
        stats = self.server.stats
        with stats.lock:
            stats.max_in_flight = 0
            stats.arrivals.clear()
            stats.finishes.clear()

    def snapshot(self) -> tuple[int, list[float], list[float]]:
        """(most calls in flight, arrival times, finish times) once every reply has ended."""
        self.server.wait_for(lambda st: len(st.finishes) == len(st.arrivals))
        stats = self.server.stats
        with stats.lock:
            return stats.max_in_flight, list(stats.arrivals), list(stats.finishes)

    def close(self) -> None:
        self.server.stop()


def _serve_in_child(latency_s: float, conn: Any) -> None:
    """A child process's loop: serve, and answer the parent's reset/snapshot/stop."""
    server = InProcessServer(latency_s)
    conn.send(server.base_url)
    try:
        while (command := conn.recv()) != "stop":
            conn.send(server.reset() if command == "reset" else server.snapshot())
    finally:
        server.close()


class ChildProcessServer:
    """The same server in a child process, as a real endpoint is: only the client's and the
    executor's work shares this interpreter. ``time.perf_counter`` is CLOCK_MONOTONIC on
    Linux, so the child's arrival times compare with ours."""

    placement = "process"

    def __init__(self, latency_s: float):
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve_in_child, args=(latency_s, child_end), daemon=True
        )
        self.process.start()
        self.base_url: str = self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def snapshot(self) -> tuple[int, list[float], list[float]]:
        self.conn.send("snapshot")
        result: tuple[int, list[float], list[float]] = self.conn.recv()
        return result

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=10)


def measure(server: InProcessServer | ChildProcessServer, args: argparse.Namespace) -> float:
    """Print one table of the four DAGs against ``server``; return the worst ratio, or -1.0
    when a run did not complete."""
    ref = ModelRef(kind="remote", base_url=server.base_url, model="loopback")
    backends: list[RemoteBackend] = []

    def factory(model_ref: ModelRef) -> Backend:
        backend = RemoteBackend(
            model_ref.base_url or "", model_ref.model or "", max_concurrent=MAX_CONCURRENT
        )
        backends.append(backend)
        return backend

    # One call's latency through the client, as the executor's calls will see it.
    probe = RemoteBackend(server.base_url, "loopback", max_concurrent=MAX_CONCURRENT)
    messages = [{"role": "user", "content": "Do step x. " * 20}]
    probe.complete(messages, GENERATION)  # connect once, as a run's first call would
    samples = []
    for _ in range(args.calibration_calls):
        started = time.perf_counter()
        probe.complete(messages, GENERATION)
        samples.append(time.perf_counter() - started)
    call_s = statistics.median(samples)
    print(
        f"server on a {server.placement}: latency {args.latency * 1000:.0f} ms; one call "
        f"through RemoteBackend: median {call_s * 1000:.1f} ms (min {min(samples) * 1000:.1f}, "
        f"max {max(samples) * 1000:.1f}, n={len(samples)})"
    )
    caps = RunCaps(total_tokens=200_000, max_tokens_per_node=256, max_parallel=MAX_CONCURRENT)
    header = f"{'DAG':<16}{'nodes':>6}{'width':>6}{'path':>5}{'critical':>10}"
    header += f"{'makespan':>10}{'ratio':>7}{'peak':>6}{'start':>7}{'gaps':>7}{'tail':>7}"
    header += "  runs (s)"
    print(header)
    total_makespan = total_critical = 0.0
    worst = 0.0
    for name, build in [
        ("fan-out 8", fan_out),
        ("tree 2x4", tree),
        ("3 layers of 8", layers),
        ("random diamonds", random_diamonds),
    ]:
        plan = build(ref)
        path = longest_path_nodes(plan)
        critical = path * call_s
        runs: list[float] = []
        breakdowns: list[tuple[float, float, float]] = []
        peak = 0
        for _ in range(args.reps):
            server.reset()
            started = time.perf_counter()
            result = execute_plan(plan, caps, backend_factory=factory)
            ended = time.perf_counter()
            runs.append(ended - started)
            if result.status != "completed":
                print(f"{name}: run {result.status}: {result.stop_reason}")
                return -1.0
            in_flight, arrivals, finishes = server.snapshot()
            peak = max(peak, in_flight)
            breakdowns.append(idle_breakdown(started, ended, arrivals, finishes))
        makespan = statistics.median(runs)
        start_s, gaps_s, tail_s = (
            statistics.median(part) for part in zip(*breakdowns, strict=True)
        )
        ratio = makespan / critical
        worst = max(worst, ratio)
        total_makespan += makespan
        total_critical += critical
        print(
            f"{name:<16}{len(plan.nodes()):>6}{width(plan):>6}{path:>5}"
            f"{critical:>9.3f}s{makespan:>9.3f}s{ratio:>7.3f}{peak:>6}"
            f"{start_s:>7.3f}{gaps_s:>7.3f}{tail_s:>7.3f}  "
            + " ".join(f"{run:.3f}" for run in runs)
        )
    for backend in [probe, *backends]:
        backend.close()
    overall = total_makespan / total_critical
    verdict = "meets" if overall <= TARGET and worst <= TARGET else "misses"
    print(
        f"overall: makespan / critical path = {overall:.3f} (worst DAG {worst:.3f}); "
        f"{verdict} the target <= {TARGET} (issue 16: <= {TARGET_ISSUE_16})"
    )
    print()
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per call")
    parser.add_argument("--reps", type=int, default=3, help="runs of each DAG (median kept)")
    parser.add_argument("--calibration-calls", type=int, default=15)
    parser.add_argument(
        "--server",
        choices=["both", "process", "thread"],
        default="both",
        help="where the loopback server runs (both: side by side, the child process first)",
    )
    args = parser.parse_args()
    print(f"caps: max_parallel={MAX_CONCURRENT}, backend max_concurrent={MAX_CONCURRENT}")
    print()
    placements = {"process": [ChildProcessServer], "thread": [InProcessServer]}.get(
        args.server, [ChildProcessServer, InProcessServer]
    )
    for placement in placements:
        server = placement(args.latency)
        try:
            if measure(server, args) < 0:
                return 1
        finally:
            server.close()
    print(
        "start: run start to the first request at the server; gaps: time inside the run with "
        "no call in flight (between layers); tail: last reply to execute_plan's return."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
