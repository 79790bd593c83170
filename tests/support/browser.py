"""Helpers for driving the Streamlit UI in headless Chromium with Playwright."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from playwright.sync_api import expect

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


#: How long the page must stay idle before it counts as settled. A click's rerun request
#: reaches the server a few milliseconds after the click; an idle check made in between would
#: see the old page, and the next locator could find an element twice (old and new).
SETTLE_MS = 400

# Idle: Streamlit's own script state (the stApp element's data-test-script-state) says no script
# is running or about to, the connection is up, no status widget, no element marked stale.
# It must hold for SETTLE_MS in a row; any busy poll restarts the count.
_IDLE_FOR = """(settleMs) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const idle = app !== null
        && app.getAttribute('data-test-script-state') === 'notRunning'
        && app.getAttribute('data-test-connection-state') === 'CONNECTED'
        && !document.querySelector('[data-testid="stStatusWidget"]')
        && !document.querySelector('[data-stale="true"]');
    const now = performance.now();
    if (!idle) { window.__arborIdleSince = null; return false; }
    if (window.__arborIdleSince == null) { window.__arborIdleSince = now; }
    return now - window.__arborIdleSince >= settleMs;
}"""


def _settled(page) -> None:
    """Wait until Streamlit has finished every rerun and stayed idle for ``SETTLE_MS``."""
    page.evaluate("() => { window.__arborIdleSince = null; }")
    page.wait_for_function(_IDLE_FOR, arg=SETTLE_MS, polling=50)


def _click(page, name: str) -> None:
    _settled(page)
    page.get_by_role("button", name=name, exact=True).click()


def _choose(page, label: str, option_prefix: str) -> None:
    """Pick an option of the Streamlit selectbox labelled ``label`` (an ARIA combobox)."""
    _settled(page)
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.fill(option_prefix)  # the combobox filters its options by what is typed
    page.get_by_role("option", name=re.compile("^" + re.escape(option_prefix))).first.click()
    expect(box).to_have_value(re.compile("^" + re.escape(option_prefix)))


def plan_json(page) -> dict:
    """The plan as the workbench shows it in the "Import / plan as JSON" expander.

    Whether the expander is open is read from its ``<details open>`` attribute rather than
    from the code block's visibility: during a rerun the block is briefly hidden, and a
    click then would close an open expander.
    """
    _settled(page)
    details = page.locator('[data-testid="stExpander"] details').filter(
        has=page.get_by_text("Import / plan as JSON")
    )
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    code = details.locator('[data-testid="stCode"]').last
    code.wait_for()
    return json.loads(code.inner_text())


def wait_for_plan(page, check, timeout_s: float = 60) -> dict:
    """The plan JSON once ``check(plan)`` holds (or the last one read when time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        plan = plan_json(page)
        if check(plan) or time.monotonic() > deadline:
            return plan
        page.wait_for_timeout(250)
