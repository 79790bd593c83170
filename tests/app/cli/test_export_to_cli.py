"""`run.py export-run RUN_ID --to URL`: a recorded run sent to a real loopback OTLP receiver
(the spans the JSON export has, headers from OTEL_EXPORTER_OTLP_HEADERS), and one-line errors
with exit status 2 for a receiver that is down or refuses, never showing a header value."""

from __future__ import annotations

import json

import pytest

import run
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage import otlp_live
from storage.workspace import Workspace
from tests.support.fake_backend import fake_factory, fake_models, tree
from tests.support.otlp_receiver import OtlpReceiver, closed_port

SECRET = "key-that-must-not-show"


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)  # recorded before: nothing sent live
    otlp_live.reset()
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{SECRET}")
    store = Workspace(tmp_path).traces
    factory, _ = fake_factory()
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]}))
    with store.writer() as writer:
        result = execute_plan(plan, RunCaps(), backend_factory=factory, listeners=[writer])
    return result.run_id


def test_export_run_to_sends_the_runs_spans(recorded, tmp_path, capsys):
    otlp = tmp_path / "run.json"
    assert run.main(["export-run", recorded, "-o", str(otlp)]) == 0
    in_file = json.loads(otlp.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    with OtlpReceiver() as receiver:
        base = receiver.endpoint.removesuffix("/v1/traces")  # a base URL gets /v1/traces
        assert run.main(["export-run", recorded, "--to", base]) == 0
    out = capsys.readouterr().out
    assert f"sent {len(in_file)} spans of run {recorded}" in out and SECRET not in out
    assert [r["path"] for r in receiver.requests] == ["/v1/traces"]
    assert receiver.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    sent = {(s.span_id.hex(), s.parent_span_id.hex(), s.name) for s in receiver.spans}
    assert sent == {(s["spanId"], s.get("parentSpanId", ""), s["name"]) for s in in_file}


@pytest.mark.parametrize("trouble", ["down", "500"])
def test_export_run_to_a_receiver_in_trouble_is_one_line_and_exit_2(recorded, capsys, trouble):
    if trouble == "down":
        code = run.main(["export-run", recorded, "--to", f"http://127.0.0.1:{closed_port()}"])
    else:
        with OtlpReceiver(status=500) as receiver:
            code = run.main(["export-run", recorded, "--to", receiver.endpoint])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: OTLP export to http://127.0.0.1:") and err.count("\n") == 1
    assert SECRET not in err and "authorization=***" in err
    if trouble == "500":
        assert "500" in err


def test_export_run_to_refuses_bad_input_in_one_line(recorded, capsys):
    assert run.main(["export-run", recorded, "--to", "not-a-url"]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err
    assert run.main(["export-run", "no-such-run", "--to", "http://127.0.0.1:9/v1/traces"]) == 2
    assert "No run 'no-such-run'" in capsys.readouterr().err
    assert run.main(["export-run", recorded, "--to", "http://h/", "--format", "csv"]) == 2
    assert "--to sends OTLP" in capsys.readouterr().err


# -- live export from a command-line run (the bundled model) ---------------------------------
def _plan_file(folder):
    from engine.plan import GenerationConfig, Node, Plan

    plan = Plan(
        task="Name one fruit.",
        root=Node(id="root", title="Fruit", instruction="Name one fruit."),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=5),
    )
    path = folder / "plan.json"
    path.write_text(plan.to_json(), encoding="utf-8")
    return path


@pytest.mark.model
def test_a_command_line_run_is_sent_before_the_process_exits(tmp_path, monkeypatch):
    from tests.support.cli import run_cli

    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        done = run_cli(tmp_path / "data", "run", str(_plan_file(tmp_path)), "--json")
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        spans = list(receiver.spans)  # the process has exited: what arrived, arrived
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path / "data"))
    expected = run_to_otlp_spans(Workspace(tmp_path / "data"), run_id)
    assert sorted(s.span_id.hex() for s in spans) == sorted(s["spanId"] for s in expected)
    assert "OTLP" not in done.stderr


@pytest.mark.model
def test_a_command_line_run_with_the_receiver_down_completes_and_says_so_once(
    tmp_path, monkeypatch
):
    from tests.support.cli import run_cli

    url = f"http://127.0.0.1:{closed_port()}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    done = run_cli(tmp_path / "data", "run", str(_plan_file(tmp_path)), "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert done.stderr.count("OTLP export to") == 1 and url in done.stderr
    assert SECRET not in done.stderr
    with Workspace(tmp_path / "data").traces.connect() as con:
        counts = [
            con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchone()[0]
            for table in ("runs", "node_executions", "model_calls")
        ]
    assert counts == [1, 1, 1]


def run_to_otlp_spans(workspace: Workspace, run_id: str) -> list[dict]:
    from storage.trace_export import run_to_otlp

    return run_to_otlp(workspace.traces, run_id)["resourceSpans"][0]["scopeSpans"][0]["spans"]
