"""The Sessions page under Streamlit's AppTest: search, rename, duplicate, delete (with or
without runs), export download and import of a valid and of a corrupt file.

Runs here are recorded trace rows (``TraceStore.record`` with events), not model calls: no model
behaviour is under test. The round trip with the real model lives in ``test_bundles.py``.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.plan import Node, Plan
from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunFinished, RunStarted
from storage import bundles
from storage.bundles import export_session
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.apptest import choice, notices

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def record_run(workspace: Workspace, session: ArborSession, run_id: str, minute: int = 0) -> None:
    """A finished one-node run with one model call, written through a trace writer as a run
    would write it (one batch: far quicker than an event per transaction)."""
    start = T0 + timedelta(minutes=minute)
    end = start + timedelta(seconds=2)
    plan_json = session.plan.to_json() if session.plan else "{}"
    with workspace.traces.writer() as write:
        write(RunStarted(run_id, session.id, session.task, plan_json, "{}", start))
        write(NodeStarted(run_id, "root", "Root", "m", start))
        write(
            ModelCallFinished(
                run_id, "root", f"{run_id}-call", "m", "[]", "an answer", 4, 2, 0.1, "ok", None,
                start, start + timedelta(seconds=1), cache_key=f"key-{run_id}",
            )
        )  # fmt: skip
        write(NodeFinished(run_id, "root", "Root", "done", "an answer", None, 4, 2, start, end))
        write(RunFinished(run_id, "completed", None, "an answer", 4, 2, end))
    workspace.sessions.add_run(session.id, run_id)


def make_session(workspace: Workspace, name: str, task: str) -> ArborSession:
    plan = Plan(task=task, root=Node(id="root", title="Root", instruction=task))
    return workspace.sessions.save(ArborSession(name=name, task=task, plan=plan))


@pytest.fixture
def data(tmp_path: Path) -> tuple[Workspace, ArborSession, ArborSession]:
    """A data dir with a session of two runs ("Haiku") and one without runs ("Fruit")."""
    workspace = Workspace(tmp_path / "data")
    haiku = make_session(workspace, "Haiku", "Write a haiku about autumn leaves.")
    record_run(workspace, haiku, "run-a", 0)
    record_run(workspace, haiku, "run-b", 1)
    fruit = make_session(workspace, "Fruit", "Name three fruits.")
    return workspace, workspace.sessions.get(haiku.id), fruit


@pytest.fixture
def page(data, monkeypatch) -> AppTest:
    workspace, _, _ = data
    monkeypatch.setenv("ARBOR_DATA_DIR", str(workspace.root))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("ui/sessions_page.py").run()
    assert not at.exception, at.exception
    return at


def choose(at: AppTest, session: ArborSession) -> AppTest:
    choice(at, "open_choice").set_value(session.id).run()
    assert not at.exception, at.exception
    return at


def table_names(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["name"]) if at.dataframe else []


def counts(workspace: Workspace) -> tuple[int, int, int, int]:
    """Sessions, runs, node rows, call rows: what an action must not change when refused."""
    with workspace.traces.connect() as con:
        runs, nodes, calls = (
            con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("runs", "node_executions", "model_calls")
        )
    return len(workspace.sessions.list()), runs, nodes, calls


def test_search_narrows_the_table_to_matching_names_and_tasks_in_any_case(page):
    assert sorted(table_names(page)) == ["Fruit", "Haiku"]
    page.text_input(key="session_search").input("AUTUMN").run()
    assert table_names(page) == ["Haiku"]  # matched in the task, another case
    page.text_input(key="session_search").input("fru").run()
    assert table_names(page) == ["Fruit"]
    page.text_input(key="session_search").input("nothing like this").run()
    assert table_names(page) == []
    assert any("nothing like this" in info.value for info in page.info)


def test_rename_saves_the_new_name_and_a_blank_name_is_refused(page, data):
    workspace, haiku, _ = data
    choose(page, haiku)
    assert page.text_input(key="rename_name").value == "Haiku"
    page.text_input(key="rename_name").input("Autumn haiku")
    page.button(key="rename_button").click().run()
    assert not page.exception
    assert workspace.sessions.get(haiku.id).name == "Autumn haiku"
    assert any("Autumn haiku" in text for text in notices(page))

    page.text_input(key="rename_name").input("   ")
    page.button(key="rename_button").click().run()
    assert any("must not be blank" in e.value for e in page.error)
    assert workspace.sessions.get(haiku.id).name == "Autumn haiku"


def test_duplicate_saves_a_copy_without_runs_and_selects_it(page, data):
    workspace, haiku, _ = data
    choose(page, haiku)
    page.button(key="duplicate_button").click().run()
    assert not page.exception
    copies = [s for s in workspace.sessions.list() if s.name == "Haiku (copy)"]
    assert len(copies) == 1
    copy = copies[0]
    assert copy.id != haiku.id and copy.plan == haiku.plan and copy.run_ids == []
    assert choice(page, "open_choice").value == copy.id
    assert workspace.sessions.get(haiku.id).run_ids == ["run-a", "run-b"]  # runs stay


def test_delete_needs_the_confirmation_and_keeps_the_runs_unless_asked(page, data):
    workspace, _, fruit = data
    choose(page, fruit)
    assert page.button(key="delete_button").disabled
    page.checkbox(key="delete_confirm").check().run()
    page.button(key="delete_button").click().run()
    assert not page.exception
    assert [s.name for s in workspace.sessions.list()] == ["Haiku"]
    assert table_names(page) == ["Haiku"]
    assert counts(workspace)[1:] == (2, 2, 2)


def test_delete_with_runs_removes_the_sessions_trace_rows(page, data):
    workspace, haiku, fruit = data
    other = make_session(workspace, "Other", "Other task")
    record_run(workspace, other, "run-other")
    page.run()
    choose(page, haiku)
    page.checkbox(key="delete_confirm").check()
    page.checkbox(key="delete_runs").check().run()
    page.button(key="delete_button").click().run()
    assert not page.exception
    assert {s.id for s in workspace.sessions.list()} == {fruit.id, other.id}
    assert counts(workspace)[1:] == (1, 1, 1)  # only the other session's run is left
    assert workspace.traces.run("run-a") is None and workspace.traces.run("run-other")
    assert workspace.sessions.revisions.count(haiku.id) == 0


def test_export_offers_an_arbor_download_of_the_chosen_runs(page, data, monkeypatch):
    _, haiku, _ = data
    offered: list[bytes] = []
    original = bundles.export_session_bytes

    def keep_bytes(*args, **kwargs):
        data, report = original(*args, **kwargs)
        offered.append(data)
        return data, report

    monkeypatch.setattr(bundles, "export_session_bytes", keep_bytes)
    choose(page, haiku)
    assert page.multiselect(key="export_runs").value == ["run-a", "run-b"]
    button = page.get("download_button")[0]
    assert button.proto.label.startswith("Download .arbor file (2 run(s)")
    page.multiselect(key="export_runs").set_value(["run-b"]).run()
    button = page.get("download_button")[0]
    assert button.proto.label.startswith("Download .arbor file (1 run(s)")
    assert button.proto.url.endswith(".zip") and not page.error
    # What the button offers is a bundle of the chosen run only.
    with zipfile.ZipFile(io.BytesIO(offered[-1])) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["session_id"] == haiku.id and manifest["run_ids"] == ["run-b"]


def _bundle_bytes(tmp_path: Path) -> tuple[bytes, ArborSession]:
    """An .arbor file made in another data dir: a session with one run."""
    elsewhere = Workspace(tmp_path / "elsewhere")
    shared = make_session(elsewhere, "Shared", "A task from a colleague.")
    record_run(elsewhere, shared, "run-shared")
    path = export_session(elsewhere, shared.id, tmp_path / "shared.arbor").path
    return path.read_bytes(), shared


def test_import_of_an_arbor_file_opens_the_session_with_its_runs(page, data, tmp_path):
    workspace, _, _ = data
    content, shared = _bundle_bytes(tmp_path)
    page.file_uploader(key="import_file").upload("shared.arbor", content).run()
    page.button(key="import_button").click().run()
    assert not page.exception, page.exception
    assert page.session_state.session.id == shared.id
    assert page.session_state.session.run_ids == ["run-shared"]
    assert any("1 run(s) imported" in text for text in notices(page))
    run = workspace.traces.run("run-shared")
    assert run["origin"].startswith("imported from shared.arbor on ")
    assert workspace.sessions.get(shared.id).name == "Shared"


def test_import_of_a_corrupt_file_shows_the_error_and_changes_nothing(page, data, tmp_path):
    workspace, _, _ = data
    content, _ = _bundle_bytes(tmp_path)
    source = zipfile.ZipFile(io.BytesIO(content))
    tampered = io.BytesIO()
    with zipfile.ZipFile(tampered, "w") as out:
        for name in source.namelist():
            body = source.read(name)
            out.writestr(
                name, body.replace(b"Shared", b"Stolen") if name == "session.json" else body
            )
    before = counts(workspace)
    page.file_uploader(key="import_file").upload("shared.arbor", tampered.getvalue()).run()
    page.button(key="import_button").click().run()
    assert not page.exception
    assert any("corrupt: member session.json" in e.value for e in page.error)
    assert page.title[0].value == "Sessions"  # still here, nothing opened
    assert counts(workspace) == before


@pytest.mark.parametrize(
    "page",
    ["ui/workbench.py", "ui/inspector_page.py", "ui/sessions_page.py", "ui/evaluate_page.py"],
)
def test_a_corrupt_session_store_is_one_line_on_every_page_and_left_alone(
    tmp_path, monkeypatch, page
):
    data = tmp_path / "data"
    data.mkdir()
    store = data / "sessions.sqlite"
    store.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    before = store.read_bytes()
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    if page != "ui/workbench.py":
        at.switch_page(page)
        at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("session store" in e and "cannot be read" in e for e in errors), errors
    assert store.read_bytes() == before
