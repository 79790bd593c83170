"""Helpers for driving the Streamlit UI in headless Chromium with Playwright."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _settled(page) -> None:
    """Wait until Streamlit has finished its rerun: no status widget, no stale elements."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
              && !document.querySelector('[data-stale="true"]')""",
        polling=200,
    )


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
