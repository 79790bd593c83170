"""The Settings page under Streamlit's AppTest: live export set for this server (in memory,
header values never shown back), turned off, back to the environment; "Send this run" to a real
loopback OTLP receiver, and a receiver that is down shown as one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.run.events import ModelCallFinished, NodeFinished, NodeStarted, RunFinished, RunStarted
from storage import otlp_live
from storage.workspace import Workspace
from tests.support.apptest import notices
from tests.support.otlp_receiver import OtlpReceiver, closed_port

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
SECRET = "page-secret-value"


def record_run(workspace: Workspace, run_id: str) -> None:
    end = T0 + timedelta(seconds=2)
    with workspace.traces.writer() as write:
        write(RunStarted(run_id, None, "Say hi.", "{}", "{}", T0))
        write(NodeStarted(run_id, "root", "Root", "m", T0))
        write(
            ModelCallFinished(
                run_id, "root", f"{run_id}-call", "m", "[]", "hi", 4, 2, 0.1, "ok", None,
                T0, T0 + timedelta(seconds=1),
            )
        )  # fmt: skip
        write(NodeFinished(run_id, "root", "Root", "done", "hi", None, 4, 2, T0, end))
        write(RunFinished(run_id, "completed", None, "hi", 4, 2, end))


@pytest.fixture
def page(tmp_path, monkeypatch) -> AppTest:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    otlp_live.reset()
    workspace = Workspace(tmp_path / "data")
    record_run(workspace, "run-page")
    monkeypatch.setenv("ARBOR_DATA_DIR", str(workspace.root))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    at.switch_page("ui/settings_page.py").run()
    assert not at.exception, at.exception
    yield at
    otlp_live.reset()


def text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown) + " ".join(notices(at))


def test_live_export_is_set_for_this_server_and_never_shows_the_header(page):
    assert "Live export is **off**" in text(page)
    with OtlpReceiver() as receiver:
        page.text_input(key="otlp_url").set_value(receiver.endpoint)
        page.text_input(key="otlp_headers").set_value(f"authorization={SECRET}")
        page.button(key="otlp_use").click().run()
        assert not page.exception, page.exception
        shown = text(page)
        assert receiver.endpoint in shown and "authorization=***" in shown and SECRET not in shown
        target = otlp_live.current_target()
        assert target is not None and dict(target.headers) == {"authorization": SECRET}
        page.button(key="otlp_off").click().run()
        assert otlp_live.current_target() is None and "Live export is **off**" in text(page)


def test_send_this_run_reaches_the_receiver(page):
    with OtlpReceiver() as receiver:
        page.text_input(key="otlp_url").set_value(receiver.endpoint).run()
        page.text_input(key="otlp_run_id").set_value("run-page").run()
        page.button(key="otlp_send").click().run()
        assert not page.exception, page.exception
        assert len(receiver.spans) == 3  # run, node, call
    assert any("sent 3 spans of run run-page" in s.value for s in page.success)


def test_send_to_a_receiver_that_is_down_is_one_line(page):
    page.text_input(key="otlp_url").set_value(f"http://127.0.0.1:{closed_port()}/v1/traces")
    page.text_input(key="otlp_headers").set_value(f"authorization={SECRET}")
    page.text_input(key="otlp_run_id").set_value("run-page").run()
    page.button(key="otlp_send").click().run()
    [error] = [e.value for e in page.error]
    assert error.startswith("OTLP export to http://127.0.0.1:") and SECRET not in error
