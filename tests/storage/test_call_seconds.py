"""``TraceStore.call_seconds``: what the Evaluate page's time estimate rests on."""

from __future__ import annotations

from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.workspace import Workspace
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree


def test_seconds_per_call_are_the_median_of_live_successful_calls_per_model(tmp_path):
    ws = Workspace(tmp_path)
    plan = fake_models(tree({"id": "root", "children": [{"id": "a"}]}, task="t"))
    factory, _ = fake_factory(
        {"a": Behaviour(output="A", sleep_s=0.05), "root": Behaviour(output="R", sleep_s=0.0)}
    )
    with ws.traces.writer() as writer:
        execute_plan(plan, RunCaps(), backend_factory=factory, listeners=[writer])
    seconds = ws.traces.call_seconds(["fake:a", "fake:root", "unknown"])
    assert set(seconds) == {"fake:a", "fake:root"}
    slow, calls = seconds["fake:a"]
    assert calls == 1 and slow >= 0.05
    assert seconds["fake:root"][0] < slow
    # A replayed call is no measurement: its latency is the original's, or none.
    with ws.traces.connect() as con:
        con.execute("UPDATE model_calls SET reused_from = 'x' WHERE model = 'fake:a'")
    assert "fake:a" not in ws.traces.call_seconds(["fake:a"])
