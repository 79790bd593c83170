"""Helpers for driving the Streamlit UI in headless Chromium with Playwright."""

from __future__ import annotations

import re
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
