"""``run.py annotate`` and ``run.py annotations`` as a user runs them (subprocesses over a data
directory), on a run of the real bundled model: record it, annotate the bad node, add the
correction to a dataset, export the session to ``.arbor``, import it into a fresh data
directory and find the annotation there, and in the run's OTLP JSON export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.plan import GenerationConfig, Node, Plan
from engine.tune.datasets import load_dataset
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.cli import run_cli

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, bundled_path) -> dict[str, Any]:
    """A data dir whose saved session was run once with the bundled model by ``run.py run``."""
    folder = tmp_path_factory.mktemp("annotate-cli")
    data = folder / "data"
    plan = Plan(
        task="What is the capital of Japan?",
        root=Node(
            id="root",
            title="Answer",
            instruction="Answer the question with the city's name.",
            children=[Node(id="facts", title="Facts", instruction="Name the capital of Japan.")],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=12, seed=5),
    )
    session = Workspace(data).sessions.save(ArborSession(name="Capital", task=plan.task, plan=plan))
    session_file = folder / "capital.json"
    session_file.write_text(session.to_file_text(), encoding="utf-8")
    done = run_cli(data, "run", str(session_file), "--json")
    assert done.returncode in (0, 1), done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    return {"folder": folder, "data": data, "session": session, "run_id": run_id}


def _error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-run", "root", "--label", "bad"], "No run 'no-such-run'"),
        (["{run}", "nope", "--label", "bad"], "has no node 'nope'"),
        (["{run}", "root", "--label", "meh"], "good or bad"),
        (["{run}", "root", "--label", "bad", "--score", "7"], "between 0 and 1"),
        (["{run}", "root", "--label", "bad", "--score", "high"], "number from 0 to 1"),
        (["{run}", "root", "--label", "bad", "--call", "c-404"], "no model call 'c-404'"),
        (["{run}", "root", "--label", "bad", "--correct", "x", "--dataset", "../x"], "name"),
        (["{run}", "root", "--label", "bad", "--dataset", "fixes"], "needs a corrected output"),
    ],
)
def test_bad_input_is_one_error_line_with_status_2(recorded, args, message) -> None:
    args = [a.replace("{run}", recorded["run_id"]) for a in args]
    line = _error_line(run_cli(recorded["data"], "annotate", *args))
    assert message in line
    assert Workspace(recorded["data"]).traces.annotations(recorded["run_id"]) == []


def test_listing_an_unknown_run_is_one_error_line(recorded) -> None:
    assert "No run 'nope'" in _error_line(run_cli(recorded["data"], "annotations", "nope"))


def test_annotate_export_import_and_otlp_on_a_real_run(recorded, tmp_path: Path) -> None:
    data, run_id = recorded["data"], recorded["run_id"]
    answer = Workspace(data).traces.node_executions(run_id)
    root_output = next(n["output"] for n in answer if n["node_id"] == "root")
    done = run_cli(
        data,
        "annotate",
        run_id,
        "root",
        "--label",
        "bad",
        "--score",
        "0.1",
        "--note",
        f"the base model answered {root_output[:30]!r}",
        "--correct",
        "Tokyo",
        "--dataset",
        "capitals-fixed",
    )
    assert done.returncode == 0, done.stderr
    assert "is bad" in done.stdout and "capitals-fixed.jsonl" in done.stdout
    dataset = load_dataset(data / "datasets" / "capitals-fixed.jsonl")
    assert [e.expected for e in dataset.examples] == ["Tokyo"]
    assert "Answer the question" in dataset.examples[0].input, "the node's rendered prompt"

    listed = run_cli(data, "annotations", run_id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["node_id"], r["label"], r["score"]) for r in rows] == [("root", "bad", 0.1)]
    table = run_cli(data, "annotations", run_id)
    assert "root" in table.stdout and "bad" in table.stdout

    bundle = tmp_path / "capital.arbor"
    exported = run_cli(data, "export-session", recorded["session"].id, "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr
    fresh = tmp_path / "fresh"
    imported = run_cli(fresh, "import-session", str(bundle))
    assert imported.returncode == 0, imported.stderr
    carried = run_cli(fresh, "annotations", run_id, "--json")
    assert [json.loads(line) for line in carried.stdout.splitlines()] == rows

    otlp = tmp_path / "run.json"
    assert run_cli(fresh, "export-run", run_id, "-o", str(otlp)).returncode == 0
    spans = json.loads(otlp.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    node = next(s for s in spans if s["name"] == "invoke_agent Answer")
    attributes = {a["key"]: a["value"] for a in node["attributes"]}
    assert attributes["arbor.annotation.label"] == {"stringValue": "bad"}
    assert attributes["arbor.annotation.score"] == {"doubleValue": 0.1}
    assert attributes["arbor.annotation.corrected_output"] == {"stringValue": "Tokyo"}
    assert [e["name"] for e in node["events"]] == ["arbor.annotation"]
