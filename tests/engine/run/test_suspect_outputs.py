"""Outputs that are not answers make a node, and its run, "suspect" everywhere.

Logic on a scripted backend (best-of-N and self-consistency skip flagged samples, a parent
quoting its children is no echo, the run's status and summary), then the real bundled model in
chat format: it echoes, the run ends "suspect", the reason is in the DuckDB trace file, the spans
view and the CLI's output.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.compute_config import SelectorConfig, StrategyConfig
from engine.plan.core import single_node_plan
from engine.run.budget import RunCaps
from engine.run.events import ModelCallFinished, NodeFinished, RunFinished, is_answered
from engine.run.executor import execute_plan, suspect_summary
from engine.run.node_calls import sample_seeds
from storage.traces import TraceStore

URL = "http://scripted.invalid/v1"
#: A sample scripted as ECHO answers with its own prompt, the way the bundled model does.
ECHO = "<echo>"


class Scripted(Backend):
    """Samples by index (``ECHO``: the prompt back); any node's output by node title."""

    def __init__(self, samples: list[str] | None = None, by_title: dict[str, str] | None = None):
        self.label = "scripted"
        self.samples = samples or ["an answer"]
        self.by_title = by_title or {}
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = messages[-1]["content"]
        base = sample_seeds(None, 0, 1)[0]
        index = 0 if config.seed is None else (config.seed - base) // 7919
        out = self.samples[index % len(self.samples)]
        for title, output in self.by_title.items():
            if f"Your step: {title}\n" in text:
                out = output
        if out == ECHO:
            out = text
        return Completion(out, Usage(self.count_tokens(text), 10), 0.0, self.label, "stop")


def one_node(strategy: StrategyConfig | None = None) -> Plan:
    return Plan(
        task="What is 7 + 5? Give the number.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Add seven and five and give the sum as a number.",
            strategy=strategy or StrategyConfig(),
        ),
        default_model=ModelRef(kind="remote", base_url=URL, model="m"),
    )


def run(plan: Plan, backend: Backend, **kw: Any):
    events: list[Any] = []
    result = execute_plan(
        plan, RunCaps(), backend_factory=lambda ref: backend, listeners=[events.append], **kw
    )
    calls = [e for e in events if isinstance(e, ModelCallFinished)]
    nodes = {e.node_id: e for e in events if isinstance(e, NodeFinished)}
    return result, calls, nodes, events


def test_best_of_n_selects_a_clean_sample_over_echoes():
    # The length selector would pick the longest sample: the echo, were it not skipped.
    backend = Scripted([ECHO, "12", ECHO, "It is 12."])
    strategy = StrategyConfig(
        kind="best_of_n", samples=4, selector=SelectorConfig(kind="expression", expression="length")
    )
    result, calls, nodes, _ = run(one_node(strategy), backend)
    assert result.answer == "It is 12."
    assert result.status == "completed" and result.suspects == {}
    assert "2 of 4 samples skipped by the output check" in (nodes["root"].note or "")
    selected = [c for c in calls if c.selected]
    assert [c.sample_index for c in selected] == [3]
    assert all(c.score is None for c in calls if c.sample_index in (0, 2))  # not scored


def test_best_of_n_keeps_an_echo_when_every_sample_is_one_and_the_run_is_suspect():
    backend = Scripted([ECHO])
    strategy = StrategyConfig(kind="best_of_n", samples=2)
    result, _, nodes, events = run(one_node(strategy), backend)
    assert result.answer and "Your step: Answer" in result.answer
    assert result.status == "suspect" and result.answered
    assert nodes["root"].suspect is not None
    assert nodes["root"].suspect.startswith("echoes the prompt (")
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.status == "suspect"
    assert finished.stop_reason == f"1 suspect node: root {nodes['root'].suspect}"


def test_self_consistency_does_not_count_the_votes_of_echoes():
    backend = Scripted([ECHO, "12", ECHO, "12", ECHO])
    strategy = StrategyConfig(kind="self_consistency", samples=5, early_stop=False)
    result, calls, nodes, _ = run(one_node(strategy), backend)
    assert result.answer == "12" and result.status == "completed"
    assert "3 of 5 samples skipped by the output check" in (nodes["root"].note or "")
    assert nodes["root"].agreement == 1.0  # among the counted samples
    assert sum(1 for c in calls if c.vote) == 5  # every vote is still recorded


def test_a_parent_quoting_its_children_is_not_an_echo_but_copying_its_prompt_is():
    long_a = "Apples grow on trees in cool climates and are picked in the autumn months."
    long_b = "Carrots grow under the ground and are pulled up when their tops are large."
    plan = Plan(
        task="Name a fruit and a vegetable.",
        root=Node(
            id="root",
            title="Combine",
            instruction="Combine the results in one paragraph.",
            children=[
                Node(id="fruit", title="Fruit", instruction="Describe a fruit."),
                Node(id="veg", title="Vegetable", instruction="Describe a vegetable."),
            ],
        ),
        default_model=ModelRef(kind="remote", base_url=URL, model="m"),
    )
    quoting = Scripted(
        by_title={"Fruit": long_a, "Vegetable": long_b, "Combine": f"{long_a} {long_b}"}
    )
    result, *_ = run(plan, quoting)
    assert result.status == "completed", result.stop_reason
    echoing = Scripted(by_title={"Fruit": long_a, "Vegetable": ECHO, "Combine": "Both grow."})
    result, _, nodes, _ = run(plan, echoing)
    assert result.status == "suspect" and list(result.suspects) == ["veg"]
    assert result.stop_reason == suspect_summary({"veg": nodes["veg"].suspect})
    assert result.stop_reason.startswith("1 suspect node: veg echoes the prompt (")


def test_the_summary_names_every_suspect_node():
    summary = suspect_summary({"s1": "echoes the prompt", "root": "cut off at the token limit"})
    assert summary == "2 suspect nodes: s1 echoes the prompt; root cut off at the token limit"
    assert is_answered("suspect") and is_answered("completed") and not is_answered("failed")


def test_a_suspect_run_is_recorded_in_the_trace_store(tmp_path):
    plan = one_node(StrategyConfig(kind="best_of_n", samples=2))
    backend = Scripted([ECHO])
    store = TraceStore(tmp_path / "traces.duckdb")
    result = execute_plan(
        plan, RunCaps(), backend_factory=lambda ref: backend, listeners=[store.record]
    )
    assert result.status == "suspect" and not result.warnings, result.warnings
    run = store.run(result.run_id)
    assert run["status"] == "suspect" and run["stop_reason"] == result.stop_reason
    [node] = store.node_executions(result.run_id)
    assert node["suspect"] == result.suspects["root"]
    with store.connect() as con:
        spans = con.execute(
            "SELECT span_kind, status_code, status_message, arbor_suspect FROM spans"
            " WHERE run_id = ? AND span_kind IN ('run', 'node') ORDER BY span_kind DESC",
            [result.run_id],
        ).fetchall()
    assert spans[0] == ("run", "OK", result.stop_reason, result.stop_reason)
    assert spans[1][:2] == ("node", "OK")
    assert spans[1][2] == f"suspect: {node['suspect']}" and spans[1][3] == node["suspect"]


# -- the real bundled model --------------------------------------------------------------------

#: The one-node plan whose chat prompt the bundled model echoed when the stored outputs were
#: collected (``tests/engine/data/output_check``): same prompt, seed and settings.
CHAT_PLAN = single_node_plan("Explain what photosynthesis is to a ten-year-old.").model_copy(
    update={
        "default_generation": GenerationConfig(
            prompt_format="chat", temperature=0.2, seed=1, max_tokens=160
        )
    }
)


@pytest.mark.model
def test_a_chat_run_on_the_bundled_model_ends_suspect_in_the_trace_file_and_the_cli(tmp_path):
    from tests.support.cli import run_cli

    data = tmp_path / "data"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(CHAT_PLAN.to_json(), encoding="utf-8")
    proc = run_cli(data, "run", str(plan_file), "--no-cache")
    assert proc.returncode == 0, proc.stderr  # a suspect run has an answer
    assert "status: suspect (1 suspect node: root echoes the prompt" in proc.stdout
    assert "suspect: root: echoes the prompt (" in proc.stdout
    store = TraceStore(data / "traces.duckdb")
    [run] = store.runs()
    assert run["status"] == "suspect"
    [node] = store.node_executions(run["run_id"])
    assert node["status"] == "done" and node["suspect"].startswith("echoes the prompt (")
    assert node["suspect"] in run["stop_reason"]

    again = run_cli(data, "run", str(plan_file), "--json")  # replayed from the cache
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["status"] == "suspect" and summary["answered"] is True
    assert summary["suspect"]["root"].startswith("echoes the prompt (")
    assert summary["nodes"]["root"]["reused_from"] == run["run_id"]
