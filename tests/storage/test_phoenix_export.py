"""Live export to a real Arize Phoenix on loopback: a real run of the bundled model, sent as it
finishes, read back through Phoenix's REST API (span names, parent links, token counts, the
model). Phoenix starts once for the module (about 20-30 s on a busy 2-core machine).

Skips when arize-phoenix (the ``test`` extra) is missing, except under CI=true, where it fails."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.plan import GenerationConfig, Node, Plan
from engine.plan.compute_config import StrategyConfig
from engine.run.budget import RunCaps
from storage import otlp_live
from storage.trace_export import run_to_otlp
from storage.workspace import Workspace
from tests.support.otlp_receiver import phoenix_executable, serve_phoenix

PROJECT = "arbor-tests"
CAPS = RunCaps(total_tokens=6000, max_tokens_per_node=16, max_parallel=2)

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory):
    if phoenix_executable() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("arize-phoenix is missing under CI: install the test extra.")
        pytest.skip("arize-phoenix is not installed (pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("phoenix")
    with serve_phoenix(folder / "work", folder / "phoenix.log") as base_url:
        yield base_url


def phoenix_spans(base_url: str, trace_id: str, count: int, timeout_s: float = 60) -> list[dict]:
    """The spans of ``trace_id`` in the test project, polled until ``count`` arrived (Phoenix
    ingests in the background)."""
    url = f"{base_url}/v1/projects/{PROJECT}/spans?limit=1000&trace_id={trace_id}"
    spans: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                spans = json.load(reply)["data"]
        except OSError:  # the project exists once its first span is in
            spans = []
        if len(spans) >= count:
            return spans
        time.sleep(0.5)
    return spans


def test_a_real_run_reaches_phoenix_with_names_parents_tokens_and_model(
    phoenix, bundled_path: Path, tmp_path, monkeypatch
):
    assert bundled_path.exists()  # the run uses the bundled model (the Plan's default)
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix)  # base URL: /v1/traces appended
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-project-name={PROJECT}")
    otlp_live.reset()
    workspace = Workspace(tmp_path / "data")
    plan = Plan(
        task="Name a fruit and a colour.",
        root=Node(
            id="root",
            title="Combine",
            instruction="Combine the results.",
            children=[
                Node(id="fruit", title="Fruit", instruction="Name one fruit."),
                Node(
                    id="colour",
                    title="Colour",
                    instruction="Name one colour.",
                    strategy=StrategyConfig(
                        kind="self_consistency", samples=2, min_samples=2, early_stop=False
                    ),
                ),
            ],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=3),
    )
    try:
        result = workspace.run_plan(plan, CAPS, use_cache=False)
        live = otlp_live.live_exporter()
        assert live is not None and live.flush(60)
        assert live.problem is None, live.problem
        request = run_to_otlp(workspace.traces, result.run_id)
    finally:
        otlp_live.reset()
    expected = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    trace_id = expected[0]["traceId"]
    got = phoenix_spans(phoenix, trace_id, len(expected))
    report = sorted((s["name"], s["span_kind"]) for s in got)
    print(f"Phoenix holds {len(got)} spans of run {result.run_id}: {report}")
    for span in got:  # what the report quotes: parent links, tokens, model
        a = span["attributes"]
        print(
            f"  {span['name']!r} {span['span_kind']} parent={span['parent_id']}"
            f" id={span['context']['span_id']} model={a.get('llm.model_name')}"
            f" tokens={a.get('llm.token_count.prompt')}/{a.get('llm.token_count.completion')}"
        )
    assert len(got) == len(expected)
    by_id = {s["context"]["span_id"]: s for s in got}
    for want in expected:
        span = by_id[want["spanId"]]
        assert span["name"] == want["name"]
        assert span["parent_id"] == want.get("parentSpanId")
        assert span["context"]["trace_id"] == trace_id
    [root] = [s for s in got if s["parent_id"] is None]
    assert root["name"] == "invoke_agent arbor" and root["span_kind"] == "AGENT"
    calls = [s for s in got if s["span_kind"] == "LLM"]
    assert len(calls) == 4  # fruit, two colour samples, the root
    stored_models = {
        kv["value"]["stringValue"]
        for span in expected
        for kv in span["attributes"]
        if kv["key"] == "gen_ai.request.model"
    }
    assert stored_models == {"bundled:gemma-3-270m"}  # the bundled model's label
    for call in calls:
        attributes = call["attributes"]
        assert attributes["llm.model_name"] == "bundled:gemma-3-270m"
        assert 0 < attributes["llm.token_count.completion"] <= 8
        assert attributes["gen_ai.request.model"] == attributes["llm.model_name"]
    # every span's token counts are the store's (a sample whose prompt the KV cache already
    # held may count 0 prompt tokens: the model's own count, passed on as it is)
    for want in expected:
        stored = {kv["key"]: kv["value"] for kv in want["attributes"]}
        attributes = by_id[want["spanId"]]["attributes"]
        for gen_ai, openinference in (
            ("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
            ("gen_ai.usage.output_tokens", "llm.token_count.completion"),
        ):
            if gen_ai in stored:
                assert attributes[openinference] == int(stored[gen_ai]["intValue"]), want["name"]
    assert sum(c["attributes"]["llm.token_count.prompt"] for c in calls) > 0
    # the run's tokens are the calls' tokens, in Phoenix as in the store
    run_attributes = root["attributes"]
    assert run_attributes["llm.token_count.prompt"] == sum(
        c["attributes"]["llm.token_count.prompt"] for c in calls
    )
    assert run_attributes["llm.token_count.completion"] == result.output_tokens
    samples = [s for s in got if s["name"].startswith("sample ")]
    assert {s["parent_id"] for s in samples} == {
        next(s["context"]["span_id"] for s in got if s["name"] == "invoke_agent Colour")
    }
