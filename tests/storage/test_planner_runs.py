"""Planner actions recorded as runs (``runs.kind``, ``model_calls.detail``) in a real DuckDB
trace store: written from hand-made planner results with real ``Completion`` objects, read back,
left out of the execution-run questions, exported, and migration 8 on older stores.

The result -> rows conversion is the service layer's (``app.services.planning``), tested here
too because the rows are what is under test; no model is called.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from app.services.planning import RecordingBackend, outline, result_calls
from engine.models import Completion, Usage
from engine.plan import ModelRef, single_node_plan
from engine.planner.decompose import Clarification, DecomposeResult, PlanCandidate
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.trace_export import export_run
from storage.trace_queries import RunFilter, TraceQueries
from storage.traces import MIGRATIONS, TraceStore
from storage.traces.planner_runs import (
    PlannerRunData,
    planner_calls,
    record_planner_run,
)
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

TASK = "Plan a three-day trip to Lisbon on a budget"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _plan(titles: list[str]):
    return tree(
        {
            "id": "root",
            "title": TASK,
            "children": [
                {"id": f"s{i}", "title": t, "instruction": f"Do: {t}"}
                for i, t in enumerate(titles, 1)
            ],
        }
    )


def _completion(text: str, tokens: tuple[int, int] = (120, 40), latency: float = 0.5):
    return Completion(
        text=text, usage=Usage(*tokens), latency_s=latency, model="gemma.gguf", finish_reason="stop"
    )


def _result() -> DecomposeResult:
    """Three candidates: two sampled (one unusable), one built without a call; one pattern call."""
    chosen = _plan(["Book cheap flights", "Find a hostel", "Plan free sights"])
    other = _plan(["Pack bags", "Go"])
    calls = [
        _completion('{"pattern": "sequence"}', (60, 5), 0.2),
        _completion("1. Book cheap flights\n2. Find a hostel\n3. Plan free sights"),
        _completion("1. Pack bags\n2. Go"),
        _completion("Task: compare laptops", (120, 30)),
    ]
    candidates = [
        PlanCandidate(
            source="sample 1",
            plan=chosen,
            scores={"relevance": 0.9, "coverage": 0.8},
            total=0.86,
            text=calls[1].text,
            call_index=1,
        ),
        PlanCandidate(
            source="sample 2",
            plan=other,
            scores={"relevance": 0.4, "coverage": 0.3},
            total=0.36,
            notes=["too short"],
            text=calls[2].text,
            call_index=2,
        ),
        PlanCandidate(
            source="sample 3",
            plan=None,
            problem="copied a worked example",
            text=calls[3].text,
            call_index=3,
        ),
        PlanCandidate(
            source="listed parts",
            plan=other,
            scores={"relevance": 0.5, "coverage": 0.2},
            total=0.38,
        ),
    ]
    return DecomposeResult(
        plan=chosen,
        notes=["picked sample 1"],
        calls=calls,
        candidates=candidates,
        chosen=0,
        pattern="sequence",
        style="base",
        language="en",
    )


class _Inner:
    """Only what ``RecordingBackend`` reads of a backend when no call goes through it."""

    label = "gemma.gguf"
    max_concurrent = 1
    price_in_per_m = 0.0
    price_out_per_m = 0.0
    samples_per_prompt = 1
    resource_key = "gemma.gguf"


def _record(store: TraceStore, result: DecomposeResult, **options) -> str:
    backend = RecordingBackend(_Inner())  # type: ignore[arg-type]
    data = PlannerRunData(
        status="completed",
        calls=result_calls(result, backend),
        answer=outline(result.plan),
        plan_json=result.plan.to_json(indent=None),
        notes=result.notes,
        title="decompose (base, pattern sequence, language en)",
    )
    return record_planner_run(
        store,
        "decompose",
        TASK,
        "gemma.gguf",
        data,
        T0,
        T0 + timedelta(seconds=3),
        options.get("session_id", "s1"),
    )


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "traces.duckdb")


def _execute(store: TraceStore, session: str = "s1") -> str:
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}]}))
    factory, _ = fake_factory({"a": Behaviour(output="A"), "root": Behaviour(output="R")})
    with store.writer() as writer:
        return execute_plan(
            plan, RunCaps(), backend_factory=factory, listeners=[writer], session_id=session
        ).run_id


def test_a_decompose_is_recorded_with_every_call_and_candidate(store):
    run_id = _record(store, _result())
    run = store.run(run_id)
    assert run is not None
    assert run["kind"] == "decompose"
    assert run["status"] == "completed"
    assert run["task"] == TASK
    assert run["answer"] == "1. Book cheap flights\n2. Find a hostel\n3. Plan free sights"
    assert json.loads(run["plan_json"])["root"]["children"][0]["title"] == "Book cheap flights"
    # every call's tokens, counted once (the candidate without a call adds none)
    assert (run["input_tokens"], run["output_tokens"]) == (60 + 120 * 3, 5 + 40 * 2 + 30)

    calls = planner_calls(store, run_id)
    assert [c["role"] for c in calls] == [
        "planner",
        "candidate",
        "candidate",
        "candidate",
        "candidate",
    ]
    candidates = [c for c in calls if c["role"] == "candidate"]
    assert [c["detail"]["source"] for c in candidates] == [
        "sample 1",
        "sample 2",
        "sample 3",
        "listed parts",
    ]
    assert [c["selected"] for c in candidates] == [True, False, False, False]
    assert [c["score"] for c in candidates] == [0.86, 0.36, 0.0, 0.38]
    assert candidates[0]["detail"]["scores"] == {"relevance": 0.9, "coverage": 0.8}
    assert candidates[1]["detail"]["notes"] == ["too short"]
    assert candidates[2]["detail"]["problem"] == "copied a worked example"
    assert candidates[2]["detail"]["usable"] is False
    assert candidates[0]["output"].startswith("1. Book cheap flights")
    assert candidates[3]["input_tokens"] == 0  # built without a call

    node = store.node_executions(run_id)
    assert [(n["node_id"], n["status"], n["samples"]) for n in node] == [("planner", "done", 4)]


def test_the_inspector_reads_a_planner_run_but_lists_only_executions_by_default(store):
    planner_run = _record(store, _result())
    execution = _execute(store)
    queries = TraceQueries(store)

    assert queries.runs()["run_id"].tolist() == [execution]
    assert queries.runs(RunFilter(session_id="s1"))["run_id"].tolist() == [execution]
    planner_only = queries.runs(RunFilter(kinds=("decompose",)))
    assert planner_only["run_id"].tolist() == [planner_run]
    assert planner_only["kind"].tolist() == ["decompose"]
    assert set(queries.runs(RunFilter(kinds=()))["run_id"]) == {planner_run, execution}
    assert queries.trends(RunFilter(session_id="s1"))["run_id"].tolist() == [execution]
    assert "gemma.gguf" not in queries.models(RunFilter(session_id="s1"))

    assert [r["run_id"] for r in store.runs(kinds=("execution",))] == [execution]
    assert {r["run_id"] for r in store.runs()} == {planner_run, execution}

    table = queries.planner_candidates(planner_run)
    candidates = table[table["role"] == "candidate"]
    assert candidates["source"].tolist() == ["sample 1", "sample 2", "sample 3", "listed parts"]
    assert candidates["chosen"].tolist() == [True, False, False, False]
    assert candidates["score: relevance"].tolist()[:2] == [0.9, 0.4]
    assert candidates["problem"].tolist()[2] == "copied a worked example"

    timeline = queries.timeline(planner_run)
    assert (timeline["span_kind"] == "call").sum() == 5
    detail = queries.node_detail(planner_run, "planner")
    assert len(detail.calls) == 5


def test_a_planner_run_exports_as_otlp_with_its_calls(store, tmp_path):
    run_id = _record(store, _result())
    path = export_run(store, run_id, tmp_path / "run.json", "otlp")
    body = json.loads(path.read_text())
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    names = [span["name"] for span in spans]
    assert names[0] == "invoke_agent arbor"
    assert sum(name.startswith("chat ") for name in names) == 5
    ids = {span["spanId"] for span in spans}
    assert all(span.get("parentSpanId", "") in ids | {""} for span in spans)


def test_clarifications_and_fallbacks_are_recorded_with_their_reason(store):
    plan = single_node_plan("do stuff", ModelRef())
    result = DecomposeResult(
        plan=plan,
        calls=[_completion("vague")],
        clarification=Clarification("Say what you want done.", ["Plan a trip to Lisbon"]),
    )
    backend = RecordingBackend(_Inner())  # type: ignore[arg-type]
    rows = result_calls(result, backend)
    assert [(r.role, r.selected) for r in rows] == [("attempt", True)]
    run_id = record_planner_run(
        store,
        "decompose",
        "do stuff",
        "gemma.gguf",
        PlannerRunData(status="needs_detail", calls=rows, stop_reason="Say what you want done."),
        T0,
        T0 + timedelta(seconds=1),
    )
    run = store.run(run_id)
    assert run is not None
    assert (run["status"], run["stop_reason"]) == ("needs_detail", "Say what you want done.")
    assert store.node_executions(run_id)[0]["status"] == "failed"


def test_an_unknown_kind_is_refused(store):
    from engine.errors import TraceStoreError

    with pytest.raises(TraceStoreError, match="not a planner run kind"):
        record_planner_run(store, "execution", TASK, None, PlannerRunData("completed"), T0, T0)


def test_the_planner_call_rows_carry_the_prompt_when_the_recording_backend_saw_it(store):
    class Answering(_Inner):
        def complete(self, messages, config, **_):
            return _completion("1. Book cheap flights\n2. Find a hostel")

        def cost(self, usage):
            return 0.0

    backend = RecordingBackend(Answering())  # type: ignore[arg-type]
    from engine.plan import GenerationConfig

    completion = backend.complete([{"role": "user", "content": TASK}], GenerationConfig(seed=3))
    result = DecomposeResult(
        plan=_plan(["Book cheap flights", "Find a hostel"]), calls=[completion]
    )
    [row] = result_calls(result, backend)
    assert row.messages == [{"role": "user", "content": TASK}]
    assert row.seed == 3
    run_id = record_planner_run(
        store, "decompose", TASK, "gemma.gguf", PlannerRunData("completed", [row]), T0, T0
    )
    [call] = store.model_calls(run_id)
    assert json.loads(call["prompt"]) == [{"role": "user", "content": TASK}]
    assert call["cache_key"] is None  # planner calls are never replayed as cache hits


@pytest.mark.parametrize("applied", [6, 7])
def test_migration_8_adds_kinds_to_an_older_store(tmp_path, applied):
    path = tmp_path / "traces.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR,"
        " applied_at TIMESTAMPTZ DEFAULT now())"
    )
    for version, (name, migrate) in enumerate(MIGRATIONS[:applied], start=1):
        migrate(con)
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
    con.execute(
        "INSERT INTO runs (run_id, task, status, started_at) VALUES ('old', 't', 'completed', ?)",
        [T0],
    )
    con.execute(
        "INSERT INTO model_calls (call_id, run_id, node_id, status) VALUES ('c', 'old', 'n', 'ok')"
    )
    con.close()

    store = TraceStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert store.run("old")["kind"] == "execution"
    assert TraceQueries(store).runs()["run_id"].tolist() == ["old"]
    _record(store, _result())
    assert TraceQueries(store).runs()["run_id"].tolist() == ["old"]
    with store.connect() as con:
        assert con.execute("SELECT detail FROM model_calls WHERE call_id = 'c'").fetchone() == (
            None,
        )
        # the views still read every run
        assert con.execute("SELECT count(*) FROM run_totals").fetchone() == (2,)
        assert con.execute("SELECT count(DISTINCT run_id) FROM spans").fetchone() == (2,)


def test_a_session_file_carries_its_planner_runs_with_their_candidates(tmp_path):
    from storage.bundles import export_session, import_bundle
    from storage.sessions import ArborSession
    from storage.workspace import Workspace

    workspace = Workspace(tmp_path / "here")
    session = ArborSession(name="trip", task=TASK)
    workspace.sessions.save(session)
    run_id = _record(workspace.traces, _result(), session_id=session.id)
    path = tmp_path / "trip.arbor"
    report = export_session(workspace, session.id, path)
    assert report.run_ids == [run_id]

    fresh = Workspace(tmp_path / "there")
    import_bundle(fresh, path)
    [run] = fresh.traces.runs(kinds=("decompose",))
    assert run["run_id"] == run_id and run["origin"]  # imported, read-only
    assert planner_calls(fresh.traces, run_id) == planner_calls(workspace.traces, run_id)
    assert fresh.traces.runs(kinds=("execution",)) == []
