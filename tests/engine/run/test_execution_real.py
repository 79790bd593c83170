"""Execution behaviours on real parts: the bundled GGUF through llama-cpp-python, a real
``llama_cpp.server`` on loopback, traces in a real DuckDB file.

Cancel interrupts a local generation; an edit re-runs only what changed; a failing branch
blocks its dependants and nothing else; a local and a remote node overlap; a headless run killed
with SIGKILL resumes from where it stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.events import ANSWERED_STATUSES, NodeProgress
from engine.run.scheduler import NodeStatus
from storage.traces import TraceStore

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[3]
CAPS = RunCaps(total_tokens=6000, max_tokens_per_node=24, max_parallel=4)


def _plan(*leaves: Node, instruction: str = "Combine the results in one sentence.") -> Plan:
    return Plan(
        task="Name things.",
        root=Node(id="root", title="Combine", instruction=instruction, children=list(leaves)),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=24, seed=7),
    )


def _leaf(node_id: str, instruction: str, **fields) -> Node:
    return Node(id=node_id, title=node_id.capitalize(), instruction=instruction, **fields)


def test_cancel_interrupts_a_local_generation_promptly(workspace):
    long_leaf = _leaf(
        "essay",
        "Write a very long essay about the history of bread.",
        generation=GenerationConfig(temperature=0.8, max_tokens=600, seed=3),
    )
    plan = _plan(long_leaf)
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, NodeProgress) and not cancel.is_set():
            cancelled_at.append(time.perf_counter())
            cancel.set()

    result = workspace.run_plan(
        plan,
        RunCaps(total_tokens=6000, max_tokens_per_node=600),
        listeners=[on_event],
        cancel=cancel,
    )
    stopped_after = time.perf_counter() - cancelled_at[0]
    assert stopped_after < 2.0, f"the generation ran on for {stopped_after:.2f} s after cancel"
    assert result.status == "cancelled"
    assert result.nodes["essay"].status is NodeStatus.CANCELLED
    assert result.nodes["root"].status is NodeStatus.SKIPPED
    calls = workspace.traces.model_calls(result.run_id)
    assert [c["status"] for c in calls] == ["cancelled"]
    assert calls[0]["output"], "the partial text streamed before the cancel is kept"
    assert workspace.traces.run(result.run_id)["status"] == "cancelled"


def test_rerun_after_an_edit_calls_only_the_changed_node_and_its_parent(workspace):
    plan = _plan(_leaf("fruit", "Name one fruit."), _leaf("veg", "Name one vegetable."))
    first = workspace.run_plan(plan, CAPS)
    assert first.status in ANSWERED_STATUSES and first.reused == []

    edited = plan.model_copy(deep=True)
    edited.node("veg").instruction = "Name one green vegetable."
    second = workspace.run_plan(edited, CAPS)
    assert second.status in ANSWERED_STATUSES
    assert second.reused == ["fruit"]
    assert sorted(second.executed) == ["root", "veg"]
    assert second.nodes["fruit"].output == first.nodes["fruit"].output
    rows = {r["node_id"]: r for r in workspace.traces.node_executions(second.run_id)}
    assert rows["fruit"]["reused_from"] == first.run_id and rows["veg"]["reused_from"] is None
    assert {c["node_id"] for c in workspace.traces.model_calls(second.run_id)} == {"veg", "root"}

    third = workspace.run_plan(edited, CAPS, rerun=["veg"])
    assert third.reused == ["fruit"] and sorted(third.executed) == ["root", "veg"]
    fourth = workspace.run_plan(edited, CAPS, use_cache=False)
    assert fourth.reused == [] and len(fourth.executed) == 3


def test_a_failing_branch_blocks_its_dependants_and_not_the_healthy_branch(workspace, tmp_path):
    missing = ModelRef(kind="local", path=str(tmp_path / "no-such-model.gguf"))
    plan = _plan(
        _leaf("broken", "Name one fruit.", model=missing),
        _leaf("uses_broken", "Say it twice.", depends_on=["broken"]),
        _leaf("healthy", "Name one colour."),
    )
    result = workspace.run_plan(plan, CAPS)
    assert result.status == "failed"
    assert result.nodes["healthy"].status is NodeStatus.DONE and result.nodes["healthy"].output
    assert result.nodes["broken"].status is NodeStatus.FAILED
    assert "no-such-model.gguf" in (result.nodes["broken"].error or "")
    for blocked in ("uses_broken", "root"):
        assert result.nodes[blocked].status is NodeStatus.BLOCKED
        assert "'broken' failed" in (result.nodes[blocked].error or "")
    rows = {r["node_id"]: r["status"] for r in workspace.traces.node_executions(result.run_id)}
    assert rows == {
        "broken": "failed",
        "uses_broken": "blocked",
        "healthy": "done",
        "root": "blocked",
    }


@pytest.mark.server
def test_a_local_node_and_a_remote_node_run_at_the_same_time(workspace, llama_server):
    remote = ModelRef(kind="remote", base_url=llama_server, model="gemma")
    plan = _plan(
        _leaf(
            "local",
            "Write three sentences about rivers.",
            generation=GenerationConfig(temperature=0.0, max_tokens=48, seed=1),
        ),
        _leaf(
            "remote",
            "Write three sentences about mountains.",
            model=remote,
            generation=GenerationConfig(temperature=0.0, max_tokens=48, seed=1),
        ),
    )
    result = workspace.run_plan(
        plan, RunCaps(total_tokens=6000, max_tokens_per_node=48), use_cache=False
    )
    assert result.status in ANSWERED_STATUSES, result.stop_reason
    calls = {c["node_id"]: c for c in workspace.traces.model_calls(result.run_id)}
    local, remote_call = calls["local"], calls["remote"]
    assert local["started_at"] < remote_call["finished_at"]
    assert remote_call["started_at"] < local["finished_at"], "the two calls did not overlap"


CHAIN_PLAN = Plan(
    task="Count slowly.",
    root=Node(
        id="root",
        title="Summary",
        instruction="Summarise the steps in one sentence.",
        children=[
            Node(id="s1", title="One", instruction="Write two sentences about the number one."),
            Node(
                id="s2",
                title="Two",
                instruction="Write two sentences about the number two.",
                depends_on=["s1"],
            ),
            Node(
                id="s3",
                title="Three",
                instruction="Write two sentences about three.",
                depends_on=["s2"],
            ),
            Node(
                id="s4",
                title="Four",
                instruction="Write two sentences about four.",
                depends_on=["s3"],
            ),
        ],
    ),
    default_generation=GenerationConfig(temperature=0.0, max_tokens=40, seed=5),
)


def _cli(*args: str, data: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "ARBOR_DATA_DIR": str(data)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_a_headless_run_killed_with_sigkill_resumes_where_it_stopped(tmp_path):
    data = tmp_path / "data"
    plan_file = tmp_path / "chain.json"
    plan_file.write_text(CHAIN_PLAN.to_json(), encoding="utf-8")
    process = _cli("run", str(plan_file), "--max-parallel", "1", data=data)
    store = TraceStore(data / "traces.duckdb", lock_wait_s=30)
    deadline = time.monotonic() + 240
    done: list[str] = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        if not (data / "traces.duckdb").exists():
            continue
        runs = store.runs()
        if runs:
            rows = store.node_executions(runs[0]["run_id"])
            done = [r["node_id"] for r in rows if r["status"] == "done"]
            if len(done) >= 2:
                break
    assert process.poll() is None, f"the run ended before it could be killed: {done}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    killed_run = store.runs()[0]["run_id"]
    kept = [r["node_id"] for r in store.node_executions(killed_run) if r["status"] == "done"]
    assert {"s1", "s2"} <= set(kept)

    listing = _cli("runs", data=data)
    out, err = listing.communicate(timeout=60)
    assert listing.returncode == 0, err
    assert killed_run in out and "interrupted" in out

    resume = _cli("resume", killed_run, data=data)
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    assert "status: completed" in out or "status: suspect" in out
    reused = next(line for line in out.splitlines() if line.startswith("reused:"))
    assert all(node in reused for node in kept)
    executed = next(line for line in out.splitlines() if line.startswith("executed:"))
    assert not any(node in executed.split(":", 1)[1].split(", ") for node in kept)
    resumed = store.runs()[0]
    assert resumed["status"] in ANSWERED_STATUSES and resumed["run_id"] != killed_run
    assert store.run(killed_run)["status"] == "interrupted"
    plan_json = json.loads(store.run(resumed["run_id"])["plan_json"])
    assert plan_json["root"]["id"] == "root"
