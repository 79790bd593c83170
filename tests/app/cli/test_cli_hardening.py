"""The command line with inputs a careless or hostile user gives: YAML plans, caps out of range,
names with terminal escapes, a run resumed twice, imported runs. Each one gets a clear line
and the right exit status; nothing is lost (issue: hardening, items 6 and 7)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from engine.plan import GenerationConfig, Node, Plan
from engine.run.budget import RunCaps
from engine.run.events import RunStarted
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.cli import run_cli

QUESTION = "Question: What is the capital of France?\nAnswer:"


def _tiny_plan() -> Plan:
    return Plan(
        task="Name the capital of France.",
        root=Node(
            id="root",
            title="Capital",
            instruction=QUESTION,
            generation=GenerationConfig(max_tokens=6, temperature=0.0, prompt_format="completion"),
        ),
    )


@pytest.mark.model
def test_run_takes_a_yaml_plan_file(tmp_path):
    from engine.plan.files import export_plan

    path = tmp_path / "plan.yaml"
    path.write_text(export_plan(_tiny_plan(), "yaml"), encoding="utf-8")
    result = run_cli(tmp_path / "data", "run", str(path))
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--max-parallel", "0", "--max-parallel must be at least 1 (got 0)"),
        ("--total-tokens", "-5", "--total-tokens must be at least"),
        ("--cost-cap", "-1", "--cost-cap must be at least 0"),
        ("--time-cap", "0", "--time-cap must be at least"),
    ],
)
def test_caps_out_of_range_are_named_in_the_commands_words(tmp_path, flag, value, words):
    path = tmp_path / "plan.json"
    path.write_text(_tiny_plan().to_json(), encoding="utf-8")
    result = run_cli(tmp_path / "data", "run", str(path), flag, value)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert words in result.stderr
    for noise in ("pydantic", "http", "Traceback", "ValidationError"):
        assert noise not in result.stderr


def test_session_names_with_terminal_escapes_are_printed_escaped(tmp_path):
    data = tmp_path / "data"
    name = "evil\x1b[2J\x1b[31mred\nsecond line\x07"
    Workspace(data).sessions.save(ArborSession(name=name, task="t", plan=_tiny_plan()))
    listed = run_cli(data, "sessions", "list")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "evil\\x1b[2J\\x1b[31mred\\nsecond line\\x07" in listed.stdout
    assert len(listed.stdout.strip().splitlines()) == 1  # one session, one line


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def _record_dead_run(store, run_id: str) -> None:
    """A run of the tiny plan left ``running`` by a process that is gone (shown interrupted)."""
    store.record(
        RunStarted(
            run_id=run_id,
            session_id=None,
            task="t",
            plan_json=_tiny_plan().to_json(),
            caps_json=RunCaps().model_dump_json(),
            started_at=datetime.now(UTC),
            pid=_dead_pid(),
        )
    )


@pytest.mark.model
def test_an_interrupted_run_resumes_once_and_the_list_says_where_it_went(tmp_path):
    data = tmp_path / "data"
    store = Workspace(data).traces
    _record_dead_run(store, "run-killed")
    before = run_cli(data, "runs")
    assert "<- run.py resume run-killed" in before.stdout

    first = run_cli(data, "resume", "run-killed")
    assert first.returncode == 0, first.stderr
    again = run_cli(data, "resume", "run-killed")
    assert again.returncode == 2
    assert "already resumed as" in again.stderr and "Traceback" not in again.stderr

    after = run_cli(data, "runs")
    line = next(ln for ln in after.stdout.splitlines() if ln.startswith("run-killed"))
    assert "-> resumed as run-" in line and "run.py resume" not in line


def test_imported_runs_are_marked_read_only_in_the_list(tmp_path):
    data = tmp_path / "data"
    store = Workspace(data).traces
    _record_dead_run(store, "run-imported")
    con = duckdb.connect(str(store.path))
    con.execute("UPDATE runs SET origin = 'imported from a.arbor', status = 'interrupted'")
    con.close()
    listed = run_cli(data, "runs")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("run-imported"))
    assert "imported, read-only (imported from a.arbor)" in line
    assert "run.py resume" not in line


def test_a_corrupt_session_store_is_one_line_and_left_as_it_is(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    store = data / "sessions.sqlite"
    store.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    before = store.read_bytes()
    plan = data.parent / "plan.json"  # a good file to import: the store is what fails
    plan.write_text(Plan(task="t", root=Node(id="root", title="Root")).model_dump_json())
    for command in (["sessions"], ["import-session", str(plan)]):
        result = run_cli(data, *command)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "session store" in lines[0] and "cannot be read" in lines[0]
    # A command that needs no session does not open the store, so it is not stopped by it.
    result = run_cli(data, "runs")
    assert result.returncode == 0 and "no runs recorded yet" in result.stderr, result.stderr
    assert store.read_bytes() == before


def test_the_ui_listens_on_loopback_only_unless_told_otherwise(tmp_path, monkeypatch):
    from app.cli import build_parser
    from tests.support.servers import serve_ui

    monkeypatch.delenv("ARBOR_HOST", raising=False)
    assert build_parser().parse_args([]).host == "127.0.0.1"
    with serve_ui(tmp_path / "data", tmp_path / "ui.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                    listening.append(address)
    # 0100007F is 127.0.0.1 (little-endian); a wildcard bind would show 00000000 or ::
    assert listening and set(listening) == {"0100007F"}, listening


@pytest.mark.parametrize(
    "command",
    [
        ["decompose", "Plan a picnic"],
        ["export", "{plan}"],
        ["export-run", "run-x"],
        ["export-session", "session-x"],
        ["allocate", "{plan}"],
    ],
    ids=["decompose", "export", "export-run", "export-session", "allocate"],
)
def test_an_output_into_a_missing_folder_or_onto_a_folder_is_refused_before_any_work(
    tmp_path, command
):
    plan = tmp_path / "plan.json"
    plan.write_text(_tiny_plan().to_json(), encoding="utf-8")
    args = [part.replace("{plan}", str(plan)) for part in command]
    for target, words in ((tmp_path / "missing" / "out.json", "does not exist"),
                          (tmp_path, "is a folder")):  # fmt: skip
        result = run_cli(tmp_path / "data", *args, "-o", str(target))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert words in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""  # nothing was decomposed, exported or printed first
