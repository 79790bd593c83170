"""`run.py playground RUN_ID NODE` on the real bundled model: variants of a recorded node, as
JSON or streamed, recorded as a playground run; bad input is one `error:` line and exit 2."""

from __future__ import annotations

import json

import pytest

import run
from engine.plan import Node, Plan
from engine.run.budget import RunCaps
from storage.workspace import Workspace
from tests.support.cli import run_cli

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    data = tmp_path_factory.mktemp("pg-cli-data")
    plan = Plan(
        task="Name the capital of France.",
        root=Node(
            id="root",
            title="France",
            instruction="Summarise the answer.",
            children=[Node(id="s1", title="Capital", instruction="What is the capital of France?")],
        ),
    )
    result = Workspace(data).run_plan(plan, RunCaps(max_tokens_per_node=24))
    return data, result.run_id


def test_two_variants_as_json(recorded):
    data, run_id = recorded
    done = run_cli(
        data, "playground", run_id, "s1", "--variants", "2", "--temperature", "0.6",
        "--max-tokens", "24", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    variants = report["variants"]
    assert [v["variant"] for v in variants] == [1, 2]
    assert all(v["output"].strip() and v["output_tokens"] > 0 for v in variants)
    assert all(v["seconds"] > 0 and v["error"] is None for v in variants)
    assert "temperature 0.6" in variants[0]["settings"] and "seed 1" in variants[0]["settings"]
    assert "seed 2" in variants[1]["settings"]
    store = Workspace(data).traces
    playground_run = store.run(report["playground_run"])
    assert playground_run is not None and playground_run["kind"] == "playground"
    calls = store.model_calls(report["playground_run"])
    assert sorted(call["node_id"] for call in calls) == ["s1@v1", "s1@v2"]


def test_streamed_output_names_each_variant_and_its_tokens(recorded):
    data, run_id = recorded
    done = run_cli(
        data, "playground", run_id, "root", "--instruction", "Say the capital in one word.",
        "--max-tokens", "16",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "== variant 1:" in done.stdout and "instruction edited" in done.stdout
    assert "tokens in" in done.stdout and "recorded as run playground-" in done.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["no-such-run", "s1"], "No run 'no-such-run'"),
        (["RUN", "zz"], "No node 'zz'"),
        (["RUN", "s1", "--variants", "0"], "between 1 and 8"),
        (["RUN", "s1", "--temperature", "7"], "temperature"),
        (["RUN", "s1", "--model", "/no/such.gguf"], "neither a model in the registry"),
        (["RUN", "s1", "--instruction", "{{ deps.x"], "template"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(recorded, monkeypatch, capsys, args, words):
    data, run_id = recorded
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    args = [run_id if arg == "RUN" else arg for arg in args]
    assert run.main(["playground", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
