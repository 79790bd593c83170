"""The Inspector's queries and the read-only SQL console, over a real DuckDB trace store.

Runs come from the executor with the in-process fake model (what is under test is what the
queries make of the recorded rows, not model behaviour), written by the real TraceWriter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.sql_console import QueryRefused, SavedQueries, check_read_only, run_read_only
from storage.trace_queries import RunFilter, TraceQueries, output_diff, parse_prompt
from storage.traces import TraceStore
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

SPEC = {
    "id": "root",
    "children": [
        {"id": "a"},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["a"]},
    ],
}


def _run(
    store: TraceStore,
    *,
    session: str,
    outputs: dict[str, str],
    fail: str | None = None,
    sc: bool = False,
):
    plan = fake_models(tree(SPEC))
    if sc:
        plan.node("b").strategy = strategy_from_spec("sc3")
    behaviours = {node: Behaviour(output=text, sleep_s=0.01) for node, text in outputs.items()}
    if fail:
        behaviours[fail] = Behaviour(error=RuntimeError("endpoint said no"))
    factory, _ = fake_factory(behaviours)
    with store.writer() as writer:
        return execute_plan(
            plan,
            RunCaps(max_parallel=2),
            backend_factory=factory,
            listeners=[writer],
            session_id=session,
        )


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "traces.duckdb")


def test_runs_are_listed_with_counts_and_filtered_by_status_model_session_and_date(store):
    first = _run(store, session="s1", outputs={"a": "A", "b": "B", "c": "C"})
    second = _run(store, session="s1", outputs={"a": "A"}, fail="c")
    other = _run(store, session="s2", outputs={})
    queries = TraceQueries(store)

    everything = queries.runs()
    assert list(everything["run_id"]) == [other.run_id, second.run_id, first.run_id]
    row = everything.set_index("run_id").loc[first.run_id]
    assert (row["nodes"], row["calls"], row["nodes_failed"]) == (4, 4, 0)
    assert row["models"] == "fake:a, fake:b, fake:c, fake:root"

    session_runs = queries.runs(RunFilter(session_id="s1"))
    assert set(session_runs["run_id"]) == {first.run_id, second.run_id}
    failed = queries.runs(RunFilter(session_id="s1", statuses=("failed",)))
    assert list(failed["run_id"]) == [second.run_id]
    assert len(queries.runs(RunFilter(models=("fake:b",)))) == 3
    assert queries.runs(RunFilter(models=("nobody",))).empty
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert queries.runs(RunFilter(since=later)).empty
    assert len(queries.runs(RunFilter(until=later))) == 3
    # A session imported with explicit run ids sees them even under another session id.
    assert set(queries.runs(RunFilter(session_id="none", run_ids=(other.run_id,)))["run_id"]) == {
        other.run_id
    }
    assert queries.models(RunFilter(session_id="s2")) == ["fake:a", "fake:b", "fake:c", "fake:root"]


def test_the_timeline_places_nodes_and_calls_in_run_time_with_models_and_tokens(store):
    result = _run(store, session="s", outputs={"a": "A", "b": "B", "c": "C"}, sc=True)
    timeline = TraceQueries(store).timeline(result.run_id)
    nodes = timeline[timeline["span_kind"] == "node"].set_index("node_id")
    calls = timeline[timeline["span_kind"] == "call"]
    assert set(nodes.index) == {"root", "a", "b", "c"}
    assert (timeline["start_s"] >= -0.001).all() and (
        timeline["end_s"] >= timeline["start_s"]
    ).all()
    # b depends on a: it starts after a ends.
    assert nodes.loc["b", "start_s"] >= nodes.loc["a", "end_s"] - 0.001
    assert (calls["role"] == "sample").sum() == 3 and set(calls["model"]) == {
        "fake:a",
        "fake:b",
        "fake:c",
        "fake:root",
    }
    assert calls["output_tokens"].sum() == result.output_tokens


def test_node_costs_and_detail_show_every_sample_with_votes(store):
    result = _run(store, session="s", outputs={"b": "42"}, sc=True)
    queries = TraceQueries(store)
    costs = queries.node_costs(result.run_id).set_index("node_id")
    assert costs.loc["b", "calls"] == 3 and costs.loc["a", "calls"] == 1
    assert costs["tokens"].sum() == result.input_tokens + result.output_tokens
    detail = queries.node_detail(result.run_id, "b")
    assert len(detail.calls) == 3 and set(detail.calls["role"]) == {"sample"}
    assert detail.votes.iloc[0]["samples"] == 3 and bool(detail.votes.iloc[0]["chosen"])
    assert detail.messages(0)[-1]["role"] == "user"
    with pytest.raises(Exception, match="no node 'zz'"):
        queries.node_detail(result.run_id, "zz")


def test_compare_reports_plan_changes_output_differences_and_deltas(store):
    first = _run(store, session="s", outputs={"a": "A", "b": "B1", "c": "C"})
    second = _run(store, session="s", outputs={"a": "A", "b": "B2\nmore", "c": "C"})
    comparison = TraceQueries(store).compare(first.run_id, second.run_id)
    nodes = comparison.nodes.set_index("node_id")
    assert bool(nodes.loc["a", "same_output"]) and not bool(nodes.loc["b", "same_output"])
    assert comparison.plan_diff is not None and comparison.plan_diff.empty
    assert "1 of 4 nodes have a different output" in comparison.notes
    totals = comparison.totals.set_index("measure")
    assert totals.loc["tokens", "delta"] == (
        second.input_tokens + second.output_tokens - first.input_tokens - first.output_tokens
    )
    diff = output_diff(nodes.loc["b", "output_a"], nodes.loc["b", "output_b"])
    assert "-B1" in diff and "+B2" in diff and "+more" in diff
    assert output_diff("same", "same") == ""


def test_trends_give_one_row_per_run_oldest_first(store):
    runs = [_run(store, session="s", outputs={}, fail="c" if i == 1 else None) for i in range(3)]
    trends = TraceQueries(store).trends(RunFilter(session_id="s"))
    assert trends["run_id"].tolist() == [r.run_id for r in runs]
    assert trends["run_number"].tolist() == [1, 2, 3]
    assert trends["nodes_failed"].tolist() == [0, 1, 0]


def test_parse_prompt_reads_chat_json_and_falls_back_to_raw_text():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse_prompt(json.dumps(messages)) == messages
    assert parse_prompt("plain text") == [{"role": "user", "content": "plain text"}]
    assert parse_prompt(None) == []


# -- the SQL console -------------------------------------------------------------------------


def test_the_console_runs_a_select_with_a_row_limit_and_changes_nothing(store):
    _run(store, session="s", outputs={})
    result = run_read_only(store, "SELECT * FROM spans ORDER BY start_time", max_rows=3)
    assert len(result.frame) == 3 and result.truncated
    assert "gen_ai_request_model" in result.frame.columns
    full = run_read_only(store, "select count(*) AS n from model_calls;")
    assert full.frame["n"].iloc[0] == 4 and not full.truncated


def test_the_console_fills_in_the_latest_runs_as_bound_values(store):
    with pytest.raises(QueryRefused, match=r"\$latest_run has no value"):
        run_read_only(store, "SELECT count(*) AS n FROM spans WHERE run_id = $latest_run")
    first = _run(store, session="s", outputs={})
    second = _run(store, session="s", outputs={})
    result = run_read_only(
        store,
        "SELECT DISTINCT run_id, $previous_run AS before FROM spans WHERE run_id = $latest_run",
    )
    assert result.frame.to_dict("records") == [{"run_id": second.run_id, "before": first.run_id}]
    # The shipped span tree example uses it: every span of the newest run and no other.
    [tree_example] = [q for q in SavedQueries.examples() if q.title.startswith("Span tree")]
    spans = run_read_only(store, tree_example.sql).frame
    assert (
        len(spans)
        == run_read_only(store, f"SELECT count(*) AS n FROM spans WHERE run_id = '{second.run_id}'")
        .frame["n"]
        .iloc[0]
    )
    with pytest.raises(QueryRefused, match=r"Unknown value \$secret; the console fills in"):
        run_read_only(store, "SELECT $secret AS x")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DELETE FROM runs", "read-only"),
        ("DROP TABLE runs", "read-only"),
        ("UPDATE runs SET status = 'x'", "read-only"),
        ("COPY runs TO '/tmp/x.csv'", "read-only"),
        ("ATTACH '/tmp/other.duckdb'", "read-only"),
        ("SELECT 1; DELETE FROM runs", "One statement"),
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM '/etc/passwd'", "outside"),
        ("SELECT * FROM 'data.csv'", "outside"),
        ("SELEC nothing", "does not parse"),
        ("   ", "empty"),
    ],
)
def test_the_console_refuses_anything_but_one_select_over_the_store(store, sql, message):
    _run(store, session="s", outputs={})
    before = run_read_only(store, "SELECT count(*) AS n FROM runs").frame["n"].iloc[0]
    with pytest.raises(QueryRefused, match=message):
        run_read_only(store, sql)
    assert run_read_only(store, "SELECT count(*) AS n FROM runs").frame["n"].iloc[0] == before


def test_a_slow_query_is_stopped_at_the_time_limit(store):
    _run(store, session="s", outputs={})
    with pytest.raises(QueryRefused, match="longer than"):
        run_read_only(
            store,
            "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range % 7 = b.range",
            timeout_s=0.3,
        )


def test_saved_queries_ship_examples_that_run_and_keep_the_analysts_own(store, tmp_path):
    _run(store, session="s", outputs={}, sc=True)
    saved = SavedQueries(tmp_path)
    examples = saved.examples()
    assert len(examples) >= 5
    for query in examples:  # every shipped example passes the check and runs
        assert not run_read_only(store, query.sql).frame.columns.empty, query.title
    saved.save("mine", "SELECT run_id FROM runs")
    assert [q.title for q in saved.list() if not q.example] == ["mine"]
    with pytest.raises(QueryRefused, match="read-only"):
        saved.save("bad", "DELETE FROM runs")
    with pytest.raises(QueryRefused, match="shipped example"):
        saved.save(examples[0].title, "SELECT 1")
    saved.delete("mine")
    assert all(q.example for q in saved.list())
    (tmp_path / "queries.json").write_text("{broken")
    with pytest.raises(Exception, match="cannot be read"):
        saved.list()
    assert (tmp_path / "queries.json").read_text() == "{broken"
    assert check_read_only("  select 1 ; ") == "select 1"


def test_the_examples_that_skip_the_spans_view_give_what_its_spans_give(store):
    # They read model_calls instead of the spans view (7-10 times faster on a large store);
    # the figures must be the ones the view's call spans give.
    _run(store, session="s", outputs={}, sc=True)
    _run(store, session="s", outputs={}, fail="c")
    by_title = {query.title: query.sql for query in SavedQueries.examples()}
    per_model = run_read_only(store, by_title["Tokens, cost and latency per model"]).frame
    spans = run_read_only(
        store,
        "SELECT gen_ai_request_model AS model, count(*) AS calls,"
        " sum(gen_ai_usage_input_tokens) AS input_tokens,"
        " sum(gen_ai_usage_output_tokens) AS output_tokens,"
        " round(sum(arbor_cost_usd), 6) AS cost_usd"
        " FROM spans WHERE span_kind = 'call' GROUP BY model ORDER BY calls DESC, model",
    ).frame
    columns = ["model", "calls", "input_tokens", "output_tokens", "cost_usd"]
    mine = per_model[columns].sort_values(["calls", "model"], ascending=[False, True])
    assert len(spans) >= 2 and spans["calls"].sum() >= 8
    assert mine.reset_index(drop=True).equals(spans.reset_index(drop=True))
    slowest = run_read_only(store, by_title["The 20 slowest model calls"]).frame
    calls = store.model_calls(slowest["run_id"].iloc[0])
    assert slowest["latency_s"].tolist() == sorted(slowest["latency_s"], reverse=True)
    assert slowest["latency_s"].iloc[0] == round(max(c["latency_s"] for c in calls), 3)
    assert set(slowest["status"]) >= {"ok"}
    failures = run_read_only(store, by_title["Failed nodes and calls, newest first"]).frame
    failed_spans = run_read_only(
        store,
        "SELECT start_time, run_id, node_id, span_kind, name, status, status_message FROM spans"
        " WHERE status_code = 'ERROR' AND span_kind IN ('node', 'call')"
        " ORDER BY start_time DESC, span_kind, node_id",
    ).frame
    assert {"node", "call"} <= set(failed_spans["span_kind"])
    mine = failures.sort_values(
        ["start_time", "span_kind", "node_id"], ascending=[False, True, True]
    )
    assert mine.reset_index(drop=True).equals(failed_spans.reset_index(drop=True))


def test_a_run_whose_process_died_is_listed_as_interrupted(store):
    import subprocess
    import sys

    from engine.run.events import RunStarted

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    store.record(RunStarted("ghost", "s", "task", "{}", "{}", datetime.now(UTC), pid=dead_pid))
    store.record(RunStarted("alive", "s", "task", "{}", "{}", datetime.now(UTC)))  # this pid
    statuses = TraceQueries(store).runs().set_index("run_id")["status"]
    assert statuses["ghost"] == "interrupted" and statuses["alive"] == "running"
