"""`run.py export-run` and `run.py query` over a real trace store (runs from the in-process fake
model: what is under test is the command line, not model behaviour)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import run
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.workspace import Workspace
from tests.support.fake_backend import fake_factory, fake_models, tree

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    store = Workspace(tmp_path).traces
    factory, _ = fake_factory()
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]}))
    with store.writer() as writer:
        result = execute_plan(plan, RunCaps(), backend_factory=factory, listeners=[writer])
    return result.run_id


def test_export_run_writes_otlp_json_and_csv_files(recorded, tmp_path, capsys):
    otlp = tmp_path / "run.json"
    assert run.main(["export-run", recorded, "-o", str(otlp)]) == 0
    spans = json.loads(otlp.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 1 + 3 + 3  # the run, 3 nodes, 3 calls
    csv = tmp_path / "run.csv"
    assert run.main(["export-run", recorded, "--format", "csv", "-o", str(csv)]) == 0
    assert duckdb.sql(f"SELECT count(*) FROM read_csv('{csv}')").fetchall() == [(7,)]
    assert "exported run" in capsys.readouterr().out


def test_query_prints_a_table_and_refuses_writes_with_exit_2(recorded, capsys):
    assert run.main(["query", "SELECT node_id FROM node_executions ORDER BY node_id"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["node_id", "a", "b", "root"] and "3 row(s)" in out.err
    assert run.main(["query", "--saved", "Runs per day and status", "--csv"]) == 0
    assert capsys.readouterr().out.startswith("day,status,runs,tokens,cost_usd")
    assert run.main(["query", "DROP TABLE runs"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert run.main(["query", "--saved", "nothing like it"]) == 2
    assert Workspace().traces.run(recorded) is not None  # nothing was dropped


def test_export_of_an_unknown_run_exits_2_and_writes_nothing(recorded, tmp_path):
    target = tmp_path / "nope.json"
    process = subprocess.run(
        [sys.executable, "run.py", "export-run", "no-such-run", "-o", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert process.returncode == 2 and "No run 'no-such-run'" in process.stderr
    assert not target.exists()
