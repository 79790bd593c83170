"""Fill a trace store with many realistic runs quickly, for the Inspector benchmarks.

Rows go straight into the three trace tables as Arrow tables (the append path itself is
measured by bench/trace_append.py). Each run has ``nodes`` nodes in a tree; every fifth node
samples (self-consistency ×3, votes recorded), the rest make one call; one node in 40 fails.
Models, latencies and token counts vary with a seeded generator, so group-bys have work to do.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from engine.plan import Node, Plan
from storage.traces import TraceStore

MODELS = ("local:gemma-270m", "remote:gpt-small", "remote:gpt-large", "local:qwen-1.5b")


def _plan_json(nodes: int, task: str) -> str:
    children = [
        Node(id=f"n{i}", title=f"step {i}", instruction=f"Do step {i}.") for i in range(1, nodes)
    ]
    plan = Plan(
        task=task, root=Node(id="root", title="answer", instruction="Combine.", children=children)
    )
    return plan.to_json(indent=None)


def fill_store(
    path: Path,
    *,
    runs: int,
    nodes: int = 50,
    sessions: int = 1,
    seed: int = 7,
    start: datetime | None = None,
) -> dict[str, int]:
    """Write ``runs`` runs of ``nodes`` nodes into a fresh store at ``path``; return counts."""
    rng = random.Random(seed)
    store = TraceStore(path)
    origin = start or datetime(2026, 11, 1, tzinfo=UTC)
    plan_cache = {nodes: _plan_json(nodes, "synthetic task")}
    run_rows: list[dict] = []
    node_rows: list[dict] = []
    call_rows: list[dict] = []
    counts = {"runs": 0, "nodes": 0, "calls": 0}

    def flush(con) -> None:
        for table, rows in (
            ("runs", run_rows),
            ("node_executions", node_rows),
            ("model_calls", call_rows),
        ):
            if rows:
                con.register("arbor_bench_rows", pa.Table.from_pylist(rows))
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM arbor_bench_rows")
                con.unregister("arbor_bench_rows")
                rows.clear()

    with store.connect() as con:
        for r in range(runs):
            run_id = f"run{r:06d}"
            started = origin + timedelta(minutes=7 * r)
            clock = started
            total_in = total_out = 0
            failed_run = False
            for n in range(nodes):
                node_id = "root" if n == 0 else f"n{n}"
                model = MODELS[(n + r) % len(MODELS)]
                sampled = n % 5 == 4
                fails = rng.random() < 1 / 40
                node_start = clock
                calls = 3 if sampled else 1
                node_in = node_out = 0
                for k in range(calls):
                    latency = rng.uniform(0.2, 3.0)
                    tin, tout = rng.randint(50, 400), rng.randint(5, 200)
                    node_in, node_out = node_in + tin, node_out + tout
                    vote = f"answer {rng.randint(1, 2)}" if sampled else None
                    call_rows.append(
                        {
                            "call_id": f"{run_id}-{node_id}-{k}",
                            "run_id": run_id,
                            "node_id": node_id,
                            "model": model,
                            "prompt": json.dumps([{"role": "user", "content": f"Do step {n}."}]),
                            "output": f"output {n}.{k}",
                            "input_tokens": tin,
                            "output_tokens": tout,
                            "latency_s": latency,
                            "status": "error" if fails and k == calls - 1 else "ok",
                            "error": "endpoint said no" if fails and k == calls - 1 else None,
                            "started_at": clock,
                            "finished_at": clock + timedelta(seconds=latency),
                            "sample_index": k,
                            "seed": 1000 + k,
                            "cache_key": f"key-{run_id}-{node_id}-{k}",
                            "cost_usd": (tin + tout) * 1e-6,
                            "finish_reason": "stop",
                            "role": "sample" if sampled else "answer",
                            "vote": vote,
                            "selected": (k == 0) if sampled else None,
                        }
                    )
                    clock += timedelta(seconds=latency)
                counts["calls"] += calls
                total_in, total_out = total_in + node_in, total_out + node_out
                failed_run = failed_run or fails
                node_rows.append(
                    {
                        "run_id": run_id,
                        "node_id": node_id,
                        "title": "answer" if n == 0 else f"step {n}",
                        "model": model,
                        "status": "failed" if fails else "done",
                        "output": None if fails else f"output {n}",
                        "error": "endpoint said no" if fails else None,
                        "input_tokens": node_in,
                        "output_tokens": node_out,
                        "started_at": node_start,
                        "finished_at": clock,
                        "cost_usd": (node_in + node_out) * 1e-6,
                        "strategy": "self-consistency ×3" if sampled else "single call",
                        "samples": calls,
                    }
                )
            counts["nodes"] += nodes
            run_rows.append(
                {
                    "run_id": run_id,
                    "session_id": f"session{r % sessions}",
                    "task": "synthetic task",
                    "status": "failed" if failed_run else "completed",
                    "answer": "output 0",
                    "input_tokens": total_in,
                    "output_tokens": total_out,
                    "started_at": started,
                    "finished_at": clock,
                    "plan_json": plan_cache[nodes],
                    "caps_json": "{}",
                    "pid": 1,
                    "cost_usd": (total_in + total_out) * 1e-6,
                }
            )
            counts["runs"] += 1
            if len(call_rows) > 50_000:
                flush(con)
        flush(con)
    return counts
