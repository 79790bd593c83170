"""The Inspector page under Streamlit's AppTest, over a real DuckDB trace store.

The runs come from the executor with the in-process fake model (what is under test is what the
page shows of recorded rows, not model behaviour), written by the real TraceWriter; one test
makes a small real run on the bundled model and reads its rendered prompt back in the page.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from engine.plan import GenerationConfig, Node, Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.run.events import NodeStarted, RunStarted
from engine.run.executor import RunResult, execute_plan
from storage.sessions import ArborSession
from storage.sql_console import SavedQueries
from storage.workspace import Workspace
from tests.support.apptest import choice, notices
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
PAGE = "ui/inspector_page.py"
SPEC = {
    "id": "root",
    "children": [
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a"]},
    ],
}
OTHER_SPEC = {"id": "root", "children": [{"id": "x"}]}
ORIGIN = "imported from colleague.arbor on 2026-11-23"


@dataclass
class Seeded:
    root: Path
    session: ArborSession
    first: RunResult  # b sampled 3 times (self-consistency), every node done
    second: RunResult  # b's output changed, c failed
    other: RunResult  # another session and plan, marked imported


def _run(
    ws: Workspace,
    spec: dict,
    *,
    session_id: str,
    outputs: dict[str, str],
    fail: str | None = None,
) -> RunResult:
    plan = fake_models(tree(spec, task="Inspect me"))
    if "b" in outputs:
        plan.node("b").strategy = strategy_from_spec("sc3")
    behaviours = {node: Behaviour(output=text, sleep_s=0.01) for node, text in outputs.items()}
    if fail:
        behaviours[fail] = Behaviour(error=RuntimeError("endpoint said no"))
    factory, _ = fake_factory(behaviours)
    with ws.traces.writer() as writer:
        return execute_plan(
            plan,
            RunCaps(max_parallel=2),
            backend_factory=factory,
            listeners=[writer],
            session_id=session_id,
        )


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Seeded:
    root = tmp_path_factory.mktemp("inspector-data")
    ws = Workspace(root)
    session = ArborSession(name="Inspector session", task="Inspect me")
    first = _run(ws, SPEC, session_id=session.id, outputs={"a": "A", "b": "B1", "c": "C"})
    second = _run(ws, SPEC, session_id=session.id, outputs={"a": "A", "b": "B2\nmore"}, fail="c")
    other = _run(ws, OTHER_SPEC, session_id="elsewhere", outputs={"x": "X"})
    # What an import of a session file leaves behind (storage/bundles.py sets the same column).
    with ws.traces.connect() as con:
        con.execute("UPDATE runs SET origin = ? WHERE run_id = ?", [ORIGIN, other.run_id])
    session.run_ids = [first.run_id, second.run_id]
    ws.sessions.save(session)
    return Seeded(root, ws.sessions.get(session.id), first, second, other)


def _open(data_dir: Path, monkeypatch, session: ArborSession | None = None) -> AppTest:
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data_dir))
    at = AppTest.from_file(MAIN, default_timeout=60)
    if session is not None:
        at.session_state["session"] = session
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def page(seeded, monkeypatch) -> AppTest:
    return _open(seeded.root, monkeypatch, seeded.session)


def _show(at: AppTest, view: str, run_id: str | None = None) -> AppTest:
    if run_id is not None:
        at.selectbox(key="inspect_run").set_value(run_id)
    at.segmented_control(key="inspector_view").set_value(view).run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest, column: str) -> pd.DataFrame:
    """The dataframe on the page that has ``column``."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column on the page")


def _runs(at: AppTest) -> list[str]:
    return _table(at, "Run id")["Run id"].tolist()


def _charts(at: AppTest) -> list[tuple[dict, list[pd.DataFrame]]]:
    """Every Vega-Lite chart on the page: its spec and the rows of each layer, in order."""
    charts = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        data = {
            d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas()
            for d in element.proto.datasets
        }
        layers = spec.get("layer", [spec])
        shared = spec.get("data", {}).get("name")
        charts.append((spec, [data[layer.get("data", {}).get("name", shared)] for layer in layers]))
    return charts


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "code", "text") for e in at.get(kind)]
    return "\n".join(str(part) for part in parts)


# -- the runs list -------------------------------------------------------------------------------
def test_the_session_runs_are_listed_and_filtered_by_status_model_and_date(page, seeded):
    assert page.title[0].value == "Inspector"
    assert page.radio(key="inspector_scope").value == "This session"
    assert _runs(page) == [seeded.second.run_id, seeded.first.run_id]
    table = _table(page, "Run id").set_index("Run id")
    assert table.loc[seeded.second.run_id, "Status"] == "failed"
    assert table.loc[seeded.first.run_id, "Failed"] == 0
    assert set(table["Source"]) == {"recorded here"}

    page.multiselect(key="inspector_status").set_value(["failed"]).run()
    assert _runs(page) == [seeded.second.run_id]
    page.multiselect(key="inspector_status").set_value([]).run()

    page.radio(key="inspector_scope").set_value("All runs").run()
    assert _runs(page)[0] == seeded.other.run_id and len(_runs(page)) == 3
    source = _table(page, "Run id").set_index("Run id").loc[seeded.other.run_id, "Source"]
    assert source == f"imported (read-only): {ORIGIN}"
    assert "fake:x" in page.multiselect(key="inspector_models").options
    page.multiselect(key="inspector_models").set_value(["fake:x"]).run()
    assert _runs(page) == [seeded.other.run_id]
    assert any("imported (read-only)" in info.value for info in page.info)

    page.multiselect(key="inspector_models").set_value([]).run()
    today = date.today()
    page.date_input(key="inspector_dates").set_value((today, today)).run()
    assert len(_runs(page)) == 3
    long_ago = today - timedelta(days=30)
    page.date_input(key="inspector_dates").set_value((long_ago, long_ago)).run()
    assert not page.exception
    assert any("No run matches these filters" in info.value for info in page.info)
    assert not any("Run id" in frame.value.columns for frame in page.dataframe)


def _select_rows(at: AppTest, rows: list[int]) -> AppTest:
    """Select rows of the runs table as a click would (AppTest cannot click a dataframe, but
    its selection is widget state under the table's key)."""
    [key] = [k for k in at.session_state if str(k).startswith("inspector_runs_")]
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    return at


def test_selecting_one_row_inspects_it_and_two_rows_compare_them(page, seeded):
    assert page.selectbox(key="inspect_run").value == seeded.second.run_id  # the newest
    _select_rows(page, [1])
    assert page.selectbox(key="inspect_run").value == seeded.first.run_id
    assert page.segmented_control(key="inspector_view").value == "Timeline"
    _select_rows(page, [0, 1])
    assert page.segmented_control(key="inspector_view").value == "Compare"
    assert page.selectbox(key="inspect_run").value == seeded.second.run_id
    assert page.selectbox(key="compare_run").value == seeded.first.run_id
    assert _table(page, "measure")["measure"].tolist()[0] == "tokens"


def test_an_empty_store_says_where_runs_come_from_and_the_console_still_works(
    tmp_path, monkeypatch
):
    (tmp_path / "queries.json").write_text("{broken")
    at = _open(tmp_path, monkeypatch)
    assert any("Workbench" in i.value and "Sessions page" in i.value for i in at.info)
    _show(at, "Timeline")
    assert any("Pick a run above" in info.value for info in at.info)
    _show(at, "SQL")
    assert any("cannot be read" in error.value for error in at.error)
    examples = [f"{query.title} (example)" for query in SavedQueries.examples()]
    assert set(examples) <= set(at.selectbox(key="sql_saved").options)  # shown as labels
    assert (tmp_path / "queries.json").read_text() == "{broken"


def test_a_run_still_being_written_is_listed_as_running(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    started = datetime.now(UTC)
    writer = ws.traces.writer()
    try:
        writer(RunStarted("live", None, "Still going", "{}", "{}", started, pid=os.getpid()))
        writer(NodeStarted("live", "slow", "Slow step", "fake:slow", started))
        writer.flush()
        at = _open(tmp_path, monkeypatch)
        assert _runs(at) == ["live"]
        assert _table(at, "Run id")["Status"].tolist() == ["running"]
        assert "Still running" in _texts(at)
        _show(at, "Node detail")
        assert "status **running**" in _texts(at)
    finally:
        writer.close()


def test_a_suspect_run_shows_a_warning_and_its_node_the_reason(tmp_path, monkeypatch):
    from engine.run.events import NodeFinished, RunFinished

    ws = Workspace(tmp_path)
    at_time = datetime.now(UTC)
    reason = "echoes the prompt (100% of its words copied)"
    summary = f"1 suspect node: root {reason}"
    with ws.traces.writer() as write:
        write(RunStarted("echo", None, "Say hi", "{}", "{}", at_time))
        write(
            NodeFinished(
                "echo", "root", "Say hi", "done", "Say hi", None, 2, 2, at_time, at_time,
                suspect=reason,
            )
        )  # fmt: skip
        write(RunFinished("echo", "suspect", summary, "Say hi", 2, 2, at_time))
    at = _open(tmp_path, monkeypatch)
    table = _table(at, "Run id")
    assert table["Status"].tolist() == ["suspect"] and table["Suspect"].tolist() == [1]
    assert table["Stop reason"].tolist() == [summary]
    assert any(summary in w.value for w in at.warning)
    _show(at, "Node detail")
    assert any(f"Suspect output: {reason}" in w.value for w in at.warning)
    _show(at, "Cost per node")
    assert _table(at, "Call latency (s)")["Suspect"].tolist() == [reason]


# -- one run -------------------------------------------------------------------------------------
def test_the_timeline_has_a_lane_per_node_with_its_span_and_its_calls(page, seeded):
    _show(page, "Timeline", seeded.first.run_id)
    # The first chart is the timeline (a flame graph may follow it).
    spec, (spans, _) = _charts(page)[0]
    outline, bars = spec["layer"]
    assert outline["transform"] == [{"filter": "datum.span_kind === 'node'"}]
    assert bars["transform"] == [{"filter": "datum.span_kind === 'call'"}]
    nodes, calls = spans[spans["span_kind"] == "node"], spans[spans["span_kind"] == "call"]
    assert sorted(nodes["node_id"]) == ["a", "b", "c", "root"]
    assert (calls["node_id"] == "b").sum() == 3  # every sample of the sampled node
    assert len(calls) == 6 and (calls["end_s"] >= calls["start_s"]).all()
    assert set(calls["model"]) == {"fake:root", "fake:a", "fake:b", "fake:c"}
    assert calls["output_tokens"].sum() == seeded.first.output_tokens
    assert spec["height"] == {"step": 26}  # one 26-px lane per node
    assert bars["encoding"]["y"]["field"] == "lane_label"
    assert bars["encoding"]["color"]["field"] == "model"
    tooltip = {t["field"] for t in bars["encoding"]["tooltip"]}
    assert {"model", "output_tokens", "cost_usd", "duration_s", "status"} <= tooltip

    page.radio(key="timeline_colour").set_value("status").run()
    spec, _ = _charts(page)[0]
    assert spec["layer"][1]["encoding"]["color"]["field"] == "status"


def test_cost_per_node_lists_every_node_most_expensive_first(page, seeded):
    _show(page, "Cost per node", seeded.first.run_id)
    table = _table(page, "Node")
    assert list(table.columns[:5]) == ["Node", "Title", "Status", "Tokens", "Cost ($)"]
    assert sorted(table["Node"]) == ["a", "b", "c", "root"]
    assert table["Tokens"].sum() == seeded.first.input_tokens + seeded.first.output_tokens
    assert table["Tokens"].tolist() == sorted(table["Tokens"], reverse=True)  # all cost $0
    assert table.set_index("Node").loc["b", "Calls"] == 3
    # The fake models cost nothing: the bars open on tokens, not on $0 everywhere.
    assert page.radio(key="cost_measure").value == "tokens"
    [(spec, (bars,))] = _charts(page)
    assert spec["encoding"]["x"]["field"] == "tokens" and len(bars) == 4
    # The node id leads each bar label; the whole title is in the tooltip.
    assert set(bars["label"]) == {f"{n} · step {n}" for n in "abc"} | {"root · step root"}
    assert {"node_id", "title"} <= {t["field"] for t in spec["encoding"]["tooltip"]}
    page.radio(key="cost_measure").set_value("cost_usd").run()
    assert _charts(page)[0][0]["encoding"]["x"]["field"] == "cost_usd"
    [(spec, (bars,))] = _charts(page)
    assert spec["encoding"]["y"]["sort"] == {"field": "rank", "op": "min"}
    assert bars.sort_values("rank")["node_id"].tolist() == table["Node"].tolist()


def test_node_detail_shows_every_sample_its_prompt_and_the_votes(page, seeded):
    _show(page, "Node detail", seeded.first.run_id)
    choice(page, "inspect_node").set_value("b").run()
    calls = _table(page, "Sample index")
    assert list(calls.columns[:3]) == ["Role", "Sample index", "Status"]
    assert sorted(calls["Sample index"]) == [0, 1, 2] and set(calls["Role"]) == {"sample"}
    votes = _table(page, "vote")
    assert votes["samples"].tolist() == [3] and votes["chosen"].tolist() == [True]
    text = _texts(page)
    for k in (1, 2, 3):
        assert f"sample {k} of 3" in text
    assert text.count(" · selected") == 1
    assert "strategy self-consistency vote ×3" in text
    prompts = [e for e in page.expander if e.label.startswith("Prompt (")]
    assert len(prompts) == 3
    messages = prompts[0].get("chat_message")
    assert messages and any("do b" in t.value for t in prompts[0].text)
    assert sum(code.value == "B1" for code in page.code) >= 4  # the node's and each sample's
    assert not page.error


def test_a_failed_node_shows_its_error(page, seeded):
    _show(page, "Node detail", seeded.second.run_id)
    choice(page, "inspect_node").set_value("c").run()
    assert any("endpoint said no" in error.value for error in page.error)
    assert "status **failed**" in _texts(page)


# -- two runs and many ---------------------------------------------------------------------------
def test_compare_shows_the_plan_diff_totals_and_the_diff_of_a_changed_output(page, seeded):
    _show(page, "Compare", seeded.second.run_id)
    assert page.selectbox(key="compare_run").value == seeded.first.run_id  # the older one
    assert "Plan changes: no changes" in _texts(page)
    totals = _table(page, "measure").set_index("measure")
    assert list(totals.index) == ["tokens", "cost ($)", "duration (s)", "nodes"]
    first_tokens = seeded.first.input_tokens + seeded.first.output_tokens
    second_tokens = seeded.second.input_tokens + seeded.second.output_tokens
    assert totals.loc["tokens", "delta"] == second_tokens - first_tokens
    nodes = _table(page, "tokens_delta").set_index("node_id")
    assert bool(nodes.loc["a", "same_output"]) and not bool(nodes.loc["b", "same_output"])
    assert nodes.loc["c", "status_b"] == "failed"
    differing = page.selectbox(key="compare_node").options  # root combines b and c
    assert {"b · step b", "c · step c"} <= set(differing) and "a · step a" not in differing
    page.selectbox(key="compare_node").set_value("b").run()
    [diff] = [code.value for code in page.code if code.language == "diff"]
    # One diff line per output line: "B1" has no line end, yet "-B1" and "+B2" stay apart.
    assert {"-B1", "+B2", "+more"} <= set(diff.splitlines())

    # The imported run (another session) has another plan.
    page.radio(key="inspector_scope").set_value("All runs").run()
    _show(page, "Compare", seeded.other.run_id)
    page.selectbox(key="compare_run").set_value(seeded.first.run_id).run()
    text = _texts(page)
    assert "1 added, 3 removed" in text and "Added in B: `x`" in text


def test_trends_draw_tokens_cost_duration_and_failures_per_run(page, seeded):
    _show(page, "Trends")
    [element] = page.get("vega_lite_chart")
    spec = json.loads(element.proto.spec)
    data = {
        d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas()
        for d in element.proto.datasets
    }
    panels = [panel for row in spec["vconcat"] for panel in row["hconcat"]]
    assert [panel["title"] for panel in panels] == [
        "tokens",
        "cost ($)",
        "duration (s)",
        "failed nodes",
    ]
    formats = [panel["layer"][0]["encoding"]["y"]["axis"]["format"] for panel in panels]
    assert formats[0] == ",d" and formats[3] == "d"  # counts are whole numbers
    points = pd.concat([data[panel["data"]["name"]] for panel in panels])
    assert set(points["field"]) == {"tokens", "cost_usd", "duration_s", "nodes_failed"}
    failures = points[points["field"] == "nodes_failed"]
    assert failures["run_id"].tolist() == [seeded.first.run_id, seeded.second.run_id]
    assert failures["value"].tolist() == [0, 1]
    assert failures["status"].tolist() == ["completed", "failed"]


# -- the SQL console -----------------------------------------------------------------------------
def test_the_sql_console_runs_an_example_refuses_a_delete_and_keeps_an_own_query(page, seeded):
    _show(page, "SQL")
    example = SavedQueries.examples()[0]
    page.selectbox(key="sql_saved").set_value(example.title).run()
    assert page.text_area(key="sql_text").value == example.sql
    page.button(key="sql_run").click().run()
    assert "fake:b" in _table(page, "model")["model"].tolist()
    assert any(" rows in " in caption.value for caption in page.caption)

    page.text_area(key="sql_text").set_value("DELETE FROM runs").run()
    page.button(key="sql_run").click().run()
    assert any("read-only" in error.value for error in page.error)
    assert len(Workspace(seeded.root).traces.runs(detect=False)) == 3

    page.text_area(key="sql_text").set_value("SELECT * FROM range(1500)").run()
    page.button(key="sql_run").click().run()
    assert len(_table(page, "range")) == 1000
    assert any("first 1,000 rows" in warning.value for warning in page.warning)

    page.text_area(key="sql_text").set_value("SELECT run_id, status FROM runs")
    page.text_input(key="sql_title").set_value("my runs").run()
    page.button(key="sql_save").click().run()
    assert any("Saved as 'my runs'" in s.value for s in page.success)
    assert page.selectbox(key="sql_saved").value == "my runs"
    assert "my runs (yours)" in page.selectbox(key="sql_saved").options
    assert [q.title for q in SavedQueries(seeded.root).list() if not q.example] == ["my runs"]
    page.button(key="sql_delete").click().run()
    assert "my runs (yours)" not in page.selectbox(key="sql_saved").options
    assert all(q.example for q in SavedQueries(seeded.root).list())


# -- export --------------------------------------------------------------------------------------
class _KeptMediaFiles(MemoryMediaFileStorage):
    """AppTest's media store, keeping what download buttons serve (by URL) after the run."""

    served: ClassVar[dict[str, bytes]] = {}

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None) -> str:
        file_id = super().load_and_get_id(path_or_data, mimetype, kind, filename)
        self.served[self.get_url(file_id)] = self.get_file(file_id).content
        return file_id


def test_the_export_buttons_serve_the_run_as_otlp_parquet_and_csv(page, seeded, monkeypatch):
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", _KeptMediaFiles)
    _show(page, "Export", seeded.first.run_id)
    data = {
        key: _KeptMediaFiles.served[page.get("download_button")[i].proto.url]
        for i, key in enumerate(["export_otlp", "export_parquet", "export_csv"])
    }
    assert [b.key for b in page.get("download_button")] == list(data)
    otlp = json.loads(data["export_otlp"])
    spans = [s for rs in otlp["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(spans) >= 1 + 4 + 6  # the run, its nodes, its calls (and b's samples)
    assert data["export_parquet"][:4] == b"PAR1"
    csv = pd.read_csv(io.BytesIO(data["export_csv"]))
    assert set(csv["run_id"]) == {seeded.first.run_id} and "span_id" in csv.columns


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.model
def test_a_real_run_shows_its_rendered_prompt_and_output(workspace, monkeypatch):
    leaf = Node(id="fruit", title="Fruit", instruction="Name one fruit.")
    plan = Plan(
        task="Name a fruit.",
        root=Node(id="root", title="Answer", instruction="Repeat the fruit.", children=[leaf]),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=7),
    )
    result = workspace.run_plan(plan, RunCaps(total_tokens=2000, max_tokens_per_node=16))
    assert result.answered, result.stop_reason  # "suspect" when an output is cut off at 8 tokens
    [call] = [c for c in workspace.traces.model_calls(result.run_id) if c["node_id"] == "fruit"]
    at = _open(workspace.root, monkeypatch)
    _show(at, "Node detail", result.run_id)
    choice(at, "inspect_node").set_value("fruit").run()
    prompt = next(e for e in at.expander if e.label.startswith("Prompt ("))
    assert any("Name one fruit." in text.value for text in prompt.text)
    assert call["output"] and any(code.value == call["output"] for code in at.code)
    _show(at, "Timeline")
    (_, (spans, _)), _flame = _charts(at)  # the timeline, then the run's flame graph
    calls = spans[spans["span_kind"] == "call"]
    assert sorted(calls["node_id"]) == ["fruit", "root"]
    assert set(calls["model"]) == {call["model"]} and call["model"]


# -- names, tags and the table's cells (issue 19.7, 19.5) ----------------------------------------
def test_the_runs_table_leads_with_key_facts_in_local_time_and_shows_no_none(page, seeded):
    table = _table(page, "Run id")
    assert list(table.columns[:8]) == [
        "Name",
        "Status",
        "Started",
        "Duration (s)",
        "Calls",
        "Tokens",
        "Cost ($)",
        "Nodes",
    ]
    first = table.set_index("Run id").loc[seeded.first.run_id]
    recorded = Workspace(seeded.root).traces.run(seeded.first.run_id)
    # The server's local time, seconds precision, no "+00:00".
    assert first["Started"] == recorded["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert first["Calls"] == 6 and first["Nodes"] == 4
    assert first["Tokens"] == seeded.first.input_tokens + seeded.first.output_tokens
    text_cells = table.select_dtypes(include="object").to_numpy().ravel().tolist()
    assert all(isinstance(cell, str) for cell in text_cells)
    assert not any(cell in ("None", "nan") or "+00:00" in cell for cell in text_cells)
    assert first["Name"] == "" and first["Stop reason"] == ""


def test_a_run_is_named_and_tagged_in_the_inspector_and_filtered_by_tag(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    kept = _run(ws, OTHER_SPEC, session_id="s", outputs={"x": "X"})
    other = _run(ws, OTHER_SPEC, session_id="s", outputs={"x": "Y"})
    at = _open(tmp_path, monkeypatch)
    at.radio(key="inspector_scope").set_value("All runs").run()
    at.selectbox(key="inspect_run").set_value(kept.run_id).run()
    assert at.multiselect(key="inspector_tags").options == []
    at.text_input(key=f"run_name_{kept.run_id}").input("Baseline run")
    at.text_input(key=f"run_tags_{kept.run_id}").input("Baseline, prompt v2, baseline")
    at.button(key="save_run_label").click().run()
    assert not at.exception, at.exception
    assert any("Saved: Baseline run" in notice for notice in notices(at))
    # Stored cleaned: lower-case, spaces as "-", sorted, no duplicates.
    label = Workspace(tmp_path).traces.run_labels([kept.run_id])[kept.run_id]
    assert label.name == "Baseline run" and label.tags == ("baseline", "prompt-v2")
    assert at.text_input(key=f"run_tags_{kept.run_id}").value == "baseline, prompt-v2"
    table = _table(at, "Run id").set_index("Run id")
    assert table.loc[kept.run_id, "Name"] == "Baseline run"
    assert table.loc[kept.run_id, "Tags"] == "baseline, prompt-v2"
    assert table.loc[other.run_id, "Tags"] == ""

    assert at.multiselect(key="inspector_tags").options == ["baseline", "prompt-v2"]
    at.multiselect(key="inspector_tags").set_value(["baseline"]).run()
    assert _runs(at) == [kept.run_id]
    at.multiselect(key="inspector_tags").set_value([]).run()
    assert sorted(_runs(at)) == sorted([kept.run_id, other.run_id])

    # A tag too long is refused with a one-line error, and nothing is stored.
    at.selectbox(key="inspect_run").set_value(other.run_id).run()
    at.text_input(key=f"run_tags_{other.run_id}").input("x" * 41)
    at.button(key="save_run_label").click().run()
    assert not at.exception
    assert any("A tag has at most 40 characters" in error.value for error in at.error)
    assert other.run_id not in Workspace(tmp_path).traces.run_labels()
