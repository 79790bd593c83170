"""Trace store (DuckDB), session store (SQLite) and session files, with real runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import duckdb
import pytest

from engine.errors import CycleError, SessionError, TraceStoreError
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.events import ANSWERED_STATUSES, NodeFinished
from storage.sessions import SESSION_FORMAT, SESSION_FORMAT_VERSION, ArborSession, SessionStore
from storage.sessions_schema import MIGRATIONS as SESSION_MIGRATIONS
from storage.sessions_schema import schema_version as session_schema_version
from storage.traces import MIGRATIONS, TraceStore
from tests.support.servers import SERVER_API_KEY

SMALL_CAPS = RunCaps(total_tokens=3000, max_tokens_per_node=32, max_parallel=2)


def _two_leaf_plan(task: str = "Name a fruit and a vegetable.", **plan_fields) -> Plan:
    return Plan(
        task=task,
        root=Node(
            id="root",
            title="Combine",
            instruction="Write one sentence naming the fruit and the vegetable.",
            children=[
                Node(id="fruit", title="Fruit", instruction="Name one fruit."),
                Node(id="veg", title="Vegetable", instruction="Name one vegetable."),
            ],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=32, seed=11),
        **plan_fields,
    )


# -- trace store ----------------------------------------------------------------------------


def test_new_trace_store_applies_and_records_its_migrations_once(tmp_path):
    path = tmp_path / "traces.duckdb"
    assert TraceStore(path).schema_version() == len(MIGRATIONS)
    con = duckdb.connect(str(path))
    try:
        rows = con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    finally:
        con.close()
    assert [(v, n) for v, n, _ in rows] == [
        (i, name) for i, (name, _) in enumerate(MIGRATIONS, start=1)
    ]
    assert {"runs", "node_executions", "model_calls", "schema_migrations"} <= tables
    # A second store object (e.g. another process later) finds them applied and adds nothing.
    assert TraceStore(path).schema_version() == len(MIGRATIONS)
    con = duckdb.connect(str(path))
    try:
        again = con.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
    finally:
        con.close()
    assert again == rows


def test_trace_store_waits_for_another_process_and_gives_up_with_a_clear_error(tmp_path):
    path = tmp_path / "traces.duckdb"
    created = TraceStore(path)
    created.schema_version()
    created.release()  # the holder below does not ask for the file: it must be free
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                con = duckdb.connect({str(path)!r})
                print("holding", flush=True)
                time.sleep(2.5)
                con.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(TraceStoreError, match="Cannot open the trace store") as info:
            TraceStore(path, lock_wait_s=0.5).runs()
        assert str(path) in str(info.value)
        # With a longer wait the same read succeeds once the other process lets go.
        assert TraceStore(path, lock_wait_s=20).runs() == []
    finally:
        holder.wait(timeout=20)


def test_a_failed_run_is_traced_with_errors_and_blocked_nodes(workspace, tmp_path):
    missing = tmp_path / "gone.gguf"
    plan = _two_leaf_plan()
    plan.root.children[0].model = ModelRef(path=str(missing))
    plan.root.children[1].model = ModelRef(path=str(missing))
    result = workspace.run_plan(plan, SMALL_CAPS)
    assert result.status == "failed"
    run = workspace.traces.run(result.run_id)
    assert run["status"] == "failed" and str(missing) in run["stop_reason"]
    assert run["finished_at"] is not None and run["finished_at"] >= run["started_at"]
    nodes = {n["node_id"]: n for n in workspace.traces.node_executions(result.run_id)}
    assert nodes["fruit"]["status"] == "failed" and str(missing) in nodes["fruit"]["error"]
    assert nodes["root"]["status"] == "blocked" and nodes["root"]["started_at"] is None
    assert workspace.traces.model_calls(result.run_id) == []  # no call was ever made


@pytest.mark.model
def test_real_run_lands_in_duckdb_while_it_happens(workspace, bundled_path):
    session = workspace.sessions.save(ArborSession(name="traced", task="fruit"))
    seen: dict[str, dict] = {}

    def listener(event):
        if isinstance(event, NodeFinished):
            # The trace store is the first listener: this node's row must already be final.
            run = workspace.traces.run(event.run_id)
            nodes = {n["node_id"]: n for n in workspace.traces.node_executions(event.run_id)}
            calls = workspace.traces.model_calls(event.run_id)
            seen[event.node_id] = {"run": run, "nodes": nodes, "calls": calls, "event": event}

    plan = _two_leaf_plan()
    result = workspace.run_plan(plan, SMALL_CAPS, session_id=session.id, listeners=[listener])
    assert result.status in ANSWERED_STATUSES, result.stop_reason

    # While the run was going: the run row said running, finished nodes were in the store.
    first_leaf = next(iter(seen.values()))
    assert first_leaf["run"]["status"] == "running" and first_leaf["run"]["finished_at"] is None
    for node_id, snapshot in seen.items():
        row = snapshot["nodes"][node_id]
        assert row["status"] == "done"
        assert row["output"] == snapshot["event"].output and row["output"].strip()
        assert row["model"] == "bundled:gemma-3-270m"  # the plan's model label
        assert row["output_tokens"] == snapshot["event"].output_tokens > 0
        assert any(c["node_id"] == node_id for c in snapshot["calls"])
    early = seen["fruit"]["nodes"]
    assert "root" not in early or early["root"]["status"] != "done"

    # After the run: the whole story, consistent with the result.
    run = workspace.traces.run(result.run_id)
    assert run["status"] == result.status and run["answer"] == result.answer
    assert run["session_id"] == session.id and run["task"] == plan.task
    assert run["input_tokens"] == result.input_tokens
    assert run["output_tokens"] == result.output_tokens
    assert Plan.from_json(run["plan_json"]) == plan
    assert RunCaps.model_validate_json(run["caps_json"]) == SMALL_CAPS
    calls = workspace.traces.model_calls(result.run_id)
    assert sorted(c["node_id"] for c in calls) == ["fruit", "root", "veg"]
    for call in calls:
        assert call["status"] == "ok" and call["error"] is None
        assert call["model"] == "bundled:gemma-3-270m"  # one name per model in every table
        assert call["input_tokens"] > 0 and 0 < call["output_tokens"] <= 32
        assert call["latency_s"] > 0
        assert call["output"] == result.nodes[call["node_id"]].output
        messages = json.loads(call["prompt"])
        assert messages and all({"role", "content"} <= set(m) for m in messages)
    root_prompt = next(c["prompt"] for c in calls if c["node_id"] == "root")
    assert result.nodes["fruit"].output.strip()[:20] in json.loads(root_prompt)[-1]["content"]
    assert [r["run_id"] for r in workspace.traces.runs(session.id)] == [result.run_id]
    assert workspace.sessions.get(session.id).run_ids == [result.run_id]


def test_traces_written_here_are_readable_from_another_process(workspace, tmp_path):
    plan = _two_leaf_plan()
    plan.root.children[0].model = ModelRef(path=str(tmp_path / "none.gguf"))
    result = workspace.run_plan(plan, SMALL_CAPS)
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]);"
        "from storage.traces import TraceStore;"
        "print(TraceStore(sys.argv[1]).run(sys.argv[3])['status'])"
    )
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", script, str(workspace.traces.path), root, result.run_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "failed"


# -- session store --------------------------------------------------------------------------


def _session(name: str = "Lisbon", **fields) -> ArborSession:
    return ArborSession(
        name=name, task="Plan a trip", plan=_two_leaf_plan(), caps=SMALL_CAPS, **fields
    )


def test_session_store_save_get_list_delete_round_trip(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite")
    first = store.save(_session("first", run_ids=["run-1"]))
    second = store.save(_session("second"))
    assert store.get(first.id) == first
    assert store.get(second.id) == second
    assert store.get(first.id).plan == _two_leaf_plan()
    assert [s.id for s in store.list()] == [second.id, first.id]  # most recently updated first
    first.name = "first, renamed"
    store.save(first)
    assert [s.name for s in store.list()] == ["first, renamed", "second"]
    reopened = SessionStore(tmp_path / "sessions.sqlite")  # survives a new store object
    assert reopened.get(first.id) == first
    store.delete(first.id)
    assert not store.exists(first.id)
    with pytest.raises(SessionError, match=first.id):
        store.get(first.id)
    assert [s.id for s in store.list()] == [second.id]
    store.delete("never-existed")  # deleting nothing is not an error


def test_add_run_appends_once_and_refuses_unknown_sessions(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite")
    session = store.save(_session())
    store.add_run(session.id, "run-a")
    store.add_run(session.id, "run-b")
    store.add_run(session.id, "run-a")
    assert store.get(session.id).run_ids == ["run-a", "run-b"]
    with pytest.raises(SessionError, match="ghost"):
        store.add_run("ghost", "run-c")


def test_saving_an_invalid_plan_is_refused_and_keeps_the_stored_session(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite")
    session = store.save(_session())
    before = store.get(session.id)
    broken = session.model_copy(deep=True)
    broken.plan.root.children[0].depends_on = ["veg"]
    broken.plan.root.children[1].depends_on = ["fruit"]
    with pytest.raises(CycleError):
        store.save(broken)
    assert store.get(session.id) == before


def test_a_damaged_row_in_the_database_raises_session_error(tmp_path):
    path = tmp_path / "sessions.sqlite"
    store = SessionStore(path)
    session = store.save(_session())
    with sqlite3.connect(path) as con:
        con.execute("UPDATE sessions SET plan_json = '{\"oops\"' WHERE id = ?", (session.id,))
    with pytest.raises(SessionError, match="damaged"):
        store.get(session.id)


# The tables as ``SQLModel.metadata.create_all`` made them before sessions.sqlite had numbered
# migrations (SQLAlchemy's own DDL, copied verbatim), and the rows such a file holds.
OLD_SESSIONS_DDL = (
    "CREATE TABLE sessions (\n\tid VARCHAR NOT NULL, \n\tname VARCHAR NOT NULL, \n\ttask VARCHAR"
    " NOT NULL, \n\tplan_json VARCHAR, \n\tcaps_json VARCHAR NOT NULL, \n\trun_ids_json VARCHAR"
    " NOT NULL, \n\tcreated_at DATETIME NOT NULL, \n\tupdated_at DATETIME NOT NULL, \n\tPRIMARY"
    " KEY (id)\n)",
    "CREATE INDEX ix_sessions_name ON sessions (name)",
)
OLD_REVISIONS_DDL = (
    "CREATE TABLE plan_revisions (\n\tid INTEGER NOT NULL, \n\tsession_id VARCHAR NOT NULL,"
    " \n\tnumber INTEGER NOT NULL, \n\tcreated_at DATETIME NOT NULL, \n\tmessage VARCHAR NOT"
    " NULL, \n\tplan_json VARCHAR NOT NULL, \n\tPRIMARY KEY (id), \n\tUNIQUE (session_id,"
    " number)\n)",
    "CREATE INDEX ix_plan_revisions_session_id ON plan_revisions (session_id)",
)


def _migrations_recorded(path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()


def test_a_new_sessions_file_applies_and_records_every_migration(tmp_path):
    path = tmp_path / "sessions.sqlite"
    store = SessionStore(path)
    expected = [(i, name) for i, (name, _) in enumerate(SESSION_MIGRATIONS, start=1)]
    assert _migrations_recorded(path) == expected
    assert session_schema_version(store.engine) == len(SESSION_MIGRATIONS)
    session = store.save(_session())
    assert [r.number for r in store.revisions.list(session.id)] == [1]
    SessionStore(path)  # reopening applies nothing twice
    assert _migrations_recorded(path) == expected


@pytest.mark.parametrize("with_revisions", [True, False], ids=["today's tables", "no revisions"])
def test_a_sessions_file_from_before_migrations_is_version_1_and_keeps_its_rows(
    tmp_path, with_revisions
):
    path = tmp_path / "sessions.sqlite"
    plan = _two_leaf_plan()
    with sqlite3.connect(path) as con:
        for statement in OLD_SESSIONS_DDL + (OLD_REVISIONS_DDL if with_revisions else ()):
            con.execute(statement)
        con.execute(
            "INSERT INTO sessions VALUES ('old-session', 'Old', 'Plan a trip', ?, ?, ?, ?, ?)",
            (
                plan.to_json(indent=None),
                SMALL_CAPS.model_dump_json(),
                '["run-1"]',
                "2026-01-02 03:04:05.000000",
                "2026-01-02 03:04:06.000000",
            ),
        )
        if with_revisions:
            con.execute(
                "INSERT INTO plan_revisions VALUES (1, 'old-session', 1,"
                " '2026-01-02 03:04:05.000000', 'first', ?)",
                (plan.to_json(indent=None),),
            )

    store = SessionStore(path)
    # recognised as version 1, then brought up to date by the later migrations
    assert _migrations_recorded(path) == [
        (number, name) for number, (name, _) in enumerate(SESSION_MIGRATIONS, start=1)
    ]
    assert session_schema_version(store.engine) == len(SESSION_MIGRATIONS)
    old = store.get("old-session")
    assert (old.name, old.task, old.plan, old.caps, old.run_ids) == (
        "Old",
        "Plan a trip",
        plan,
        SMALL_CAPS,
        ["run-1"],
    )
    revisions = store.revisions.list("old-session")
    assert [(r.number, r.message) for r in revisions] == ([(1, "first")] if with_revisions else [])
    # The migrated file takes writes: an edited plan becomes the next revision.
    old.plan = _two_leaf_plan(task="Plan a longer trip.")
    store.save(old, message="edited")
    assert store.revisions.list("old-session")[0].message == "edited"
    assert [s.id for s in store.list()] == ["old-session"]


def test_session_file_round_trip_is_lossless(tmp_path):
    session = _session(run_ids=["run-x"])
    text = session.to_file_text()
    payload = json.loads(text)
    assert payload["format"] == SESSION_FORMAT and payload["version"] == SESSION_FORMAT_VERSION
    path = tmp_path / "s.arbor.json"
    path.write_text(text, encoding="utf-8")
    assert ArborSession.from_file_text(path.read_text(encoding="utf-8")) == session
    empty = ArborSession(name="no plan yet")
    assert ArborSession.from_file_text(empty.to_file_text()) == empty


def _edited(text: str, edit) -> str:
    payload = json.loads(text)
    edit(payload)
    return json.dumps(payload)


BAD_SESSION_FILES = {
    "not json": lambda text: text[: len(text) // 2],
    "binary": lambda text: "\x00\x01PK\x03\x04",
    "a plan file": lambda text: _two_leaf_plan().to_json(),
    "foreign format": lambda text: _edited(text, lambda p: p.update(format="something-else")),
    "newer version": lambda text: _edited(
        text, lambda p: p.update(version=SESSION_FORMAT_VERSION + 1)
    ),
    "no version": lambda text: _edited(text, lambda p: p.pop("version")),
    "plan is a list": lambda text: _edited(text, lambda p: p.update(plan=[1, 2])),
    "plan is a string": lambda text: _edited(text, lambda p: p.update(plan="root")),
    "plan has a cycle": lambda text: _edited(
        text, lambda p: p["plan"]["root"]["children"][0].update(depends_on=["fruit"])
    ),
    "caps out of range": lambda text: _edited(text, lambda p: p["caps"].update(total_tokens=5)),
    "run ids not a list": lambda text: _edited(text, lambda p: p.update(run_ids="run-1")),
}


@pytest.mark.parametrize("kind", list(BAD_SESSION_FILES))
def test_bad_session_file_raises_session_error_and_leaves_the_stored_session(tmp_path, kind):
    store = SessionStore(tmp_path / "sessions.sqlite")
    stored = store.save(_session())
    before = store.get(stored.id)
    text = BAD_SESSION_FILES[kind](stored.to_file_text())  # same id as the stored session
    with pytest.raises(SessionError) as info:
        ArborSession.from_file_text(text, source="import.json")
    if kind == "plan has a cycle":
        assert "fruit -> fruit" in str(info.value)
    else:
        assert "import.json" in str(info.value)
    assert store.get(stored.id) == before
    assert len(store.list()) == 1


# -- secrets --------------------------------------------------------------------------------


@pytest.mark.server
def test_no_api_key_value_lands_in_sessions_or_traces(
    workspace, keyed_llama_server, monkeypatch, tmp_path
):
    base_url, key = keyed_llama_server
    assert key == SERVER_API_KEY
    monkeypatch.setenv("ARBOR_TEST_REMOTE_KEY", key)
    remote = ModelRef(
        kind="remote", base_url=base_url, model="gemma", api_key_env="ARBOR_TEST_REMOTE_KEY"
    )
    plan = _two_leaf_plan(default_model=remote)
    session = workspace.sessions.save(ArborSession(name="remote", task=plan.task, plan=plan))
    session_file = tmp_path / "remote.arbor.json"
    session_file.write_text(workspace.sessions.get(session.id).to_file_text(), encoding="utf-8")

    result = workspace.run_plan(plan, SMALL_CAPS, session_id=session.id)
    # The server demands the key, so a completed run proves it was read and sent.
    assert result.status in ANSWERED_STATUSES, result.stop_reason
    assert len(workspace.traces.model_calls(result.run_id)) == 3

    secret = key.encode()
    data_files = [p for p in workspace.root.rglob("*") if p.is_file()]
    assert {p.name for p in data_files} >= {"traces.duckdb", "sessions.sqlite"}
    for path in [*data_files, session_file]:
        assert secret not in path.read_bytes(), f"API key found in {path}"
    assert "ARBOR_TEST_REMOTE_KEY" in session_file.read_text(encoding="utf-8")
    # DuckDB may compress strings on disk, so also ask it: no text column holds the key.
    with workspace.traces.connect() as con:
        columns = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE data_type = 'VARCHAR'"
        ).fetchall()
        for table, column in columns:
            hits = con.execute(
                f'SELECT count(*) FROM "{table}" WHERE contains("{column}", ?)', [key]
            ).fetchone()[0]
            assert hits == 0, f"API key found in {table}.{column}"
        names = con.execute(
            "SELECT count(*) FROM runs WHERE contains(plan_json, 'ARBOR_TEST_REMOTE_KEY')"
        ).fetchone()[0]
    assert names == 1  # the variable's name is traced, its value is not


def test_the_model_registry_is_read_again_only_when_its_file_changes(tmp_path, monkeypatch):
    import os

    from storage import workspace as workspace_module
    from storage.workspace import Workspace

    reads = []
    real = workspace_module.registry_backend_factory

    def counting(root):
        reads.append(root)
        return real(root)

    monkeypatch.setattr(workspace_module, "registry_backend_factory", counting)
    ws = Workspace(tmp_path)
    ws._registry_factory()
    ws._registry_factory()
    assert len(reads) == 1
    registry = tmp_path / "models.json"
    registry.write_text("{broken", encoding="utf-8")
    _, problem = ws._registry_factory()
    assert len(reads) == 2 and problem is not None and "not valid JSON" in problem
    registry.write_text('{"format": "arbor-models", "version": 1, "models": []}', encoding="utf-8")
    info = registry.stat()
    os.utime(registry, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    ws._registry_factory()
    assert len(reads) == 3
