"""The real UI in headless Chromium: task -> decompose -> run -> answer and traces -> save.

Needs Debian's chromium (the install step puts it there). On a developer machine without it the
test skips; under CI=true a missing browser is a failure, or the suite proves nothing about the UI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.workspace import Workspace

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


ROOT = Path(__file__).resolve().parent.parent


@dataclass
class UIServer:
    url: str
    workspace: Workspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """``run.py`` serving the UI on loopback with a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("ui-data")
    port = _free_port()
    env = {**os.environ, "ARBOR_DATA_DIR": str(data_dir)}
    log = (tmp_path_factory.mktemp("ui-log") / "streamlit.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"the UI did not start on {url}; see {log.name}")
    yield UIServer(url=url, workspace=Workspace(data_dir))
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing under CI: the install step must provide it.")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_task_is_decomposed_run_traced_and_saved_in_a_real_browser(browser, ui_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.get_by_label("Task").fill("Plan a picnic for six friends in a city park.")
    page.get_by_role("button", name="Decompose").click()

    graph = page.locator('[data-testid="stGraphVizChart"] svg g.node')
    graph.first.wait_for(timeout=240_000)
    assert graph.count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-plan.png"), full_page=True)

    # Lower the per-node output cap from 256 to 64 tokens with the keyboard, as a user could.
    node_cap = page.get_by_role("slider").nth(1)
    node_cap.focus()
    for _ in range(12):
        node_cap.press("ArrowLeft")
    page.get_by_text("64", exact=True).wait_for()

    page.get_by_role("button", name="Run plan").click()
    page.get_by_role("heading", name="Answer").wait_for(timeout=300_000)
    page.get_by_role("heading", name="Model calls").wait_for()
    calls_table = page.locator('[data-testid="stDataFrame"]').last
    calls_table.wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser-run.png"), full_page=True)
    assert (
        page.get_by_text(re.compile(r"Run run-\d{8}-\d{6}-\w+: (completed|stopped)")).count() == 1
    )

    page.get_by_role("button", name="Save session").click()
    page.get_by_text("Saved session").wait_for()
    saved = ui_server.workspace.sessions.list()
    assert len(saved) == 1
    assert saved[0].plan is not None
    assert saved[0].task == "Plan a picnic for six friends in a city park."
    assert len(saved[0].run_ids) == 1
    run = ui_server.workspace.traces.run(saved[0].run_ids[0])
    assert run is not None and run["status"] in {"completed", "stopped"}
    assert saved[0].caps.max_tokens_per_node == 64
    calls = ui_server.workspace.traces.model_calls(run["run_id"])
    assert calls and all(call["output_tokens"] <= 64 for call in calls)
    page.close()
