"""Annotations in the trace store, on a run of the bundled model recorded in a real DuckDB file:
stored and read back, refused when wrong, readable in the SQL console, carried by ``.arbor``
files into a fresh data directory, written into OTLP JSON and listed in run comparisons."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TraceStoreError
from engine.plan import GenerationConfig, Node, Plan
from engine.run.budget import RunCaps
from storage.bundles import export_session, import_bundle
from storage.sessions import ArborSession
from storage.sql_console import run_read_only
from storage.trace_export import export_run, run_to_otlp
from storage.trace_queries import TraceQueries
from storage.traces import annotations as annotation_rows
from storage.workspace import Workspace

pytestmark = pytest.mark.model

CAPS = RunCaps(total_tokens=2000, max_tokens_per_node=16, max_parallel=1)


def two_node_plan() -> Plan:
    return Plan(
        task="Name a colour.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Answer in one word.",
            children=[Node(id="pick", title="Pick", instruction="Name one colour.")],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=7),
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, bundled_path) -> dict[str, Any]:
    """A data dir with a saved session and one real run of the bundled model."""
    workspace = Workspace(tmp_path_factory.mktemp("annotations") / "data")
    plan = two_node_plan()
    session = workspace.sessions.save(ArborSession(name="Colour", task=plan.task, plan=plan))
    result = workspace.run_plan(plan, CAPS, session_id=session.id)
    calls = workspace.traces.model_calls(result.run_id)
    assert calls, "the run made no model call"
    return {"workspace": workspace, "session": session, "run_id": result.run_id, "calls": calls}


def test_annotations_round_trip_in_order_and_delete(recorded) -> None:
    store = recorded["workspace"].traces
    run_id = recorded["run_id"]
    call = next(c for c in recorded["calls"] if c["node_id"] == "pick")
    bad = store.add_annotation(
        run_id, "pick", label="bad", score=0.25, note="not a colour", corrected_output="Blue"
    )
    on_call = store.add_annotation(run_id, label="good", call_id=call["call_id"])
    whole = store.add_annotation(run_id, label="good", note="fine overall")
    rows = store.annotations(run_id)
    assert [r["annotation_id"] for r in rows] == [
        bad["annotation_id"],
        on_call["annotation_id"],
        whole["annotation_id"],
    ]
    assert rows[0]["score"] == 0.25 and rows[0]["corrected_output"] == "Blue"
    assert rows[0]["note"] == "not a colour" and rows[0]["label"] == "bad"
    assert rows[1]["node_id"] == "pick", "a call's annotation belongs to the call's node"
    assert rows[1]["call_id"] == call["call_id"]
    assert rows[2]["node_id"] is None and rows[2]["call_id"] is None
    assert annotation_rows.node_badges(rows) == {"pick": "bad · good"}
    assert store.delete_annotation(whole["annotation_id"]) is True
    assert store.delete_annotation(whole["annotation_id"]) is False
    assert len(store.annotations(run_id)) == 2
    for row in (bad, on_call):
        store.delete_annotation(row["annotation_id"])


@pytest.mark.parametrize(
    ("node", "options", "message"),
    [
        ("nope", {"label": "bad"}, "has no node 'nope'"),
        ("pick", {"label": "meh"}, "good or bad"),
        ("pick", {"label": "bad", "score": 1.5}, "between 0 and 1"),
        ("pick", {"label": "bad", "score": -0.1}, "between 0 and 1"),
        ("pick", {"label": "bad", "score": math.nan}, "between 0 and 1"),
        ("pick", {"label": "bad", "call_id": "no-such-call"}, "no model call"),
    ],
)
def test_wrong_annotations_are_refused_and_nothing_is_stored(
    recorded, node: str, options: dict[str, Any], message: str
) -> None:
    store = recorded["workspace"].traces
    before = store.annotations(recorded["run_id"])
    with pytest.raises(TraceStoreError, match=message):
        store.add_annotation(recorded["run_id"], node, **options)
    assert store.annotations(recorded["run_id"]) == before


def test_a_call_of_another_node_and_an_unknown_run_are_refused(recorded) -> None:
    store = recorded["workspace"].traces
    call = next(c for c in recorded["calls"] if c["node_id"] == "pick")
    with pytest.raises(TraceStoreError, match="belongs to node 'pick'"):
        store.add_annotation(recorded["run_id"], "root", label="bad", call_id=call["call_id"])
    with pytest.raises(TraceStoreError, match="No run 'missing'"):
        store.add_annotation("missing", "pick", label="bad")


def test_annotations_are_queryable_in_the_sql_console(recorded) -> None:
    store = recorded["workspace"].traces
    row = store.add_annotation(recorded["run_id"], "root", label="bad", note="sql-visible")
    result = run_read_only(
        store,
        "SELECT a.label, a.note, n.title FROM annotations a JOIN node_executions n"
        " USING (run_id, node_id) WHERE a.note = 'sql-visible'",
    )
    assert result.frame.to_dict("records") == [
        {"label": "bad", "note": "sql-visible", "title": "Answer"}
    ]
    store.delete_annotation(row["annotation_id"])


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def test_otlp_export_carries_annotations_as_attributes_and_events(recorded, tmp_path) -> None:
    store = recorded["workspace"].traces
    run_id = recorded["run_id"]
    call = next(c for c in recorded["calls"] if c["node_id"] == "root")
    first = store.add_annotation(run_id, "pick", label="good", score=0.9)
    second = store.add_annotation(run_id, "pick", label="bad", score=0.2, note="wrong colour")
    on_call = store.add_annotation(run_id, label="bad", call_id=call["call_id"], note="echo")
    path = export_run(store, run_id, tmp_path / "run.json", "otlp")
    spans = json.loads(path.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    node = next(s for s in spans if s["name"] == "invoke_agent Pick")
    # the newest annotation's verdict is the span's own attributes; every one is an event
    assert _attributes(node)["arbor.annotation.label"] == "bad"
    assert _attributes(node)["arbor.annotation.score"] == 0.2
    assert _attributes(node)["arbor.annotation.note"] == "wrong colour"
    events = [e for e in node["events"] if e["name"] == "arbor.annotation"]
    assert [_attributes(e)["arbor.annotation.label"] for e in events] == ["good", "bad"]
    assert [_attributes(e)["arbor.annotation.score"] for e in events] == [0.9, 0.2]
    call_spans = [s for s in spans if _attributes(s).get("arbor.annotation.note") == "echo"]
    assert len(call_spans) == 1 and call_spans[0]["name"].startswith("chat ")
    root = next(s for s in spans if s["name"] == "invoke_agent Answer")
    assert "events" not in root, "the call's annotation stays on the call's span"
    assert run_to_otlp(store, run_id)["resourceSpans"][0]["scopeSpans"][0]["spans"] == spans
    for row in (first, second, on_call):
        store.delete_annotation(row["annotation_id"])


def test_compare_rows_show_each_runs_labels(recorded) -> None:
    workspace = recorded["workspace"]
    run_a = recorded["run_id"]
    run_b = workspace.run_plan(two_node_plan(), CAPS).run_id  # replayed from the cache
    rows = [
        workspace.traces.add_annotation(run_a, "pick", label="bad"),
        workspace.traces.add_annotation(run_a, "pick", label="bad"),
        workspace.traces.add_annotation(run_b, "root", label="good"),
    ]
    nodes = TraceQueries(workspace.traces).compare(run_a, run_b).nodes.set_index("node_id")
    assert nodes.loc["pick", "annotations_a"] == "bad ×2"
    assert nodes.loc["pick", "annotations_b"] == ""
    assert nodes.loc["root", "annotations_a"] == ""
    assert nodes.loc["root", "annotations_b"] == "good"
    for row in rows:
        workspace.traces.delete_annotation(row["annotation_id"])


def test_annotations_survive_export_and_import_into_a_fresh_data_dir(recorded, tmp_path) -> None:
    workspace = recorded["workspace"]
    run_id = recorded["run_id"]
    row = workspace.traces.add_annotation(
        run_id, "pick", label="bad", score=0.1, note="carried", corrected_output="Red"
    )
    bundle = tmp_path / "colour.arbor"
    export_session(workspace, recorded["session"].id, bundle)
    fresh = Workspace(tmp_path / "fresh")
    report = import_bundle(fresh, bundle)
    assert report.runs_imported == [run_id]
    carried = fresh.traces.annotations(run_id)
    assert [(a["annotation_id"], a["label"], a["score"], a["note"]) for a in carried] == [
        (row["annotation_id"], "bad", 0.1, "carried")
    ]
    assert carried[0]["corrected_output"] == "Red"
    assert carried[0]["created_at"] == workspace.traces.annotations(run_id)[-1]["created_at"]
    # importing again skips the run and adds no second copy of its annotation
    again = import_bundle(fresh, bundle)
    assert again.runs_skipped == [run_id]
    assert len(fresh.traces.annotations(run_id)) == 1
    workspace.traces.delete_annotation(row["annotation_id"])


def test_a_bundle_without_annotations_member_still_imports(recorded, tmp_path) -> None:
    """Files written before annotations existed have no traces/annotations.parquet."""
    import zipfile

    from storage.bundles.format import MANIFEST_MEMBER, TRACE_MEMBERS

    bundle = tmp_path / "colour.arbor"
    export_session(recorded["workspace"], recorded["session"].id, bundle)
    older = tmp_path / "older.arbor"
    member = TRACE_MEMBERS["annotations"]
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(older, "w") as target:
        for info in source.infolist():
            if info.filename == member:
                continue
            data = source.read(info.filename)
            if info.filename == MANIFEST_MEMBER:
                manifest = json.loads(data)
                del manifest["members"][member]
                data = json.dumps(manifest).encode()
            target.writestr(info.filename, data)
    fresh = Workspace(tmp_path / "fresh")
    report = import_bundle(fresh, older)
    assert report.runs_imported == [recorded["run_id"]]
    assert fresh.traces.annotations(recorded["run_id"]) == []


def test_schema_holds_the_annotations_table(tmp_path: Path) -> None:
    from storage.traces import MIGRATIONS, TraceStore

    store = TraceStore(tmp_path / "t.duckdb")
    assert store.schema_version() == len(MIGRATIONS)
    with store.connect() as con:
        columns = [r[0] for r in con.execute("DESCRIBE annotations").fetchall()]
    assert tuple(columns) == annotation_rows.COLUMNS
