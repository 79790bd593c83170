"""The Evaluate page under Streamlit's AppTest: datasets, bad input, and (on the real bundled
model) an evaluation that is replayed the second time and a search applied to the plan."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app.services.tuning import load_upload
from engine.tune.datasets import files as datasets
from engine.tune.evaluation import DatasetError, shipped_datasets
from storage.evaluations import list_evaluations, load_summary
from storage.workspace import Workspace

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def page(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("ui/evaluate_page.py").run()
    assert not at.exception
    return at


def _metrics(at: AppTest) -> pd.DataFrame | None:
    """The results table of the finished evaluation, if the page shows one."""
    for frame in at.dataframe:
        if "cost-of-pass (tokens)" in frame.value.columns:
            return frame.value
    return None


def _wait(at: AppTest, done: Callable[[AppTest], bool], what: str, timeout_s: float = 240) -> None:
    """Rerun the page (as the polling fragment would) until ``done(at)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        time.sleep(1)
    pytest.fail(f"{what} did not finish in the UI within {timeout_s:.0f} s")


def _choose_capitals(at: AppTest, limit: int) -> None:
    at.selectbox(key="eval_plan_source").set_value("capitals").run()
    at.selectbox(key="eval_dataset").set_value("capitals")
    at.number_input(key="eval_limit").set_value(limit).run()
    assert not at.exception


def test_page_lists_the_shipped_datasets_and_plans(page):
    assert page.title[0].value == "Evaluate"
    assert set(shipped_datasets()) <= set(page.selectbox(key="eval_dataset").options)
    assert "Shipped plan: capitals" in page.selectbox(key="eval_plan_source").options
    assert page.multiselect(key="eval_configs").value == ["single", "sc5"]
    assert not page.error
    assert any("None yet" in caption.value for caption in page.caption)


def test_choosing_a_shipped_plan_picks_its_dataset(page):
    page.selectbox(key="eval_plan_source").set_value("capitals").run()
    assert page.selectbox(key="eval_dataset").value == "capitals"
    assert any(caption.value.startswith("1 node ·") for caption in page.caption)


def test_a_bad_upload_is_refused_naming_the_file_and_line(tmp_path):
    data = b"id,question,answer\nfrance,What is the capital of France?\n"
    with pytest.raises(DatasetError) as refused:
        load_upload(tmp_path, "my capitals.csv", data)
    message = str(refused.value)
    assert "my capitals.csv:2" in message and "2 fields" in message
    assert str(tmp_path) not in message  # the upload's name, not where it was stored
    with pytest.raises(DatasetError, match="no examples"):
        load_upload(tmp_path, "empty.jsonl", b"\n")
    good = load_upload(tmp_path, "../two.jsonl", b'{"input": "1+1", "expected": "2"}\n')
    assert len(good) == 1 and Path(good.source).parent == tmp_path / "uploads"


def test_a_parquet_upload_is_read_and_a_broken_one_refused_by_its_name(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"question": ["2+2?"], "answer": [4], "level": [2]}), buffer)
    good = load_upload(tmp_path, "mine.parquet", buffer.getvalue())
    assert [(e.input, e.expected, e.difficulty) for e in good.examples] == [("2+2?", "4", 2)]
    with pytest.raises(DatasetError) as refused:
        load_upload(tmp_path, "broken.parquet", b"PAR1 not really PAR1")
    assert "broken.parquet: not a readable Parquet file" in str(refused.value)
    assert str(tmp_path) not in str(refused.value)


def test_a_broken_dataset_shows_its_error_and_the_page_keeps_working(tmp_path, monkeypatch):
    shelf = tmp_path / "datasets"
    shelf.mkdir()
    shutil.copy(shipped_datasets()["capitals"], shelf / "capitals.csv")
    (shelf / "broken.jsonl").write_text('{"input": "2+2", "expected": "4"}\n{oops\n')
    monkeypatch.setattr(datasets, "DATASETS_DIR", shelf)
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path / "data"))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("ui/evaluate_page.py").run()
    at.selectbox(key="eval_dataset").set_value("broken").run()
    assert not at.exception
    assert any("broken.jsonl:2: malformed JSON" in error.value for error in at.error)
    assert at.button(key="run_eval").disabled
    at.selectbox(key="eval_dataset").set_value("capitals").run()
    assert not at.error and not at.button(key="run_eval").disabled


def test_no_configuration_is_refused_with_a_message(page):
    page.multiselect(key="eval_configs").set_value([]).run()
    page.button(key="run_eval").click().run()
    assert any("choose at least one configuration" in e.value for e in page.error)
    assert "eval_job" not in page.session_state


def test_a_search_without_options_cannot_start(page):
    page.multiselect(key="search_strategies").set_value([]).run()
    assert any("at least one model, one strategy" in w.value for w in page.warning)
    assert page.button(key="run_search").disabled


@pytest.mark.model
def test_evaluation_shows_metrics_and_frontier_then_replays(page, tmp_path):
    _choose_capitals(page, 3)
    page.multiselect(key="eval_configs").set_value(["single", "sc3"])
    page.button(key="run_eval").click().run()
    first = page.session_state.eval_job
    _wait(page, lambda at: _metrics(at) is not None, "the evaluation")
    table = _metrics(page)
    assert list(table["configuration"]) == ["single", "sc3"]
    assert list(table["examples"]) == [3, 3]
    store = Workspace(tmp_path).traces
    summary = load_summary(store, first)
    assert summary is not None and summary["status"] == "completed"
    saved = {row["configuration"]: row for row in summary["configurations"]}
    for row in table.to_dict("records"):
        assert 0.0 <= row["accuracy"] <= 1.0
        assert math.isclose(row["accuracy"], saved[row["configuration"]]["accuracy"])
        assert math.isclose(row["mean tokens"], saved[row["configuration"]]["mean_tokens"])
    assert page.get("vega_lite_chart") or page.get("arrow_vega_lite_chart")
    assert any(s.value.startswith("Frontier: ") and "Best: " in s.value for s in page.success)

    page.button(key="run_eval").click().run()
    second = page.session_state.eval_job
    assert second != first
    _wait(
        page,
        lambda at: at.session_state.eval_job == second and _metrics(at) is not None,
        "the repeated evaluation",
    )
    assert list(_metrics(page)["replayed"]) == [3, 3]
    assert {row["evaluation_id"] for row in list_evaluations(store)} == {first, second}
    shown = next(frame.value for frame in page.dataframe if "Kind" in frame.value.columns)
    assert set(shown["Evaluation id"]) == {first, second}


@pytest.mark.model
def test_search_finds_an_allocation_and_applies_it_to_the_workbench_plan(page, tmp_path):
    _choose_capitals(page, 3)
    page.multiselect(key="search_models").set_value(["bundled"])
    page.multiselect(key="search_strategies").set_value(["single", "sc3"])
    page.multiselect(key="search_max_tokens").set_value([8])
    page.slider(key="search_max_trials").set_value(4).run()
    assert page.session_state.session.plan is None
    page.button(key="run_search").click().run()
    _wait(
        page,
        lambda at: any(s.value.startswith("Best: ") for s in at.success),
        "the search",
    )
    best = next(s.value for s in page.success if s.value.startswith("Best: "))
    assert "of 2 possible" in best
    saved = [row for row in list_evaluations(Workspace(tmp_path).traces) if row["kind"] == "search"]
    assert 1 <= len(saved) <= 4

    page.button(key="apply_search").click().run()
    assert not page.exception
    plan = page.session_state.session.plan
    assert plan is not None and plan.root.strategy is not None
    assert plan.root.strategy.kind in {"single", "self_consistency"}
    assert plan.root.generation.max_tokens == 8
    assert any("Applied to the workbench plan" in s.value for s in page.success)
    assert page.selectbox(key="eval_plan_source").options[0] == "The workbench plan"


@pytest.mark.model
def test_a_cancelled_evaluation_keeps_what_finished(page, tmp_path):
    _choose_capitals(page, 0)
    page.multiselect(key="eval_configs").set_value(["sc5"])
    page.button(key="run_eval").click().run()
    page.button(key="cancel_eval").click().run()
    _wait(page, lambda at: _metrics(at) is not None, "the cancelled evaluation")
    assert any(w.value.startswith("Evaluation cancelled") for w in page.warning)
    finished = int(_metrics(page)["examples"][0])
    assert finished < 12
    summary = load_summary(Workspace(tmp_path).traces, page.session_state.eval_job)
    assert summary["status"] == "cancelled"
    assert summary["configurations"][0]["n"] == finished


# -- defaults that fit the dataset, and the estimate (issue 19.8) -----------------------------
def _workbench_session():
    from engine.plan import Node, Plan
    from storage.sessions import ArborSession

    steps = [Node(id=f"s{i}", title=f"Step {i}", instruction="Do it.") for i in range(13)]
    plan = Plan(task="A big workbench plan", root=Node(id="root", title="Root", children=steps))
    return ArborSession(name="Big plan", task=plan.task, plan=plan)


def test_the_page_opens_on_a_dataset_with_its_own_plan_and_checker(tmp_path, monkeypatch):
    """It opened on the 14-node workbench plan, the arithmetic dataset and a text checker."""
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["session"] = _workbench_session()
    at.run()
    at.switch_page("ui/evaluate_page.py").run()
    assert not at.exception, at.exception
    assert "The workbench plan" in at.selectbox(key="eval_plan_source").options  # offered
    assert at.selectbox(key="eval_dataset").value == "arithmetic"
    assert at.selectbox(key="eval_plan_source").value == "arithmetic"
    assert at.selectbox(key="eval_checker").value == "numeric"
    assert any(caption.value.startswith("1 node ·") for caption in at.caption)

    at.selectbox(key="eval_dataset").set_value("capitals").run()
    assert at.selectbox(key="eval_plan_source").value == "capitals"
    assert at.selectbox(key="eval_checker").value == "normalised"
    at.selectbox(key="eval_dataset").set_value("units").run()
    assert at.selectbox(key="eval_plan_source").value == "units"
    assert at.selectbox(key="eval_checker").value == "numeric"
    # Choosing a plan brings its dataset and that dataset's checker.
    at.selectbox(key="eval_plan_source").set_value("capitals").run()
    assert at.selectbox(key="eval_dataset").value == "capitals"
    assert at.selectbox(key="eval_checker").value == "normalised"
    # The analyst's own choice then stands.
    at.selectbox(key="eval_checker").set_value("regex").run()
    at.number_input(key="eval_limit").set_value(2).run()
    assert at.selectbox(key="eval_checker").value == "regex"


def _estimate(at: AppTest) -> str:
    [text] = [c.value for c in at.caption if c.value.startswith("At most ")]
    return text


def test_an_estimate_of_calls_tokens_and_time_stands_next_to_the_run_button(page):
    # arithmetic: 12 examples × (single: 1 call + sc5: 5 calls) on the one-node plan.
    assert _estimate(page).startswith("At most 72 calls, ")
    assert "12 examples × 2 configurations" in _estimate(page)
    assert "assumed at 40 output" in _estimate(page)  # nothing recorded in a new store
    page.number_input(key="eval_limit").set_value(4).run()
    assert _estimate(page).startswith("At most 24 calls, ")
    page.multiselect(key="eval_configs").set_value(["sc3"]).run()
    assert _estimate(page).startswith("At most 12 calls, ")
    tokens = int(_estimate(page).split(" calls, ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens >= 12 * 8  # every call may write its 8-token limit, on top of its prompt
    page.multiselect(key="eval_configs").set_value([]).run()
    assert not [c for c in page.caption if c.value.startswith("At most ")]


def test_a_generated_dataset_brings_its_plan_and_checker_and_levels(page):
    page.selectbox(key="eval_dataset").set_value("gym:word_sorting").run()
    assert not page.exception and not page.error
    assert page.selectbox(key="eval_plan_source").value == "gym_word_sorting"
    assert page.selectbox(key="eval_checker").value == "dataset"
    page.multiselect(key="eval_gen_levels").set_value([1, 3])
    page.number_input(key="eval_gen_per_level").set_value(4).run()
    assert any("8 examples, 8 will run" in e.label for e in page.expander)
    assert not page.button(key="run_eval").disabled
    page.multiselect(key="eval_gen_levels").set_value([]).run()
    assert any("at least one difficulty level" in i.value for i in page.info)
    assert page.button(key="run_eval").disabled
    # Choosing the plan written for the other generated family follows it.
    page.selectbox(key="eval_plan_source").set_value("gym_chain_sum").run()
    assert page.selectbox(key="eval_dataset").value == "gym:chain_sum"


@pytest.mark.model
def test_an_evaluation_on_a_generated_dataset_shows_each_level(page, tmp_path):
    page.selectbox(key="eval_dataset").set_value("gym:word_sorting").run()
    page.multiselect(key="eval_gen_levels").set_value([1, 2])
    page.number_input(key="eval_gen_per_level").set_value(3)
    page.multiselect(key="eval_configs").set_value(["single"]).run()
    page.button(key="run_eval").click().run()
    job = page.session_state.eval_job
    _wait(page, lambda at: _metrics(at) is not None, "the evaluation")
    levels = next(
        f.value for f in page.dataframe if {"difficulty", "configuration"} <= set(f.value.columns)
    )
    assert list(levels["difficulty"]) == [1, 2] and list(levels["n"]) == [3, 3]
    assert [t.label for t in page.tabs] == ["Level 1", "Level 2"]
    summary = load_summary(Workspace(tmp_path).traces, job)
    assert summary is not None
    saved = {row["difficulty"]: row for row in summary["by_difficulty"]}
    for row in levels.to_dict("records"):
        assert math.isclose(row["accuracy"], saved[row["difficulty"]]["accuracy"])
    answers = next(
        f.value for f in page.dataframe if {"expected", "output"} <= set(f.value.columns)
    )
    # Useful, not an echo: the three-node plan answers with a word list, never the prompt.
    for output in answers["output"]:
        assert output and "Q:" not in output and "sort" not in output.lower()
    assert answers["correct"].sum() >= 1
