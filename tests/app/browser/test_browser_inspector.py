"""The Inspector and session sharing in a real browser, on the bundled model.

Two runs of one session (the second after an edit, so outputs differ) are made on the real
model; in headless Chromium the Inspector shows the first run's timeline and compares the two;
the Sessions page exports the session as an .arbor file (a real download); a second UI server
over a fresh data directory imports it, and its Inspector shows the same runs, read-only, with
the same node outputs. The screenshots are the README's (assets/screenshots/, rewritten only
with ARBOR_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from engine.plan import GenerationConfig, Node, Plan
from engine.run.budget import RunCaps
from storage.sessions import ArborSession
from storage.trace_queries import TraceQueries
from tests.support.browser import ARTIFACTS, _choose, _click, _settled
from tests.support.servers import serve_ui

pytestmark = [pytest.mark.browser, pytest.mark.model]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "assets" / "screenshots"


def _plan(instruction: str) -> Plan:
    return Plan(
        task="Name two colours of autumn leaves.",
        root=Node(
            id="root",
            title="Answer",
            instruction="List the colours named below in one line.",
            children=[Node(id="colours", title="Colours", instruction=instruction)],
        ),
        default_generation=GenerationConfig(
            max_tokens=12, temperature=0.0, prompt_format="completion"
        ),
    )


def _pick_run(page, label: str, run_id: str) -> None:
    """Choose the option of selectbox ``label`` whose text holds the tail of ``run_id``."""
    _settled(page)
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.fill(run_id[-6:])  # the combobox filters its options by what is typed
    page.get_by_role("option", name=re.compile(re.escape(run_id[-6:]))).first.click()
    _settled(page)


def _view(page, name: str) -> None:
    """Switch the Inspector's view (a segmented control: a group of toggle buttons)."""
    _settled(page)
    group = page.locator('[data-testid="stButtonGroup"]').first
    group.get_by_text(name, exact=True).click()
    _settled(page)


def _shot(page, name: str) -> None:
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 5000)})
    _settled(page)
    page.wait_for_timeout(800)  # charts redraw at the new size
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)
    if os.environ.get("ARBOR_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1100})


def test_inspect_compare_export_and_import_into_a_fresh_data_dir(
    browser, ui_server, tmp_path_factory
):
    ws = ui_server.workspace
    session = ws.sessions.save(ArborSession(name="Autumn colours", task=_plan("x").task))
    first = ws.run_plan(
        _plan("Name one colour of autumn leaves."), RunCaps(), session_id=session.id
    )
    second = ws.run_plan(
        _plan("Count from one to five in words."), RunCaps(), session_id=session.id
    )
    # 12 tokens cut most answers off: a finished run is "completed" or, cut off, "suspect".
    assert first.status == second.status and first.status in {"completed", "suspect"}
    outputs = {n["node_id"]: n["output"] for n in ws.traces.node_executions(second.run_id)}
    before = {n["node_id"]: n["output"] for n in ws.traces.node_executions(first.run_id)}
    assert before["colours"] != outputs["colours"], "same output: nothing to compare"
    assert outputs["colours"].strip(), "the model gave an empty answer: nothing to look for"

    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.set_default_timeout(60_000)

    # -- the Inspector over this data directory ------------------------------------------------
    page.goto(f"{ui_server.url}/inspector_page")
    page.get_by_role("heading", name="Inspector").first.wait_for()
    _pick_run(page, "Run to inspect", first.run_id)
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()  # the timeline
    _shot(page, "inspector")

    _pick_run(page, "Run to inspect", second.run_id)
    _view(page, "Compare")
    _pick_run(page, "Compare with (run A, the baseline)", first.run_id)
    expect(page.get_by_text(re.compile(r"[12] of 2 nodes have a different output"))).to_be_visible()
    _shot(page, "compare")
    expect(page.locator('[data-testid="stCode"]').first).to_be_visible()  # an output diff

    _view(page, "Export")
    with page.expect_download() as otlp:
        page.get_by_role("button", name=re.compile("^OTLP JSON")).click()
    assert b"resourceSpans" in Path(otlp.value.path()).read_bytes()

    # -- export the session as one file ------------------------------------------------------
    page.get_by_role("link", name="Sessions").click()
    page.get_by_role("heading", name="Sessions").first.wait_for()
    _settled(page)
    box = page.get_by_role("combobox", name="Session", exact=True)
    box.click()
    page.get_by_role("option", name=re.compile("^Autumn colours")).first.click()
    _settled(page)
    download_button = page.get_by_role("button", name=re.compile(r"^Download \.arbor file \(2 run"))
    expect(download_button).to_be_visible()
    _shot(page, "sessions")
    with page.expect_download() as bundle:
        download_button.click()
    bundle_path = tmp_path_factory.mktemp("download") / bundle.value.suggested_filename
    bundle.value.save_as(bundle_path)
    assert bundle_path.suffix == ".arbor" and bundle_path.stat().st_size > 1000
    page.close()

    # -- import it on "another machine": a second UI over a fresh data directory -----------------
    fresh = tmp_path_factory.mktemp("fresh-data")
    log = tmp_path_factory.mktemp("fresh-log") / "streamlit.log"
    with serve_ui(fresh, log) as other:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(f"{other.url}/sessions_page")
        page.get_by_role("heading", name="Sessions").first.wait_for()
        _settled(page)
        page.locator('input[type="file"]').set_input_files(str(bundle_path))
        _click(page, "Import")
        page.get_by_role("heading", name="Arbor workbench").wait_for()
        expect(page.get_by_text(re.compile("2 run"))).to_be_visible()

        page.get_by_role("link", name="Inspector").click()  # same browser session: same session
        page.get_by_role("heading", name="Inspector").first.wait_for()
        _settled(page)
        for run in (first, second):
            _pick_run(page, "Run to inspect", run.run_id)
            notice = page.locator('[data-testid="stAlertContentInfo"]')
            expect(notice.filter(has_text="imported (read-only)")).to_be_visible()
        _view(page, "Node detail")
        _choose(page, "Node", "colours")
        _settled(page)
        expect(page.get_by_text(outputs["colours"].strip()).first).to_be_visible()
        page.close()

    imported = TraceQueries(other.workspace.traces).runs()
    assert set(imported["run_id"]) == {first.run_id, second.run_id}
    assert imported["origin"].str.startswith("imported from").all()
