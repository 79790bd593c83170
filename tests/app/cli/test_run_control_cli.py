"""``run.py run --pin/--break-before``, ``resume --set-instruction`` and ``fork`` as a user runs
them: subprocesses without a terminal, over their own data directory, on the real bundled model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.services.run_control import parse_assignment
from engine.errors import PlanError
from engine.plan import GenerationConfig, Node, Plan
from storage.workspace import Workspace
from tests.support.cli import run_cli as _cli

RUN_ID = re.compile(r"^run id: (run-\S+)$", re.MULTILINE)
CAPS = ("--total-tokens", "4000", "--max-tokens-per-node", "24")


def _plan() -> Plan:
    """root <- pick, describe (describe reads pick's output)."""
    return Plan(
        task="Name a colour and describe it.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Say the colour and its description in one sentence.",
            children=[
                Node(id="pick", title="Pick a colour", instruction="Name one colour."),
                Node(
                    id="describe",
                    title="Describe it",
                    instruction="Describe the colour in a few words.",
                    depends_on=["pick"],
                ),
            ],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=24, seed=5),
    )


def _plan_file(tmp_path: Path, plan: Plan | None = None) -> str:
    path = tmp_path / "plan.json"
    path.write_text((plan or _plan()).to_json(), encoding="utf-8")
    return str(path)


def _calls(workspace: Workspace, run_id: str) -> dict[str, list[dict]]:
    calls: dict[str, list[dict]] = {}
    for row in workspace.traces.model_calls(run_id):
        calls.setdefault(row["node_id"], []).append(row)
    return calls


def _run_id(stdout: str) -> str:
    found = RUN_ID.search(stdout)
    assert found, stdout
    return found.group(1)


@pytest.mark.model
def test_a_pinned_node_makes_no_call_and_its_dependants_prompts_hold_the_pin(
    tmp_path, bundled_path
):
    data = tmp_path / "data"
    pin_file = tmp_path / "pin.txt"
    pin_file.write_text("Ultramarine-77", encoding="utf-8")
    proc = _cli(data, "run", _plan_file(tmp_path), "--pin", f"pick=@{pin_file}", *CAPS)
    assert proc.returncode == 0, proc.stderr
    run_id = _run_id(proc.stdout)
    workspace = Workspace(data)
    calls = _calls(workspace, run_id)
    assert "pick" not in calls  # no model call for the pinned node
    assert all("Ultramarine-77" in c["prompt"] for c in calls["describe"] + calls["root"])
    nodes = {r["node_id"]: r for r in workspace.traces.node_executions(run_id)}
    assert nodes["pick"]["pinned"] and nodes["pick"]["output"] == "Ultramarine-77"
    assert not nodes["describe"]["pinned"] and nodes["describe"]["output"]
    # the pin is in the OTLP export as a span attribute of the node
    otlp = tmp_path / "run.otlp.json"
    assert _cli(data, "export-run", run_id, "-o", str(otlp)).returncode == 0
    spans = json.loads(otlp.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    pinned = [
        s for s in spans if {"key": "arbor.pinned", "value": {"boolValue": True}} in s["attributes"]
    ]
    assert [s["name"] for s in pinned] and len(pinned) == 1


@pytest.mark.model
def test_a_run_paused_before_a_node_resumes_with_an_edited_instruction(tmp_path, bundled_path):
    data = tmp_path / "data"
    proc = _cli(data, "run", _plan_file(tmp_path), "--break-before", "describe", *CAPS)
    assert proc.returncode == 3, proc.stderr
    paused_id = _run_id(proc.stdout)
    assert "status: paused" in proc.stdout and f"run.py resume {paused_id}" in proc.stderr
    listing = _cli(data, "runs")
    line = next(x for x in listing.stdout.splitlines() if x.startswith(paused_id))
    assert " paused " in line
    workspace = Workspace(data)
    assert workspace.traces.run(paused_id)["paused_node"] == "describe"
    assert set(_calls(workspace, paused_id)) == {"pick"}

    new = "Describe the colour as a fruit would, NEWWORDS."
    proc = _cli(data, "resume", paused_id, "--set-instruction", f"describe={new}")
    assert proc.returncode == 0, proc.stderr
    resumed_id = _run_id(proc.stdout)
    record = workspace.traces.run(resumed_id)
    assert record["resumed_from"] == paused_id
    edits = json.loads(record["edits"])
    assert edits == [
        {
            "node_id": "describe",
            "field": "instruction",
            "old": "Describe the colour in a few words.",
            "new": new,
            "source": "resume",
        }
    ]
    calls = _calls(workspace, resumed_id)
    assert all(c["reused_from"] == paused_id for c in calls.get("pick", []))  # reused
    fresh = [c for c in calls["describe"] if not c["reused_from"]]
    assert fresh and "NEWWORDS" in fresh[0]["prompt"]
    assert record["status"] in ("completed", "suspect")


def _ten_node_plan() -> Plan:
    """root <- m0..m2, each <- two leaves: 10 nodes."""
    mids = [
        Node(
            id=f"m{i}",
            title=f"Part {i}",
            instruction=f"Combine the two notes of part {i}.",
            children=[
                Node(id=f"l{i}{j}", title=f"Note {i}{j}", instruction=f"Name fruit number {j}.")
                for j in range(2)
            ],
        )
        for i in range(3)
    ]
    return Plan(
        task="List some fruit.",
        root=Node(id="root", title="Answer", instruction="List the fruit.", children=mids),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=16, seed=3),
    )


@pytest.mark.model
def test_a_fork_from_a_leaf_calls_no_node_upstream_or_beside_it(tmp_path, bundled_path):
    data = tmp_path / "data"
    proc = _cli(data, "run", _plan_file(tmp_path, _ten_node_plan()), "--total-tokens", "9000")
    assert proc.returncode == 0, proc.stderr
    source = _run_id(proc.stdout)
    proc = _cli(data, "fork", source, "--from", "l01", "--set-instruction", "l01=Name a red fruit.")
    assert proc.returncode == 0, proc.stderr
    forked = _run_id(proc.stdout)
    summary = proc.stdout.strip().splitlines()[-1]
    assert "7 nodes reused" in summary and "3 model call(s) made" in summary, summary
    workspace = Workspace(data)
    calls = _calls(workspace, forked)
    assert set(calls) == {"l01", "m0", "root"}  # the leaf and what is downstream of it
    record = workspace.traces.run(forked)
    assert record["forked_from"] == source and record["forked_at_node"] == "l01"
    nodes = {r["node_id"]: r for r in workspace.traces.node_executions(forked)}
    assert {n for n, r in nodes.items() if r["reused_from"] == source} == {
        "l00",
        "l10",
        "l11",
        "l20",
        "l21",
        "m1",
        "m2",
    }


@pytest.mark.model
def test_a_fork_changes_a_nodes_model_and_strategy_and_reuses_the_rest(tmp_path, bundled_path):
    data = tmp_path / "data"
    proc = _cli(data, "run", _plan_file(tmp_path), *CAPS)
    assert proc.returncode == 0, proc.stderr
    source = _run_id(proc.stdout)
    change = ("--set-strategy", "describe=sc3", "--set-model", f"describe={bundled_path}")
    proc = _cli(data, "fork", source, "--from", "describe", *change)
    assert proc.returncode == 0, proc.stderr
    forked = _run_id(proc.stdout)
    workspace = Workspace(data)
    calls = _calls(workspace, forked)
    assert set(calls) == {"describe", "root"}  # pick is upstream of describe: reused
    assert len(calls["describe"]) >= 3  # self-consistency: at least its three samples
    assert {c["model"] for c in calls["describe"]} == {bundled_path.name}
    nodes = {r["node_id"]: r for r in workspace.traces.node_executions(forked)}
    assert nodes["pick"]["reused_from"] == source
    assert nodes["describe"]["strategy"].startswith("self-consistency")
    edits = json.loads(workspace.traces.run(forked)["edits"])
    assert {(e["node_id"], e["field"]) for e in edits} == {
        ("describe", "model"),
        ("describe", "strategy"),
    }
    # a node that is not in the plan, a model that is nowhere, a strategy out of range
    for bad, message in (
        (("--set-strategy", "ghost=sc3"), "no node 'ghost'"),
        (("--set-model", "describe=no-such-model"), "neither a model in the registry"),
        (("--set-strategy", "describe=sc0"), "--set-strategy describe=sc0"),
        (("--set-strategy", "describe=fast"), "unknown strategy"),
    ):
        proc = _cli(data, "fork", source, "--from", "describe", *bad)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--pin", "nope=x"), "no node 'nope'"),
        (("--pin", "pick"), "expected NODE=TEXT"),
        (("--pin", "pick=@/no/such/file.txt"), "cannot read the file"),
        (("--pin", "bad id=x"), "is not a node id"),
        (("--break-before", "ghost"), "no node 'ghost'"),
    ],
)
def test_bad_run_control_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    proc = _cli(tmp_path / "data", "run", _plan_file(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_resume_and_fork_of_an_unknown_run_exit_2(tmp_path):
    for args in (("resume", "run-x", "--set-output", "a=b"), ("fork", "run-x", "--from", "a")):
        proc = _cli(tmp_path / "data", *args)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: No run 'run-x'"), proc.stderr


node_ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")


@given(node_ids, st.text(max_size=50).filter(lambda t: not t.startswith("@")))
def test_node_equals_text_splits_at_the_first_equals_sign(node_id, text):
    assert parse_assignment(f"{node_id}={text}") == (node_id, text)


@given(st.text(max_size=40))
def test_node_equals_text_never_crashes_only_refuses(raw):
    try:
        node_id, _ = parse_assignment(raw)
    except PlanError as exc:
        assert "\n" not in str(exc).strip("\n") or "\n" in raw
    else:
        assert "=" in raw and raw.split("=", 1)[0].strip() == node_id
