"""The annotate widget and the flame graph on the Inspector, under Streamlit's AppTest, over a
real DuckDB trace store. The run comes from the executor with the in-process fake model (what is
under test is the page's handling of recorded rows), written by the real TraceWriter."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.run.executor import RunResult, execute_plan
from engine.tune.datasets import load_dataset
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.apptest import choice
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
PAGE = "ui/inspector_page.py"
SPEC = {"id": "root", "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]}


@pytest.fixture
def seeded(tmp_path) -> tuple[Path, ArborSession, RunResult]:
    ws = Workspace(tmp_path / "data")
    session = ArborSession(name="Annotate me", task="Inspect me")
    plan = fake_models(tree(SPEC, task="Inspect me"))
    plan.node("b").strategy = strategy_from_spec("sc3")
    factory, _ = fake_factory({n: Behaviour(output=f"out {n}", sleep_s=0.01) for n in "ab"})
    with ws.traces.writer() as writer:
        result = execute_plan(
            plan,
            RunCaps(max_parallel=2),
            backend_factory=factory,
            listeners=[writer],
            session_id=session.id,
        )
    session.run_ids = [result.run_id]
    ws.sessions.save(session)
    return ws.root, ws.sessions.get(session.id), result


def _open(root: Path, session: ArborSession, run_id: str, view: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("ARBOR_DATA_DIR", str(root))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.session_state["session"] = session
    at.run()
    at.switch_page(PAGE).run()
    at.selectbox(key="inspect_run").set_value(run_id)
    at.segmented_control(key="inspector_view").set_value(view).run()
    assert not at.exception, at.exception
    return at


def _messages(at: AppTest) -> list[str]:
    return [e.value for e in at.success] + [e.value for e in at.error]


def test_annotating_a_node_bad_stores_it_lists_it_and_adds_it_to_a_dataset(
    seeded, monkeypatch
) -> None:
    root, session, result = seeded
    at = _open(root, session, result.run_id, "Node detail", monkeypatch)
    choice(at, "inspect_node").set_value("a").run()
    at.button(key="annot_save_a").click().run()
    assert any("Choose good or bad" in m for m in _messages(at))
    assert Workspace(root).traces.annotations(result.run_id) == []

    at.segmented_control(key="annot_label_a").set_value("bad")
    at.number_input(key="annot_score_a").set_value(0.2)
    at.text_area(key="annot_note_a").input("wrong tone")
    at.text_area(key="annot_correct_a").input("the right answer")
    at.button(key="annot_save_a").click().run()
    assert not at.exception, at.exception
    stored = Workspace(root).traces.annotations(result.run_id)
    assert [(r["node_id"], r["label"], r["score"], r["note"]) for r in stored] == [
        ("a", "bad", 0.2, "wrong tone")
    ]
    assert stored[0]["corrected_output"] == "the right answer"
    assert any("is bad" in m for m in _messages(at))
    assert at.text_area(key="annot_note_a").value == "", "the fields are cleared after saving"
    listed = next(f.value for f in at.dataframe if "corrected output" in f.value.columns)
    assert listed["note"].tolist() == ["wrong tone"]

    at.text_input(key="annot_dataset_a").input("fixes")
    at.button(key="annot_dataset_add_a").click().run()
    assert not at.exception, at.exception
    dataset = load_dataset(root / "datasets" / "fixes.jsonl")
    assert [e.expected for e in dataset.examples] == ["the right answer"]
    assert dataset.examples[0].input, "the node's rendered prompt is the example's input"
    assert any("Created dataset fixes" in m for m in _messages(at))


def test_a_model_call_of_a_sampling_node_can_be_annotated(seeded, monkeypatch) -> None:
    root, session, result = seeded
    at = _open(root, session, result.run_id, "Node detail", monkeypatch)
    choice(at, "inspect_node").set_value("b").run()
    targets = at.selectbox(key="annot_target_b").options
    assert len(targets) == 4, targets  # the node's output and its three sample calls
    at.selectbox(key="annot_target_b").set_value(targets[2])
    at.segmented_control(key="annot_label_b").set_value("good")
    at.button(key="annot_save_b").click().run()
    stored = Workspace(root).traces.annotations(result.run_id)
    assert len(stored) == 1 and stored[0]["call_id"] is not None
    assert stored[0]["call_id"] in targets[2] and stored[0]["node_id"] == "b"


def _flame_rows(at: AppTest) -> pd.DataFrame:
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        frames = [
            pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in element.proto.datasets
        ]
        for frame in frames:
            if "depth" in frame.columns and "annotation" in frame.columns:
                assert spec.get("layer"), "bars and labels"
                return frame
    raise AssertionError("no flame graph on the page")


def test_the_timeline_view_draws_the_flame_graph_with_annotation_badges(
    seeded, monkeypatch
) -> None:
    root, session, result = seeded
    Workspace(root).traces.add_annotation(result.run_id, "b", label="bad")
    at = _open(root, session, result.run_id, "Timeline", monkeypatch)
    rows = _flame_rows(at)
    nodes = rows[rows["span_kind"] == "node"].set_index("node_id")
    assert nodes.loc["b", "annotation"] == "bad" and nodes.loc["a", "annotation"] == ""
    assert set(rows["depth"]) == {0, 1, 2, 3}  # run, nodes, b's samples, their calls
    at.radio(key="flame_size_by").set_value("tokens").run()
    assert not at.exception, at.exception
    by_tokens = _flame_rows(at)
    run = by_tokens[by_tokens["span_kind"] == "run"].iloc[0]
    node_tokens = by_tokens[by_tokens["span_kind"] == "node"]["tokens"].sum()
    assert run["x1"] - run["x0"] == pytest.approx(node_tokens)
