"""Trace append rate: Arbor's TraceWriter vs DuckDB's Appender vs executemany, side by side.

Each variant appends span rows to a fresh trace store file (``storage.traces.TraceStore``,
migrated, so the real tables with their keys and indexes) in a temp dir, and is timed from its
first row to the moment the data is on disk (the writer's ``close``, the connection's ``close``,
which checkpoints). Building the rows or events in Python is inside the timing for every
variant (a run builds its events too) and reported separately. Rows are generated in chunks,
so memory stays flat whatever ``--rows`` is.

- ``writer``: the real ``TraceWriter`` fed the events of back-to-back 50-node runs, as
  ``Workspace.run_plan`` emits them: RunStarted; per node NodeStarted, its ModelCallFinished
  events and NodeFinished; RunFinished. Every 10th node is a self-consistency node with 3
  samples (so the store also derives sample spans), the others make one call. A row is a run,
  node or call row written to the store; the ``spans`` view adds a span per sample. Each run
  waits for its commit, as a run from the UI or ``run.py run`` does.
- ``writer-shared``: the same runs through a writer whose runs do not wait for their commit
  (``sync_finish=False``), so back-to-back runs share transactions: an evaluation's runs
  (``LocalPool``).
- ``writer-long``: runs of 5000 nodes, each waiting for its commit.

  For the writers, per-run costs are broken down from a timing wrapper around the sink's
  connection: the file's open and close (``FileKeeper`` keeps it open between runs, so these
  are spread over all of them), the check that a batch's runs are new, appends, commits.
- ``appender``: DuckDB's Appender straight into ``model_calls`` in chunks (the floor).
- ``executemany``: ``INSERT ... VALUES`` through ``executemany`` into ``model_calls``, one
  transaction per 5,000 rows (autocommit, one commit per row, is slower still).

``--sample-rows`` limits the two slow variants (writer and executemany) to a sample; their
time for ``--rows`` is extrapolated and marked so.

Usage::

    .venv/bin/python bench/trace_append.py [--rows 1000000] [--sample-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.run.events import (
    Event,
    ModelCallFinished,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from storage.traces import CALL_COLUMNS, TraceStore, TraceWriter
from storage.traces import writer as writer_module
from storage.traces.sink import Sink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "gemma-3-270m-it-Q4_K_M.gguf"
SAMPLED_EVERY = 10  # every 10th node samples
SAMPLES = 3
CHUNK_ROWS = 50_000  # appender rows per flush
EXECUTEMANY_CHUNK = 5_000
INSTRUCTION = (
    "You are a careful assistant working on one step of a larger task. Answer the step directly"
    " and concisely. Do not repeat the question."
)


# -- the rows ----------------------------------------------------------------------------------
def prompt_for(run: int, node: int) -> str:
    """A rendered prompt of a realistic size (about 250 bytes), unique per node."""
    content = f"{INSTRUCTION}\n\nOverall task: benchmark run {run}.\n\nYour step: step {node}."
    return json.dumps([{"role": "user", "content": content}])


def output_for(run: int, node: int, sample: int) -> str:
    return f"Answer {sample} to step {node} of run {run}: forty-two, give or take."


def call_row(index: int) -> tuple[Any, ...]:
    """Row ``index`` of ``model_calls`` for the appender and executemany (CALL_COLUMNS order)."""
    run, node = divmod(index, 50)
    at = T0 + timedelta(milliseconds=index)
    return (
        f"call-{index:09d}",  # call_id
        f"run-{run:07d}",  # run_id
        f"n{node}",  # node_id
        MODEL,
        prompt_for(run, node),
        output_for(run, node, 0),
        61,  # input_tokens
        12,  # output_tokens
        0.31,  # latency_s
        "ok",
        None,  # error
        at,
        at + timedelta(milliseconds=310),
        0,  # sample_index
        7,  # seed
        f"key-{index:09d}",  # cache_key
        0.0,  # cost_usd
        "stop",
        "answer",  # role
        None,  # score
        None,  # vote
        None,  # selected
        None,  # reused_from
    )


@dataclass(frozen=True)
class RunShape:
    """Rows one generated run writes, and the spans the view derives from them."""

    nodes: int

    @property
    def sampled_nodes(self) -> int:
        return len(range(0, self.nodes, SAMPLED_EVERY))

    @property
    def calls(self) -> int:
        return self.nodes + self.sampled_nodes * (SAMPLES - 1)

    @property
    def rows(self) -> int:
        """Rows written: the run, its nodes and its calls."""
        return 1 + self.nodes + self.calls

    @property
    def spans(self) -> int:
        """Rows of the spans view: the rows written plus one sample span per sample."""
        return self.rows + self.sampled_nodes * SAMPLES


def run_events(run: int, shape: RunShape) -> list[Event]:
    """The events of one completed run, in the order the executor emits them."""
    run_id = f"run-{run:07d}"
    start = T0 + timedelta(seconds=run)
    events: list[Event] = [
        RunStarted(run_id, "bench", f"benchmark run {run}", '{"task": "bench"}', "{}", start)
    ]
    tokens_in = tokens_out = 0
    for node in range(shape.nodes):
        node_id = f"n{node}"
        began = start + timedelta(milliseconds=10 * node)
        events.append(NodeStarted(run_id, node_id, f"Step {node}", MODEL, began))
        sampled = node % SAMPLED_EVERY == 0
        samples = SAMPLES if sampled else 1
        for sample in range(samples):
            events.append(
                ModelCallFinished(
                    run_id=run_id,
                    node_id=node_id,
                    call_id=f"{run_id}/{node_id}/{sample}",
                    model=MODEL,
                    prompt=prompt_for(run, node),
                    output=output_for(run, node, sample),
                    input_tokens=61,
                    output_tokens=12,
                    latency_s=0.31,
                    status="ok",
                    error=None,
                    started_at=began,
                    finished_at=began + timedelta(milliseconds=310),
                    sample_index=sample,
                    seed=7 + sample,
                    cache_key=f"key-{run_id}/{node_id}/{sample}",
                    finish_reason="stop",
                    role="sample" if sampled else "answer",
                    vote="42" if sampled else None,
                    selected=sample == 0,
                )
            )
        node_in, node_out = 61 * samples, 12 * samples
        tokens_in, tokens_out = tokens_in + node_in, tokens_out + node_out
        events.append(
            NodeFinished(
                run_id=run_id,
                node_id=node_id,
                title=f"Step {node}",
                status="done",
                output=output_for(run, node, 0),
                error=None,
                input_tokens=node_in,
                output_tokens=node_out,
                started_at=began,
                finished_at=began + timedelta(milliseconds=320),
                model=MODEL,
                strategy=f"self-consistency vote ×{SAMPLES}" if sampled else None,
                samples=samples if sampled else None,
                agreement=1.0 if sampled else None,
            )
        )
    finished = start + timedelta(milliseconds=10 * shape.nodes + 400)
    events.append(RunFinished(run_id, "completed", None, "done", tokens_in, tokens_out, finished))
    return events


# -- timing what the writer's connections do -------------------------------------------------
@dataclass
class Timings:
    """Seconds spent per kind of store operation, summed over the whole variant."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, what: str, started: float) -> None:
        self.seconds[what] += time.perf_counter() - started


class TimedAppender:
    def __init__(self, appender: duckdb.Appender, timings: Timings):
        self._appender, self._timings = appender, timings

    def append_rows(self, rows: Any) -> None:
        started = time.perf_counter()
        self._appender.append_rows(rows)
        self._timings.add("append rows", started)

    def flush(self) -> None:
        started = time.perf_counter()
        self._appender.flush()
        self._timings.add("append rows", started)

    def clear(self) -> None:
        self._appender.clear()


class TimedConnection:
    """Forwards to a DuckDB connection and times what the writer's sink does with it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timings: Timings):
        self._con, self._timings = con, timings

    def execute(self, sql: str, *args: Any) -> Any:
        head = " ".join(sql.split()[:3]).upper()
        if head.startswith("SELECT RUN_ID FROM"):
            what = "check the batch's runs are new"
        elif head.startswith("UPDATE RUNS"):
            what = "update run"
        elif head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            what = "begin/commit"
        else:
            what = "other SQL"
        started = time.perf_counter()
        try:
            return self._con.execute(sql, *args)
        finally:
            self._timings.add(what, started)

    def appender(self, *args: Any, **kwargs: Any) -> TimedAppender:
        return TimedAppender(self._con.appender(*args, **kwargs), self._timings)

    def close(self) -> None:
        started = time.perf_counter()
        self._con.close()
        self._timings.add("close file", started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class TimedStore(TraceStore):
    """A TraceStore whose file opens are timed (the writer itself is untouched)."""

    def __init__(self, path: Path, timings: Timings):
        super().__init__(path)
        self.timings = timings
        self.opened = 0

    def open_connection(self) -> Any:
        started = time.perf_counter()
        con = super().open_connection()
        self.timings.add("open file", started)
        self.opened += 1
        return con


@contextmanager
def timed_sink(timings: Timings) -> Iterator[None]:
    """Time what the writer's ``Sink`` does on its connection (statements, appends, commits)."""

    class TimedSink(Sink):
        def __init__(self, con: duckdb.DuckDBPyConnection):
            super().__init__(TimedConnection(con, timings))  # type: ignore[arg-type]

    original = writer_module.Sink
    writer_module.Sink = TimedSink  # type: ignore[misc]
    try:
        yield
    finally:
        writer_module.Sink = original  # type: ignore[misc]


# -- the variants ------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    building_s: float
    path: Path
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def fresh_store(folder: Path, name: str) -> Path:
    path = folder / f"{name}.duckdb"
    created = TraceStore(path)
    created.schema_version()  # create and migrate outside the timing
    created.release()  # the variant opens the file itself, inside its timing
    return path


def chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


#: What a run costs whatever its size: the file's open and close (spread over the runs that
#: share them), checking the batch's runs are new, the commit, updating a run's finish.
FIXED_COSTS = ("open file", "close file", "check the batch's runs are new", "begin/commit",
               "update run")  # fmt: skip


def bench_writer(
    folder: Path, rows: int, nodes: int, name: str = "writer", *, sync_finish: bool = True
) -> Result:
    """Back-to-back runs of ``nodes`` nodes through one ``TraceWriter``: with ``sync_finish``
    each run waits for its commit (a run from the UI or ``run.py run``); without, the runs
    share transactions (an evaluation's runs, ``LocalPool``)."""
    shape = RunShape(nodes)
    runs = max(1, -(-rows // shape.rows))
    path = fresh_store(folder, name)
    timings = Timings()
    store = TimedStore(path, timings)
    building = 0.0
    with timed_sink(timings):
        writer = TraceWriter(store, sync_finish=sync_finish)
        started = time.perf_counter()
        for run in range(runs):  # one run's events at a time: memory stays flat
            built = time.perf_counter()
            events = run_events(run, shape)
            building += time.perf_counter() - built
            for event in events:
                writer(event)
        writer.close()
        closing = time.perf_counter()
        store.release()  # the file is closed (checkpointed) inside the timing
        timings.add("close file", closing)
        elapsed = time.perf_counter() - started
    per_run = {what: s * 1000 / runs for what, s in sorted(timings.seconds.items())}
    per_run["Python: build events, queue, collapse"] = elapsed * 1000 / runs - sum(per_run.values())
    fixed = sum(per_run.get(what, 0.0) for what in FIXED_COSTS)
    return Result(
        name,
        runs * shape.rows,
        elapsed,
        building,
        path,
        detail={
            "runs": runs,
            "shape": shape,
            "per_run_ms": per_run,
            "fixed_ms": fixed,
            "opened": store.opened,
            "batches": writer.stats["batches"],
        },
    )


def bench_appender(folder: Path, rows: int) -> Result:
    path = fresh_store(folder, "appender")
    building = 0.0
    started = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        appender = con.appender("model_calls", columns=list(CALL_COLUMNS))
        for indexes in chunks(rows, CHUNK_ROWS):
            built = time.perf_counter()
            batch = [call_row(i) for i in indexes]
            building += time.perf_counter() - built
            appender.append_rows(batch)
            appender.flush()
    finally:
        con.close()
    return Result("appender", rows, time.perf_counter() - started, building, path)


def bench_executemany(folder: Path, rows: int) -> Result:
    path = fresh_store(folder, "executemany")
    sql = (
        f"INSERT INTO model_calls ({', '.join(CALL_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
    )
    building = 0.0
    started = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        for indexes in chunks(rows, EXECUTEMANY_CHUNK):
            built = time.perf_counter()
            batch = [call_row(i) for i in indexes]
            building += time.perf_counter() - built
            con.execute("BEGIN")  # one transaction per chunk, as the writer's sink commits
            con.executemany(sql, batch)
            con.execute("COMMIT")
    finally:
        con.close()
    return Result("executemany", rows, time.perf_counter() - started, building, path)


def count_spans(path: Path) -> tuple[int, int]:
    """Rows of the ``spans`` view, and rows in the tables it is built from."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        spans = con.execute("SELECT count(*) FROM spans").fetchone()[0]
        tables = con.execute(
            "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM node_executions)"
            " + (SELECT count(*) FROM model_calls)"
        ).fetchone()[0]
    finally:
        con.close()
    return spans, tables


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="span rows to append")
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=20_000,
        help="rows for the slow variants (writer, executemany), extrapolated to --rows",
    )
    parser.add_argument("--nodes-per-run", type=int, default=50)
    parser.add_argument(
        "--long-run-nodes",
        type=int,
        default=5000,
        help="nodes per run of the 'writer-long' variant, which appends all --rows (0: skip)",
    )
    args = parser.parse_args()
    rows, sample = args.rows, min(args.sample_rows, args.rows)

    print(
        f"trace append: {rows:,} rows, DuckDB {duckdb.__version__},"
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    )
    with tempfile.TemporaryDirectory(prefix="arbor-bench-append-") as tmp:
        folder = Path(tmp)
        results = [
            bench_writer(folder, sample, args.nodes_per_run),
            bench_writer(folder, rows, args.nodes_per_run, "writer-shared", sync_finish=False),
            *(
                [bench_writer(folder, rows, args.long_run_nodes, name="writer-long")]
                if args.long_run_nodes
                else []
            ),
            bench_appender(folder, rows),
            bench_executemany(folder, sample),
        ]
        by_name = {r.name: r for r in results}

        print("\n'building': seconds of the total spent making the rows or events in Python")
        print(
            f"{'variant':14} {'rows':>11} {'seconds':>9} {'rows/s':>9} {'spans/s':>9}"
            f"  {'building':>8}  note"
        )
        for r in results:
            sampled = r.rows < rows
            note = f"sample; {minutes(rows / r.rate)} for {rows:,} rows" if sampled else ""
            shape = r.detail.get("shape")
            spans_rate = r.rate * shape.spans / shape.rows if shape else r.rate
            print(
                f"{r.name:14} {r.rows:>11,} {r.seconds:>9.1f} {r.rate:>9,.0f} {spans_rate:>9,.0f}"
                f"  {r.building_s:>7.1f}s  {note}"
            )
        appender = by_name["appender"].rate
        print()
        for name in ("writer", "writer-shared", "writer-long"):
            if name in by_name:
                print(f"ratio {name}/appender: {by_name[name].rate / appender:.4f}")
        print(
            f"ratio writer/executemany: {by_name['writer'].rate / by_name['executemany'].rate:.2f}"
        )

        for name, how in (
            ("writer", "each run waits for its commit (a run from the UI or run.py run)"),
            ("writer-shared", "runs share transactions (an evaluation's runs)"),
        ):
            r = by_name[name]
            detail = r.detail
            shape = detail["shape"]
            print(
                f"\n{name}: {how}; {detail['runs']:,} runs of {shape.nodes} nodes ({shape.rows}"
                f" rows each: 1 run, {shape.nodes} nodes, {shape.calls} calls), file opened"
                f" {detail['opened']:,} times, {detail['batches']:,} transactions;"
                f" {r.seconds * 1000 / detail['runs']:.2f} ms per run, of which fixed"
                f" {detail['fixed_ms']:.2f} ms ({' + '.join(FIXED_COSTS)}):"
            )
            for what, ms in sorted(detail["per_run_ms"].items(), key=lambda item: -item[1]):
                print(f"  {what:40} {ms:7.2f} ms/run")

        print("\nfiles and the spans view:")
        for r in results:
            spans, table_rows = count_spans(r.path)
            expected = r.detail["runs"] * r.detail["shape"].spans if "shape" in r.detail else r.rows
            check = "ok" if spans == expected and table_rows == r.rows else "MISMATCH"
            size = r.path.stat().st_size
            wal = r.path.with_name(r.path.name + ".wal")
            leftover = f", WAL {wal.stat().st_size:,} B left" if wal.exists() else ""
            print(
                f"  {r.name:12} {size / 1e6:8.1f} MB ({size / r.rows:5.0f} B/row{leftover}"
                f"{', sample' if r.rows < rows else ''});"
                f" spans view {spans:,} rows (expected {expected:,}: {check})"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work skews all variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
