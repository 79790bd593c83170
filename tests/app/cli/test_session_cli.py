"""Session management from the command line (``run.py sessions ...``, ``export-session``,
``import-session``) as a user runs it: subprocesses over real data directories. Also the store
calls behind the commands (rename, duplicate, search, delete with runs), in process.

Runs are recorded trace rows written through a real ``TraceWriter``; no model is called. Each
subprocess costs seconds (the engine's imports), so each test makes as few as it can.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.errors import SessionError, TraceStoreError
from engine.plan import Node, Plan
from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunFinished, RunStarted
from storage.bundles import export_session
from storage.sessions import ArborSession
from storage.workspace import Workspace

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 7, 8, 9, 10, 11, tzinfo=UTC)


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARBOR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_session(workspace: Workspace, name: str, task: str) -> ArborSession:
    plan = Plan(task=task, root=Node(id="root", title="Root", instruction=task))
    return workspace.sessions.save(ArborSession(name=name, task=task, plan=plan))


def record_run(
    workspace: Workspace,
    session: ArborSession,
    run_id: str,
    minute: int = 0,
    *,
    finished: bool = True,
) -> None:
    """A one-node run with one call; ``finished=False`` leaves it running in this process."""
    start = T0 + timedelta(minutes=minute) if finished else datetime.now(UTC)
    end = start + timedelta(seconds=2)
    with workspace.traces.writer() as write:
        write(RunStarted(run_id, session.id, session.task, "{}", "{}", start, pid=os.getpid()))
        write(NodeStarted(run_id, "root", "Root", "m", start))
        write(
            ModelCallFinished(
                run_id, "root", f"{run_id}-call", "m", "[]", "an answer", 4, 2, 0.1, "ok", None,
                start, end,
            )
        )  # fmt: skip
        if finished:
            write(NodeFinished(run_id, "root", "Root", "done", "an answer", None, 4, 2, start, end))
            write(RunFinished(run_id, "completed", None, "an answer", 4, 2, end))
    workspace.sessions.add_run(session.id, run_id)


def trace_counts(workspace: Workspace) -> tuple[int, int, int]:
    with workspace.traces.connect() as con:
        return tuple(
            con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("runs", "node_executions", "model_calls")
        )


@pytest.fixture
def data(tmp_path: Path) -> tuple[Workspace, ArborSession, ArborSession]:
    """ "Haiku" with two runs, then "Fruit" without runs (the most recently updated)."""
    workspace = Workspace(tmp_path / "data")
    haiku = make_session(workspace, "Haiku", "Write a haiku about autumn leaves.")
    record_run(workspace, haiku, "run-a", 0)
    record_run(workspace, haiku, "run-bb", 1)
    fruit = make_session(workspace, "Fruit", "Name three fruits.")
    return workspace, workspace.sessions.get(haiku.id), fruit


# -- the store behind the commands -----------------------------------------------------------
def test_rename_and_duplicate_refuse_unknown_ids_and_blank_names(data):
    workspace, haiku, _ = data
    store = workspace.sessions
    with pytest.raises(SessionError, match="'nope'"):
        store.rename("nope", "A name")
    with pytest.raises(SessionError, match="'nope'"):
        store.duplicate("nope")
    with pytest.raises(SessionError, match="'nope'"):
        workspace.delete_session("nope", delete_runs=True)
    with pytest.raises(SessionError, match="must not be blank"):
        store.rename(haiku.id, "  ")
    with pytest.raises(SessionError, match="must not be blank"):
        store.duplicate(haiku.id, name="")
    assert store.get(haiku.id).name == "Haiku" and len(store.list()) == 2
    assert store.rename(haiku.id, "  Autumn  ").name == "Autumn"


def test_a_duplicate_gets_a_new_id_no_runs_and_a_fresh_revision_history(data):
    workspace, haiku, _ = data
    store = workspace.sessions
    edited = haiku.model_copy(deep=True)
    edited.plan.root.instruction = "Write two haiku."
    store.save(edited)
    assert store.revisions.count(haiku.id) == 2
    copy = store.duplicate(haiku.id)
    assert copy.id != haiku.id and copy.name == "Haiku (copy)"
    assert copy.task == haiku.task and copy.plan == edited.plan and copy.caps == haiku.caps
    assert copy.run_ids == [] and store.get(haiku.id).run_ids == ["run-a", "run-bb"]
    assert store.revisions.count(copy.id) == 1
    assert store.duplicate(haiku.id, name="Second").name == "Second"


def test_search_matches_name_or_task_in_any_case_most_recent_first(data):
    workspace, haiku, fruit = data
    store = workspace.sessions
    assert [s.id for s in store.search("AUTUMN")] == [haiku.id]  # in the task
    assert [s.id for s in store.search("fRuIt")] == [fruit.id]  # in the name
    assert [s.id for s in store.search("")] == [fruit.id, haiku.id]
    store.rename(haiku.id, "Haiku about fruit")
    assert [s.id for s in store.search("fruit")] == [haiku.id, fruit.id]  # newest first
    assert store.search("no such words") == []


def test_deleting_runs_of_a_session_with_a_live_run_is_refused_and_deletes_nothing(data):
    workspace, haiku, _ = data
    record_run(workspace, haiku, "run-live", finished=False)  # this process: alive
    before = trace_counts(workspace)
    with pytest.raises(TraceStoreError, match="run-live"):
        workspace.delete_session(haiku.id, delete_runs=True)
    assert trace_counts(workspace) == before
    assert workspace.sessions.exists(haiku.id)


# -- the command line ------------------------------------------------------------------------
def test_sessions_lists_by_default_and_searches(data):
    workspace, haiku, fruit = data
    listed = cli(workspace.root, "sessions")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [fruit.id, haiku.id]
    assert "2 runs  Haiku" in lines[1]
    found = cli(workspace.root, "sessions", "search", "AUTUMN")
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()] == [haiku.id]


def test_rename_duplicate_and_delete_with_runs_from_the_command_line(data):
    workspace, haiku, fruit = data
    renamed = cli(workspace.root, "sessions", "rename", haiku.id, "Autumn haiku")
    assert renamed.returncode == 0, renamed.stderr
    assert workspace.sessions.get(haiku.id).name == "Autumn haiku"

    copied = cli(workspace.root, "sessions", "duplicate", haiku.id, "--name", "Spare")
    assert copied.returncode == 0, copied.stderr
    spare = next(s for s in workspace.sessions.list() if s.name == "Spare")
    assert spare.id in copied.stdout and spare.run_ids == []

    deleted = cli(workspace.root, "sessions", "delete", haiku.id, "--with-runs")
    assert deleted.returncode == 0, deleted.stderr
    assert "and 2 run(s)" in deleted.stdout
    assert {s.id for s in workspace.sessions.list()} == {fruit.id, spare.id}
    assert trace_counts(workspace) == (0, 0, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["sessions", "delete", "no-such-id"],
            "error: No saved session with id 'no-such-id'.",
            id="delete unknown id",
        ),
        pytest.param(
            ["sessions", "duplicate", "no-such-id"],
            "No saved session with id 'no-such-id'.",
            id="duplicate unknown id",
        ),
        pytest.param(
            ["sessions", "rename", "{haiku}", " "],
            "error: A session name must not be blank.",
            id="blank name",
        ),
        pytest.param(
            ["export-session", "{haiku}", "-o", "{out}", "--run", "run-zz"],
            "no run 'run-zz'",
            id="export of an unknown run",
        ),
    ],
)
def test_refused_commands_print_one_error_line_and_exit_non_zero(
    data, tmp_path, monkeypatch, capsys, argv, message
):
    # In process (``main`` is what the script calls): a subprocess per case costs seconds.
    import run

    workspace, haiku, _ = data
    monkeypatch.setenv("ARBOR_DATA_DIR", str(workspace.root))
    out = tmp_path / "refused.arbor"
    argv = [arg.format(haiku=haiku.id, out=out) for arg in argv]
    assert run.main(argv) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert captured.out == ""
    assert [s.name for s in workspace.sessions.list()] == ["Fruit", "Haiku"]
    assert not out.exists()


def test_export_session_then_import_session_into_another_data_dir(data, tmp_path):
    workspace, haiku, _ = data
    bundle = tmp_path / "haiku.arbor"
    exported = cli(workspace.root, "export-session", haiku.id, "-o", str(bundle), "--run", "run-bb")
    assert exported.returncode == 0, exported.stderr
    assert f"exported session {haiku.id} with 1 run(s) to {bundle}" in exported.stdout
    assert zipfile.is_zipfile(bundle)

    other = tmp_path / "other"
    imported = cli(other, "import-session", str(bundle))
    assert imported.returncode == 0, imported.stderr
    assert "1 run(s) imported" in imported.stdout and "imported run-bb" in imported.stdout
    elsewhere = Workspace(other)
    assert elsewhere.sessions.get(haiku.id).run_ids == ["run-bb"]
    assert [r["run_id"] for r in elsewhere.traces.runs()] == ["run-bb"]
    assert elsewhere.traces.run("run-bb")["origin"].startswith("imported from haiku.arbor on ")


def test_importing_a_corrupt_file_exits_non_zero_and_changes_nothing(data, tmp_path):
    workspace, haiku, _ = data
    good = export_session(workspace, haiku.id, tmp_path / "good.arbor").path.read_bytes()
    broken = tmp_path / "broken.arbor"
    broken.write_bytes(good[: len(good) - 100])  # the end of the archive is cut off
    other = Workspace(tmp_path / "other")
    make_session(other, "Already here", "x")
    proc = cli(other.root, "import-session", str(broken))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: broken.arbor is not an Arbor session file (not a zip archive): it starts like"
        " one, but is damaged or truncated (File is not a zip file)."
    ]
    assert proc.stdout == ""
    assert [s.name for s in other.sessions.list()] == ["Already here"]
    assert trace_counts(other) == (0, 0, 0)
