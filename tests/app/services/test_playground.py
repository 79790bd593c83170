"""The playground service on the real bundled model: a recorded 3-node run, then variants of its
root with the children's outputs taken from that run (no new calls for them), recorded as a
``playground`` run, and the winning variant applied back to the plan (undoable)."""

from __future__ import annotations

import pytest

from app.services import playground
from engine.errors import PlanError
from engine.output_check import check_output
from engine.plan import Node, Plan
from engine.plan.history import PlanHistory
from engine.prompts import DEFAULT_ROOT_INSTRUCTION
from engine.run.budget import RunCaps
from engine.run.playground import prompt_without
from storage.traces.playground_runs import PLAYGROUND_KIND
from storage.workspace import Workspace

pytestmark = pytest.mark.model

TASK = "Write a short note about Japan"


def _plan() -> Plan:
    return Plan(
        task=TASK,
        root=Node(
            id="root",
            title="Note about Japan",
            instruction=DEFAULT_ROOT_INSTRUCTION,
            children=[
                Node(id="s1", title="Capital", instruction="What is the capital of Japan?"),
                Node(
                    id="s2", title="Mountain", instruction="What is the highest mountain in Japan?"
                ),
            ],
        ),
    )


def _calls_per_node(ws: Workspace) -> dict[str, int]:
    with ws.traces.connect() as con:
        rows = con.execute("SELECT node_id, count(*) FROM model_calls GROUP BY node_id").fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("playground-data"))
    result = ws.run_plan(_plan(), RunCaps(max_tokens_per_node=48))
    outputs = {row["node_id"]: row["output"] for row in ws.traces.node_executions(result.run_id)}
    assert outputs["s1"] and outputs["s2"], outputs
    return ws, result.run_id, outputs


@pytest.fixture(scope="module")
def played(recorded):
    ws, run_id, _ = recorded
    before = _calls_per_node(ws)
    source = playground.open_node(ws, run_id, "root")
    cool, warm = playground.variants_from(source.base, 2, max_tokens=48)
    cool.generation = cool.generation.model_copy(update={"temperature": 0.1, "seed": 11})
    warm.generation = warm.generation.model_copy(update={"temperature": 0.9, "seed": 12})
    streamed: dict[int, list[str]] = {0: [], 1: []}
    outcome = playground.run_variants(
        ws, source, [cool, warm], on_text=lambda i, text: streamed[i].append(text)
    )
    return ws, source, outcome, before, streamed


def test_the_roots_prompt_quotes_the_childrens_recorded_outputs(recorded):
    ws, run_id, outputs = recorded
    source = playground.open_node(ws, run_id, "root")
    prompt = source.prompt()[-1]["content"]
    assert outputs["s1"].strip() in prompt and outputs["s2"].strip() in prompt
    assert source.recorded_output == outputs["root"] and source.missing == []
    # the bundled model is a base model: the prompt is Arbor's few-shot completion prompt
    assert prompt.rstrip().endswith(":") and "Step results:" in prompt


def test_variants_make_no_call_for_the_children_and_are_recorded_as_a_playground_run(played):
    ws, _source, outcome, before, _ = played
    after = _calls_per_node(ws)
    assert after.get("s1") == before.get("s1") and after.get("s2") == before.get("s2")
    assert after.get("root") == before.get("root")
    assert after.get("root@v1") == 1 and after.get("root@v2") == 1
    assert outcome.run_id and outcome.record_problem is None
    run = ws.traces.run(outcome.run_id)
    assert run is not None and run["kind"] == PLAYGROUND_KIND
    listed = [row["run_id"] for row in ws.traces.runs(kinds=("execution",))]
    assert outcome.run_id not in listed  # not a plan run
    calls = ws.traces.model_calls(outcome.run_id)
    assert {call["seed"] for call in calls} == {11, 12}
    assert all(call["output_tokens"] > 0 and call["latency_s"] > 0 for call in calls)


def test_both_variants_answer_without_echoing_and_stream_their_text(played):
    _ws, source, outcome, _, streamed = played
    quoted = list(source.outputs.values())
    for result in outcome.results:
        assert result.ok, result.error
        assert result.output_tokens > 0 and result.input_tokens > 0 and result.seconds > 0
        kinds = {
            problem.kind
            for problem in check_output(
                result.output, prompt=prompt_without(result.messages, quoted)
            )
        }
        assert not kinds & {"empty", "echo", "loop"}, (result.output, kinds)
        assert streamed[result.index] and streamed[result.index][-1].strip()
    temperatures = [r.variant.generation.temperature for r in outcome.results]
    assert temperatures == [0.1, 0.9]


def test_applying_a_variant_changes_the_node_and_undo_restores_it(played):
    _ws, source, outcome, _, _ = played
    history = PlanHistory(source.plan)
    winner = outcome.results[1].variant
    winner.instruction = "Give the final answer in two sentences."
    edited = history.apply(playground.apply_variant(source, winner), "playground variant 2")
    root = edited.node("root")
    assert root.instruction == "Give the final answer in two sentences."
    assert root.generation is not None and root.generation.temperature == 0.9
    assert history.undo().node("root") == source.plan.node("root")
    with pytest.raises(PlanError, match="changes nothing"):
        playground.apply_variant(source, source.base)


def test_a_recorded_call_opens_with_its_exact_messages(recorded):
    ws, run_id, _ = recorded
    call = next(c for c in ws.traces.model_calls(run_id) if c["node_id"] == "s1")
    source = playground.open_call(ws, run_id, call["call_id"])
    assert source.node_id == "s1" and source.base.messages
    assert source.prompt()[-1]["content"] in call["prompt"].replace("\\n", "\n")
    assert source.base.generation.seed == call["seed"]


def test_a_variant_on_a_missing_model_fails_alone(recorded, tmp_path):
    ws, run_id, _ = recorded
    source = playground.open_node(ws, run_id, "s1")
    broken = playground.variants_from(source.base, 1)[0]
    broken.model = broken.model.model_copy(
        update={"kind": "local", "path": str(tmp_path / "none.gguf")}
    )
    outcome = playground.run_variants(ws, source, [broken])
    assert outcome.results[0].error and "none.gguf" in outcome.results[0].error
    assert ws.traces.run(outcome.run_id or "")["status"] == "failed"


def test_bad_requests_are_refused_in_words(recorded):
    ws, run_id, _ = recorded
    with pytest.raises(PlanError, match="No node 'zz'"):
        playground.open_node(ws, run_id, "zz")
    source = playground.open_node(ws, run_id, "s1")
    with pytest.raises(ValueError, match="between 1 and 8"):
        playground.variants_from(source.base, 9)


def test_a_call_of_a_playground_run_opens_on_its_node(played):
    ws, _source, outcome, _, _ = played
    call = next(c for c in ws.traces.model_calls(outcome.run_id) if c["node_id"] == "root@v2")
    again = playground.open_call(ws, outcome.run_id, call["call_id"])
    assert again.node_id == "root" and again.in_plan
    assert again.base.generation.seed == 12 and again.base.messages == outcome.results[1].messages
