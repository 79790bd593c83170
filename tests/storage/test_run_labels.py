"""Run names and tags in the trace store (migration 9, ``storage.traces.labels``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import TraceStoreError
from engine.run.events import RunStarted
from storage.traces.labels import MAX_TAGS, clean_tags
from storage.traces.store import TraceStore


@pytest.fixture
def store(tmp_path) -> TraceStore:
    store = TraceStore(tmp_path / "traces.duckdb")
    with store.writer() as write:
        for run_id in ("r1", "r2"):
            write(RunStarted(run_id, None, "task", "{}", "{}", datetime.now(UTC)))
    return store


def test_a_run_is_named_and_tagged_and_each_part_changes_alone(store):
    label = store.label_run("r1", name="  Baseline   run ", tags=["Baseline", "prompt v2"])
    assert label.name == "Baseline run" and label.tags == ("baseline", "prompt-v2")
    assert store.label_run("r1", tags=["other"]).name == "Baseline run"  # name kept
    assert store.label_run("r1", name="").tags == ("other",)  # tags kept, name cleared
    assert store.run_labels() == {"r1": store.run_labels(["r1"])["r1"]}
    assert store.run_labels(["r2"]) == {}


def test_labels_survive_the_run_being_recorded_again(store):
    store.label_run("r1", name="kept", tags=["x"])
    with store.writer() as write:
        write(RunStarted("r1", None, "task again", "{}", "{}", datetime.now(UTC)))
    assert store.run_labels(["r1"])["r1"].name == "kept"


def test_bad_labels_are_refused_in_one_line(store):
    with pytest.raises(TraceStoreError, match="No run 'nope'"):
        store.label_run("nope", name="x")
    with pytest.raises(TraceStoreError, match="at most 120 characters"):
        store.label_run("r1", name="x" * 121)
    with pytest.raises(TraceStoreError, match="comma"):
        clean_tags(["a,b"])
    with pytest.raises(TraceStoreError, match=f"at most {MAX_TAGS} tags"):
        store.label_run("r1", tags=[f"t{i}" for i in range(MAX_TAGS + 1)])
    assert store.run_labels() == {}


def test_an_otlp_export_carries_the_run_name_and_tags(store):
    from storage.trace_export import run_to_otlp

    store.label_run("r1", name="Baseline", tags=["b", "a"])
    resource = run_to_otlp(store, "r1")["resourceSpans"][0]["resource"]["attributes"]
    found = {item["key"]: item["value"] for item in resource}
    assert found["arbor.run.name"] == {"stringValue": "Baseline"}
    assert found["arbor.run.tags"] == {
        "arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}
    }
    plain = run_to_otlp(store, "r2")["resourceSpans"][0]["resource"]["attributes"]
    assert not {"arbor.run.name", "arbor.run.tags"} & {item["key"] for item in plain}
