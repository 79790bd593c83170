"""A fork of a 10-node plan from a leaf vs running the plan again, on the bundled model.

Side by side, in one process over a fresh data directory: the source run (every node calls the
model), a plain re-run from the same leaf with ``--rerun-from`` semantics (the leaf and its
downstream run again, the rest come from the call cache) and the fork from that leaf with an
edited instruction (the rest taken from the source run's records without a lookup). Prints
calls made and seconds per row and the fork's time as a fraction of the source run's. Usage::

    flock /tmp/arbor-model.lock .venv/bin/python bench/fork_from_leaf.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time

from app.services.run_control import calls_by_node, fork
from engine.plan import GenerationConfig, Node, Plan
from storage.workspace import Workspace


def ten_node_plan() -> Plan:
    """root <- m0..m2, each <- two leaves: 10 nodes, 3 levels."""
    mids = [
        Node(
            id=f"m{i}",
            title=f"Part {i}",
            instruction=f"Combine the two notes of part {i}.",
            children=[
                Node(id=f"l{i}{j}", title=f"Note {i}{j}", instruction=f"Name fruit number {j}.")
                for j in range(2)
            ],
        )
        for i in range(3)
    ]
    return Plan(
        task="List some fruit.",
        root=Node(id="root", title="Answer", instruction="List the fruit.", children=mids),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=16, seed=3),
    )


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="arbor-fork-bench-")
    ws = Workspace(data)
    plan = ten_node_plan()
    print(f"{'':26} {'calls':>5} {'nodes reused':>12} {'seconds':>8} {'vs source':>9}")
    base: list[float] = []

    def row(label: str, run_id: str, seconds: float) -> None:
        base.append(base[0] if base else seconds)
        calls = sum(calls_by_node(ws, run_id).values())
        reused = sum(1 for n in ws.traces.node_executions(run_id) if n["reused_from"])
        ratio = seconds / base[0]
        print(f"{label:26} {calls:>5} {reused:>12} {seconds:>8.2f} {ratio:>9.2f}", flush=True)

    start = time.perf_counter()
    source = ws.run_plan(plan, use_cache=False)
    row("source run", source.run_id, time.perf_counter() - start)
    start = time.perf_counter()
    report = fork(ws, source.run_id, "l01", set_instruction={"l01": "Name a red fruit."})
    row("fork from l01 (edited)", report.result.run_id, time.perf_counter() - start)
    start = time.perf_counter()
    rerun = ws.run_plan(plan, rerun=["l01"])
    row("re-run from l01 (cache)", rerun.run_id, time.perf_counter() - start)
    print(report.summary(), flush=True)


if __name__ == "__main__":
    main()
