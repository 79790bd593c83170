"""Crash-safe traces: schema v2, the buffered TraceWriter, the store as call cache, interrupted
runs and resuming them. Every test writes to a real DuckDB file; the cross-process ones use real
subprocesses (a reader, a lock holder, a writer killed with SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from engine.errors import TraceStoreError
from engine.plan import GenerationConfig, Node, Plan
from engine.prompts import base_prompt_stops, merge_stops, node_messages, prompt_style
from engine.run.budget import RunCaps
from engine.run.call_cache import call_cache_key
from engine.run.events import (
    ANSWERED_STATUSES,
    ModelCallFinished,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from storage import traces
from storage.traces import (
    MIGRATIONS,
    TraceStore,
    TraceWriter,
    WriterState,
    collapse,
    process_alive,
)
from storage.traces import store as trace_store
from storage.traces import writer as writer_module
from storage.traces.file_keeper import keeper_for

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run_started(run_id: str = "r1", **fields) -> RunStarted:
    values = {
        "session_id": "s1",
        "task": "Name a fruit.",
        "plan_json": '{"task": "Name a fruit."}',
        "caps_json": "{}",
        "started_at": at(0),
    }
    return RunStarted(run_id=run_id, **{**values, **fields})


def node_started(node_id: str, run_id: str = "r1", t: float = 1, model: str = "m") -> NodeStarted:
    return NodeStarted(run_id, node_id, node_id.upper(), model, at(t))


def call(node_id: str, run_id: str = "r1", t: float = 2, **fields) -> ModelCallFinished:
    values = {
        "call_id": f"{run_id}-{node_id}-{t}",
        "model": "m",
        "prompt": '[{"role": "user", "content": "hi"}]',
        "output": f"output of {node_id}",
        "input_tokens": 5,
        "output_tokens": 3,
        "latency_s": 0.5,
        "status": "ok",
        "error": None,
        "started_at": at(t - 0.5),
        "finished_at": at(t),
    }
    return ModelCallFinished(run_id=run_id, node_id=node_id, **{**values, **fields})


def node_finished(
    node_id: str, status: str = "done", run_id: str = "r1", t: float = 3, **fields
) -> NodeFinished:
    values = {
        "title": node_id.upper(),
        "output": f"output of {node_id}" if status == "done" else "",
        "error": None if status == "done" else f"{node_id} {status}",
        "input_tokens": 5 if status in ("done", "failed") else 0,
        "output_tokens": 3 if status in ("done", "failed") else 0,
        "started_at": at(t - 2),
        "finished_at": at(t),
    }
    return NodeFinished(run_id=run_id, node_id=node_id, status=status, **{**values, **fields})


def run_finished(run_id: str = "r1", status: str = "completed", **fields) -> RunFinished:
    values = {
        "stop_reason": None,
        "answer": "output of root",
        "input_tokens": 10,
        "output_tokens": 6,
        "finished_at": at(9),
    }
    return RunFinished(run_id=run_id, status=status, **{**values, **fields})


def every_kind_of_event() -> list:
    """A run with one node of each fate, a progress event and a v2 field on every kind."""
    return [
        run_started(resumed_from="r0"),
        node_started("a", model="model-a"),
        NodeProgress("r1", "a", "partial text"),
        call(
            "a",
            sample_index=1,
            seed=7,
            cache_key="key-a",
            cost_usd=0.25,
            finish_reason="length",
        ),
        node_finished("a", cost_usd=0.25),  # no model on the finish: the start's model stays
        node_started("b"),
        call("b", status="error", error="boom", output=""),
        node_finished("b", "failed", error="boom"),
        node_finished("c", "blocked", started_at=None),
        node_finished("d", started_at=None, model="model-d", reused_from="r0", input_tokens=0),
        node_started("e"),
        call("e", status="cancelled", error="cancelled by the user", output="part"),
        node_finished("e", "cancelled"),
        run_finished(status="failed", stop_reason="b: boom", answer=None, cost_usd=0.25),
    ]


def check_every_kind_was_stored(store: TraceStore) -> None:
    run = store.run("r1")
    assert run["status"] == "failed" and run["stop_reason"] == "b: boom"
    assert run["resumed_from"] == "r0" and run["pid"] == os.getpid()
    assert run["cost_usd"] == 0.25 and run["finished_at"] == at(9)
    assert run["session_id"] == "s1" and run["plan_json"] == '{"task": "Name a fruit."}'
    nodes = {n["node_id"]: n for n in store.node_executions("r1")}
    assert set(nodes) == {"a", "b", "c", "d", "e"}
    a = nodes["a"]
    assert (a["status"], a["model"], a["output"], a["cost_usd"]) == (
        "done",
        "model-a",
        "output of a",
        0.25,
    )
    assert a["started_at"] == at(1) and a["finished_at"] == at(3)  # the start event's time
    assert (a["input_tokens"], a["output_tokens"], a["title"]) == (5, 3, "A")
    assert nodes["b"]["status"] == "failed" and nodes["b"]["error"] == "boom"
    assert nodes["c"]["status"] == "blocked" and nodes["c"]["started_at"] is None
    d = nodes["d"]
    assert (d["status"], d["reused_from"], d["model"]) == ("done", "r0", "model-d")
    assert nodes["e"]["status"] == "cancelled"
    calls = {c["node_id"]: c for c in store.model_calls("r1")}
    assert set(calls) == {"a", "b", "e"}
    ca = calls["a"]
    assert (ca["sample_index"], ca["seed"], ca["cache_key"]) == (1, 7, "key-a")
    assert (ca["cost_usd"], ca["finish_reason"], ca["latency_s"]) == (0.25, "length", 0.5)
    assert calls["b"]["status"] == "error" and calls["b"]["error"] == "boom"
    assert calls["e"]["status"] == "cancelled" and calls["e"]["output"] == "part"
    assert (calls["b"]["sample_index"], calls["b"]["cost_usd"]) == (0, 0.0)  # defaults


# -- schema ----------------------------------------------------------------------------------


def test_a_v1_store_migrates_to_v2_and_keeps_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "traces.duckdb"
    with monkeypatch.context() as patch:
        patch.setattr(trace_store, "MIGRATIONS", MIGRATIONS[:1])
        assert TraceStore(path).schema_version() == 1
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "INSERT INTO runs (run_id, session_id, task, status, input_tokens, output_tokens,"
            " started_at, finished_at, answer, plan_json, caps_json) VALUES"
            " ('old', 's', 'task', 'completed', 4, 2, ?, ?, 'yes', '{}', '{}'),"
            " ('stuck', NULL, 'task', 'running', 0, 0, ?, NULL, NULL, '{}', '{}')",
            [at(0), at(5), at(6)],
        )
        con.execute(
            "INSERT INTO node_executions VALUES ('old', 'n', 'N', 'm', 'done', 'yes', NULL,"
            " 4, 2, ?, ?)",
            [at(1), at(4)],
        )
        con.execute(
            "INSERT INTO model_calls VALUES ('c1', 'old', 'n', 'm', '[]', 'yes', 4, 2, 0.1,"
            " 'ok', NULL, ?, ?)",
            [at(1), at(4)],
        )
    finally:
        con.close()

    store = TraceStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    old = store.run("old")
    assert old["origin"] is None  # v4: recorded here, not imported
    assert (old["status"], old["answer"], old["input_tokens"]) == ("completed", "yes", 4)
    assert (old["resumed_from"], old["pid"], old["cost_usd"]) == (None, None, 0.0)
    [node] = store.node_executions("old")
    assert (node["output"], node["reused_from"], node["cost_usd"]) == ("yes", None, 0.0)
    assert (node["strategy"], node["agreement"]) == (None, None)  # v3 columns, empty
    [row] = store.model_calls("old")
    assert (row["role"], row["score"], row["selected"]) == ("answer", None, None)
    assert (row["call_id"], row["output"], row["cache_key"], row["sample_index"]) == (
        "c1",
        "yes",
        None,
        0,
    )
    assert store.lookup(["c1", "yes"]) == {}  # v1 calls have no key: never reused
    # v4's spans view covers v1 rows: run -> node -> call, by derived parent ids.
    with store.connect() as con:
        spans = con.execute(
            "SELECT span_kind, span_id, parent_span_id, gen_ai_usage_input_tokens FROM spans"
            " WHERE run_id = 'old' ORDER BY start_time, span_kind DESC"
        ).fetchall()
    kinds = {kind: (span, parent, tokens) for kind, span, parent, tokens in spans}
    assert set(kinds) == {"run", "node", "call"}
    assert kinds["run"][1] is None and kinds["node"][1] == kinds["run"][0]
    assert kinds["call"][1] == kinds["node"][0] and kinds["call"][2] == 4
    # A v1 run left running has no pid: nobody can still be running it.
    assert {r["run_id"]: r["status"] for r in store.runs()} == {
        "old": "completed",
        "stuck": "interrupted",
    }
    # And the migrated store takes v2 writes.
    store.record(run_started("new"))
    assert store.run("new")["pid"] == os.getpid()


# -- writing ---------------------------------------------------------------------------------


def test_collapse_writes_a_node_started_and_finished_in_one_batch_as_one_new_row():
    state = WriterState()
    rows = collapse([run_started(), node_started("a"), call("a"), node_finished("a")], state)
    assert list(rows.nodes_new) == [("r1", "a")] and rows.node_rows == 1
    row = dict(zip(traces.NODE_COLUMNS, rows.nodes_new[("r1", "a")], strict=True))
    assert (row["status"], row["started_at"], row["model"]) == ("done", at(1), "m")
    assert len(rows.calls) == 1 and not state.inflight and state.written == {"r1": {"a"}}

    # A start in one batch and its finish in the next: an insert, then a keyed update of a
    # complete row (the start's time and model, the finish's outcome).
    first = collapse([node_started("b", model="mb")], state)
    assert first.nodes_new[("r1", "b")][4] == "running" and ("r1", "b") in state.inflight
    second = collapse([node_finished("b")], state)
    assert list(second.nodes_update) == [("r1", "b")] and not second.nodes_new
    updated = dict(zip(traces.NODE_COLUMNS, second.nodes_update[("r1", "b")], strict=True))
    assert (updated["status"], updated["started_at"], updated["model"]) == ("done", at(1), "mb")

    # A node of a run this writer never saw start may have a row already: merged.
    stray = collapse([node_finished("x", run_id="elsewhere")], state)
    assert list(stray.nodes_merge) == [("elsewhere", "x")] and stray.node_rows == 1
    # RunFinished forgets the run.
    collapse([run_finished()], state)
    assert state.written == {} and state.inflight == {}


def _paced_events(writer: TraceWriter, nodes: int) -> None:
    """A run whose nodes start and finish about a millisecond apart (instant nodes)."""
    writer(run_started())
    for index in range(nodes):
        writer(node_started(f"n{index}"))
        time.sleep(0.0005)
        writer(node_finished(f"n{index}"))
    writer(run_finished())  # waits for its commit


@pytest.mark.parametrize("burst_s", [0.0, 30.0])
def test_a_burst_of_events_shares_one_transaction_until_the_queue_goes_quiet(tmp_path, burst_s):
    # Events keep arriving about a millisecond apart for a quarter of a second or more: with a
    # 20 ms linger alone that is a transaction every 20 ms or so; waiting out the burst
    # (burst_s) it is one, whose fixed cost the emitting thread no longer pays over and over.
    store = TraceStore(tmp_path / "traces.duckdb")
    with TraceWriter(store, linger_s=0.02, burst_s=burst_s, max_batch=100_000) as writer:
        _paced_events(writer, 400)
    assert writer.stats["events"] == 802
    if burst_s:
        assert writer.stats["batches"] <= 3
    else:
        assert writer.stats["batches"] >= 4
    assert len(store.node_executions("r1")) == 400


def test_events_apart_are_each_written_without_waiting_for_a_burst_to_end(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    with TraceWriter(store, linger_s=0.002, burst_s=30.0) as writer:
        for expected, event in enumerate([run_started(), node_started("a")], start=1):
            writer(event)
            # Quiet after one event: written after linger_s, not after burst_s (30 s).
            deadline = time.monotonic() + 10
            while writer.stats["batches"] < expected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert writer.stats["batches"] == expected
    assert [row["status"] for row in store.node_executions("r1")] == ["running"]


def test_a_node_finished_by_a_writer_that_never_saw_it_start_is_merged_into_its_row(tmp_path):
    # The merge (an Arrow table and INSERT ... ON CONFLICT) is the writer's only use of
    # pyarrow, which it imports there and nowhere else.
    store = TraceStore(tmp_path / "traces.duckdb")
    with TraceWriter(store) as first:
        first(run_started())
        first(node_started("a", t=1, model="m1"))
    with TraceWriter(store) as second:
        second(node_finished("a", t=3))
    [row] = store.node_executions("r1")
    assert (row["status"], row["output"], row["model"]) == ("done", "output of a", "m1")
    assert row["started_at"] == at(1) and row["finished_at"] == at(3)
    assert second.stats["node_rows"] == 1


@pytest.mark.parametrize("mode", ["one batch", "a batch per event", "store.record"])
def test_every_event_kind_round_trips(tmp_path, mode):
    store = TraceStore(tmp_path / "traces.duckdb")
    events = every_kind_of_event()
    if mode == "store.record":
        for event in events:
            store.record(event)
    else:
        # A long linger holds the first batch open until the RunFinished flush.
        writer = TraceWriter(store, linger_s=30 if mode == "one batch" else 0)
        for event in events:
            writer(event)
            if mode == "a batch per event":
                writer.flush()
        if mode == "one batch":
            assert writer.stats["batches"] == 1
            assert writer.stats["node_rows"] == 5  # five nodes, eight node events
        else:
            assert writer.stats["batches"] == len(events) - 1  # NodeProgress is dropped
        assert writer.stats["events"] == len(events) - 1 and writer.stats["call_rows"] == 3
        writer.close()
    check_every_kind_was_stored(store)


def test_a_finish_through_store_record_keeps_what_the_start_wrote(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    store.record(run_started())
    store.record(node_started("a", model="model-a"))
    assert store.node_executions("r1")[0]["status"] == "running"
    store.record(node_finished("a", started_at=at(2.5)))
    [row] = store.node_executions("r1")
    assert (row["status"], row["model"], row["started_at"]) == ("done", "model-a", at(1))


def test_events_reach_the_file_within_milliseconds_without_a_flush(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    writer = TraceWriter(store)
    writer(run_started())
    writer(node_started("a"))
    queued = time.perf_counter()
    writer(node_finished("a"))
    seen_after = None
    while time.perf_counter() - queued < 5:
        # store.connect() does not wait for writers (reads through store.runs() would).
        with store.connect() as con:
            status = con.execute(
                "SELECT status FROM node_executions WHERE node_id = 'a'"
            ).fetchone()
        if status == ("done",):
            seen_after = time.perf_counter() - queued
            break
        time.sleep(0.002)
    writer.close()
    assert seen_after is not None and seen_after < 1.0, seen_after


def test_reads_in_the_same_process_see_events_still_queued(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    writer = TraceWriter(store, linger_s=30)  # nothing is written until someone flushes
    writer(run_started())
    writer(node_started("a"))
    writer(node_finished("a"))
    # Another TraceStore object on the same file (as the UI would hold) waits for the writer.
    assert [n["status"] for n in TraceStore(store.path).node_executions("r1")] == ["done"]
    writer.close()


def _read_in_subprocess(path: Path, sql: str) -> subprocess.CompletedProcess:
    """Open the store in another process, without any retry: fails if the file is held."""
    script = textwrap.dedent(
        """
        import sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print(con.execute(sys.argv[2]).fetchall())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(path), sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _read_through_store_in_subprocess(path: Path, sql: str) -> subprocess.CompletedProcess:
    """Read the store from another process the way Arbor does: ``TraceStore.connect``, which
    waits while the file is held and asks the holder for it."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[3])
        from storage.traces import TraceStore
        with TraceStore(sys.argv[1], lock_wait_s=10).connect() as con:
            print(con.execute(sys.argv[2]).fetchall())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(path), sql, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_file_stays_open_between_runs_and_is_handed_to_another_process_on_request(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    keeper = keeper_for(store.file_id)
    keeper.linger_s = 60.0  # only a request can explain another process getting in
    try:
        writer = TraceWriter(store)
        for event in [run_started(), node_started("a"), call("a"), node_finished("a")]:
            writer(event)
        writer(run_finished())
        assert keeper.holds_file  # kept for the next run: no open or close per run
        held = _read_in_subprocess(store.path, "SELECT count(*) FROM runs")
        assert held.returncode != 0 and "lock" in held.stderr.lower()

        handoffs = keeper.stats["handoffs"]
        read = _read_through_store_in_subprocess(store.path, "SELECT status, answer FROM runs")
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == "[('completed', 'output of root')]"
        assert keeper.stats["handoffs"] == handoffs + 1

        # The next run opens the file again (asking the other process if it still had it).
        for event in [run_started("r2"), node_started("a", "r2"), node_finished("a", "r2")]:
            writer(event)
        writer(run_finished("r2"))
        writer.close()
        assert {r["run_id"]: r["status"] for r in store.runs()} == {
            "r1": "completed",
            "r2": "completed",
        }
    finally:
        keeper.linger_s = 0.3
        store.release()


def test_a_tool_that_does_not_ask_gets_the_file_once_the_process_is_idle(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    keeper = keeper_for(store.file_id)
    writer = TraceWriter(store)
    for event in [run_started(), node_started("a"), call("a"), node_finished("a")]:
        writer(event)
    writer.flush()
    assert keeper.holds_file
    deadline = time.monotonic() + 5
    while keeper.holds_file and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not keeper.holds_file, "the process kept the file through an idle period"

    read = _read_in_subprocess(store.path, "SELECT node_id, status FROM node_executions")
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "[('a', 'done')]"

    # The run goes on after the other process let go: the file is opened again.
    for event in [node_started("root", t=4), call("root", t=5), node_finished("root", t=6)]:
        writer(event)
    writer(run_finished())
    writer.close()
    assert store.run("r1")["status"] == "completed"
    assert [n["node_id"] for n in store.node_executions("r1")] == ["a", "root"]


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    sys.path.insert(0, sys.argv[2])
    from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunStarted
    from storage.traces import TraceStore, TraceWriter

    writer = TraceWriter(TraceStore(sys.argv[1]))
    now = lambda: datetime.now(UTC)
    writer(RunStarted("doomed", None, "task", "{}", "{}", now()))
    i = 0
    while True:  # a run of instant nodes that never ends by itself
        node = f"n{i:05d}"
        writer(NodeStarted("doomed", node, node, "m", now()))
        writer(ModelCallFinished("doomed", node, f"c{i}", "m", "[]", f"out {i}", 1, 1, 0.0,
                                 "ok", None, now(), now(), cache_key=f"k{i}"))
        writer(NodeFinished("doomed", node, node, "done", f"out {i}", None, 1, 1, now(), now()))
        if i % 25 == 24:
            writer.flush()
            print(f"flushed {i}", flush=True)
        writer(NodeStarted("doomed", f"{node}-slow", "slow", "m", now()))  # left running
        i += 1
        time.sleep(0.0005)
    """
)


def test_kill_9_mid_run_keeps_every_flushed_event_and_the_run_is_found_interrupted(tmp_path):
    path = tmp_path / "traces.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last_flushed = -1
    try:
        for line in child.stdout:
            last_flushed = int(line.split()[1])
            if last_flushed >= 150:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert last_flushed >= 150, child.stderr.read()
    assert child.returncode == -signal.SIGKILL
    assert not process_alive(child.pid)

    store = TraceStore(path)
    run = store.run("doomed")
    assert run["status"] == "running" and run["pid"] == child.pid
    nodes = {n["node_id"]: n for n in store.node_executions("doomed")}
    calls = {c["node_id"]: c for c in store.model_calls("doomed")}
    for i in range(last_flushed + 1):
        node = f"n{i:05d}"
        assert nodes[node]["status"] == "done" and nodes[node]["output"] == f"out {i}"
        assert calls[node]["cache_key"] == f"k{i}"
    assert len(store.lookup([f"k{i}" for i in range(last_flushed + 1)])) == last_flushed + 1

    done_before = sum(1 for n in store.node_executions("doomed") if n["status"] == "done")
    [interrupted] = store.interrupted_runs()
    assert interrupted["run_id"] == "doomed" and interrupted["status"] == "interrupted"
    assert store.run("doomed")["status"] == "interrupted"
    assert interrupted["finished_at"] >= interrupted["started_at"]
    # RunFinished never came: the run's totals are its nodes' (1 + 1 tokens each).
    marked = store.run("doomed")
    assert (marked["input_tokens"], marked["output_tokens"]) == (done_before, done_before)
    assert marked["finished_at"] == max(
        n["finished_at"] for n in nodes.values() if n["finished_at"]
    )
    left = [n for n in store.node_executions("doomed") if n["node_id"].endswith("-slow")]
    assert left and {n["status"] for n in left} == {"interrupted"}
    assert store.interrupted_runs() == []  # marked once
    assert store.schema_version() == len(MIGRATIONS)  # the file survived the kill intact


def test_a_live_process_keeps_its_runs_running_and_a_reused_pid_does_not(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    store.record(run_started("mine", pid=os.getpid(), started_at=datetime.now(UTC)))
    store.record(node_started("a", run_id="mine"))
    store.record(node_finished("a", run_id="mine", cost_usd=0.5))
    assert store.interrupted_runs() == []
    [mine] = store.runs()
    assert mine["status"] == "running" and mine["nodes_done"] == 1
    assert (mine["input_tokens"], mine["output_tokens"], mine["cost_usd"]) == (5, 3, 0.5)
    # This process started long after 2001: a run from then under this pid is not ours.
    assert process_alive(os.getpid(), datetime.now(UTC))
    assert not process_alive(os.getpid(), datetime(2001, 1, 1, tzinfo=UTC))
    assert not process_alive(None) and not process_alive(0)


# -- failures --------------------------------------------------------------------------------


def test_a_locked_store_is_reported_on_the_next_event_and_loses_nothing(tmp_path):
    path = tmp_path / "traces.duckdb"
    earlier = TraceStore(path)
    earlier.record(run_started("r0"))
    earlier.record(run_finished("r0"))
    earlier.release()  # the holder below does not ask for the file: it must be free
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "con = duckdb.connect(sys.argv[1])\n"
            "print('holding', flush=True)\n"
            "sys.stdin.readline()\n"
            "con.close()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        writer = TraceWriter(TraceStore(path, lock_wait_s=0.3))
        writer(run_started())
        deadline = time.monotonic() + 10
        while writer.stats["failed_attempts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.stats["failed_attempts"] >= 1
        with pytest.raises(TraceStoreError, match="Cannot open the trace store") as info:
            writer(node_started("a"))
        assert str(path) in str(info.value)
        writer(node_finished("a"))  # reported once; the events keep queueing
        with pytest.raises(TraceStoreError):
            writer.flush(timeout=5)
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    writer.flush()  # the other process let go: everything queued is written now
    writer(run_finished())
    writer.close()
    store = TraceStore(path)
    assert store.run("r0")["status"] == "completed"  # what was there before is untouched
    assert store.run("r1")["status"] == "completed"
    assert [(n["node_id"], n["status"]) for n in store.node_executions("r1")] == [("a", "done")]


def test_a_corrupt_store_gives_a_clear_error_and_is_left_as_it_was(tmp_path):
    path = tmp_path / "traces.duckdb"
    garbage = b"this is not a duckdb file\n" * 200
    path.write_bytes(garbage)
    writer = TraceWriter(TraceStore(path, lock_wait_s=0.5))
    writer(run_started())
    with pytest.raises(TraceStoreError, match="Cannot open the trace store") as info:
        writer(run_finished())  # a RunFinished is flushed, so its failure surfaces here
    assert str(path) in str(info.value)
    with pytest.raises(TraceStoreError, match="2 trace events could not be written"):
        writer.close()
    assert path.read_bytes() == garbage


# -- the call cache --------------------------------------------------------------------------


def test_lookup_answers_the_newest_ok_call_per_key_and_never_a_failed_one(tmp_path, monkeypatch):
    store = TraceStore(tmp_path / "traces.duckdb")
    with TraceWriter(store) as writer:
        for event in [
            run_started("old"),
            call("a", "old", t=1, cache_key="k1", output="old answer", finish_reason="stop"),
            call("b", "old", t=2, cache_key="k2", status="error", error="boom"),
            call("c", "old", t=3, cache_key="k3", status="cancelled", output="part"),
            call("d", "old", t=4, cache_key="k4", output="four"),
            run_finished("old"),
            run_started("new", started_at=at(10)),
            call("a", "new", t=11, cache_key="k1", output="new answer", output_tokens=9),
            call("b", "new", t=12, cache_key="k2", status="error", error="boom again"),
            run_finished("new"),
        ]:
            writer(event)
    keys = ["k1", "k2", "k3", "k4", "missing", "k1", ""]
    found = store.lookup(keys)
    assert set(found) == {"k1", "k4"}
    assert (found["k1"].output, found["k1"].run_id, found["k1"].output_tokens) == (
        "new answer",
        "new",
        9,
    )
    assert found["k1"].call_id == "new-a-11"
    assert (found["k4"].output, found["k4"].finish_reason) == ("four", None)
    assert store.lookup([]) == {}
    # Long key lists go in chunks; the answer is the same.
    monkeypatch.setattr(trace_store, "LOOKUP_CHUNK", 2)
    assert store.lookup(keys) == found


def test_a_finished_run_is_in_the_cache_as_soon_as_its_run_finished_is_recorded(tmp_path):
    store = TraceStore(tmp_path / "traces.duckdb")
    writer = TraceWriter(store, linger_s=30)  # without the RunFinished flush, nothing lands
    writer(run_started())
    writer(call("a", cache_key="ka"))
    writer(run_finished())
    assert store.lookup(["ka"])["ka"].run_id == "r1"  # the next run's lookup sees it
    writer.close()


# -- resuming --------------------------------------------------------------------------------


def _two_leaf_plan() -> Plan:
    return Plan(
        task="Name a fruit and a vegetable.",
        root=Node(
            id="root",
            title="Combine",
            instruction="Write one sentence naming the fruit and the vegetable.",
            children=[
                Node(id="fruit", title="Fruit", instruction="Name one fruit."),
                Node(id="veg", title="Vegetable", instruction="Name one vegetable."),
            ],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=24, seed=11),
    )


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    return gone.pid


def test_resume_refuses_unknown_completed_and_live_runs(workspace):
    with pytest.raises(TraceStoreError, match="No run 'nope'"):
        workspace.resume_run("nope")
    workspace.traces.record(run_started("done-run", plan_json=_two_leaf_plan().to_json()))
    workspace.traces.record(run_finished("done-run"))
    with pytest.raises(TraceStoreError, match="completed; there is nothing to resume"):
        workspace.resume_run("done-run")
    workspace.traces.record(run_started("live", pid=os.getpid(), started_at=datetime.now(UTC)))
    with pytest.raises(TraceStoreError, match="still running in process"):
        workspace.resume_run("live")
    assert workspace.traces.run("live")["status"] == "running"


@pytest.mark.model
def test_resuming_an_interrupted_run_reuses_its_finished_call_and_runs_the_rest(workspace):
    plan = _two_leaf_plan()
    caps = RunCaps(total_tokens=3000, max_tokens_per_node=24, max_parallel=2)
    session = workspace.sessions.save(
        __import__("storage.sessions", fromlist=["ArborSession"]).ArborSession(
            name="resumable", task=plan.task
        )
    )
    # What a run killed after its first leaf leaves behind, keyed the way the executor keys.
    # (NodeRunner.prepare resolves the prompt style and adds the base prompt's stops.)
    fruit = plan.nodes()["fruit"]
    default = plan.default_generation
    style = prompt_style(plan.model_for(fruit), default)
    generation = default.model_copy(
        update={
            "max_tokens": 24,
            "prompt_format": style,
            "stop": merge_stops(default.stop, base_prompt_stops(style, fruit)),
        }
    )
    messages = node_messages(plan, fruit, {}, style=style)
    key = call_cache_key(messages, plan.model_for(fruit), generation)
    started = datetime.now(UTC) - timedelta(minutes=1)
    store = workspace.traces
    store.record(
        run_started(
            "killed",
            session_id=session.id,
            task=plan.task,
            plan_json=plan.to_json(indent=None),
            caps_json=caps.model_dump_json(),
            started_at=started,
            pid=_dead_pid(),
        )
    )
    store.record(node_started("fruit", run_id="killed"))
    store.record(call("fruit", run_id="killed", output="Mango", cache_key=key))
    store.record(node_finished("fruit", run_id="killed", output="Mango"))
    store.record(node_started("veg", run_id="killed"))  # killed while this one ran

    result = workspace.resume_run("killed")

    # (the bundled model may answer in Spanish or stop at the limit: "suspect", answered)
    assert result.status in ANSWERED_STATUSES, result.stop_reason
    assert result.resumed_from == "killed" and result.run_id != "killed"
    assert result.reused == ["fruit"] and sorted(result.executed) == ["root", "veg"]
    assert result.nodes["fruit"].reused_from == "killed"
    assert store.run("killed")["status"] == "interrupted"
    assert {n["node_id"]: n["status"] for n in store.node_executions("killed")}["veg"] == (
        "interrupted"
    )
    new = store.runs()[0]
    assert new["run_id"] == result.run_id and new["resumed_from"] == "killed"
    assert new["session_id"] == session.id and new["status"] == result.status
    assert (new["nodes_done"], new["nodes_reused"]) == (3, 1)
    root_call = next(c for c in store.model_calls(result.run_id) if c["node_id"] == "root")
    assert "Mango" in root_call["prompt"]  # the reused output fed the rest of the plan
    assert workspace.sessions.get(session.id).run_ids == [result.run_id]


# -- command line ----------------------------------------------------------------------------


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        env={**os.environ, "ARBOR_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_runs_flags_interrupted_runs_and_resume_refuses_unknown_ones(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    store = TraceStore(data / "traces.duckdb")
    store.record(run_started("run-finished"))
    store.record(node_started("a", run_id="run-finished"))
    store.record(node_finished("a", run_id="run-finished"))
    store.record(run_finished("run-finished"))
    store.record(run_started("run-killed", pid=_dead_pid(), started_at=at(20)))

    listing = _cli(data, "runs")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    killed = next(line for line in lines if line.startswith("run-killed"))
    assert "interrupted" in killed and "run.py resume run-killed" in killed
    finished = next(line for line in lines if line.startswith("run-finished"))
    assert "completed" in finished and "resume" not in finished and " 1 " in finished
    assert store.run("run-killed")["status"] == "interrupted"

    unknown = _cli(data, "resume", "run-nope")
    assert unknown.returncode == 2 and "No run 'run-nope'" in unknown.stderr


def test_an_evaluations_writer_does_not_wait_for_commits_and_its_calls_are_reusable_at_once(
    tmp_path, monkeypatch
):
    # A live OTLP export reads the finished run, so it does wait; none is configured here
    # (an earlier test may have loaded the exporter, which counts as configured).
    monkeypatch.setattr(writer_module, "live_export_wanted", lambda: False)
    store = TraceStore(tmp_path / "traces.duckdb")
    # Runs that do not wait for their commit, and a batch that waits a minute to grow.
    writer = TraceWriter(store, sync_finish=False, linger_s=60.0)
    writer(run_started())
    writer(node_started("a"))
    writer(call("a", cache_key="k-ok"))
    writer(call("a", t=2.5, cache_key="k-failed", status="error", error="boom"))
    writer(node_finished("a"))
    writer(run_finished())  # returns without a commit
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM model_calls").fetchone() == (0,)

    found = store.lookup(["k-ok", "k-failed", "k-unknown"])
    assert set(found) == {"k-ok"}  # queued, not committed, successful: reusable already
    assert found["k-ok"].call_id == "r1-a-2" and found["k-ok"].output == "output of a"

    writer.close()  # commits everything
    assert writer.uncommitted_call("k-ok") is None
    assert store.lookup(["k-ok"])["k-ok"].call_id == "r1-a-2"  # now from the file
    assert store.run("r1")["status"] == "completed"
