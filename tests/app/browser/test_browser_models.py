"""The Models page in a real browser: test the bundled model, add a GGUF by path, see its
metadata, and see a missing file refused."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.support.browser import ARTIFACTS, _settled

pytestmark = [pytest.mark.browser, pytest.mark.model]


def test_models_page_tests_the_bundled_model_and_adds_a_local_file(
    browser, ui_server, bundled_path, tmp_path
):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.set_default_timeout(60_000)
    page.goto(f"{ui_server.url}/models_page")
    page.get_by_role("heading", name="Models").wait_for()
    _settled(page)

    page.locator('[data-testid="stButton"] button').filter(has_text="Test").first.click()
    page.get_by_text(re.compile(r"all \d checks passed")).wait_for(timeout=120_000)

    copy = tmp_path / "second-model.gguf"
    os.symlink(bundled_path, copy)
    _settled(page)
    page.get_by_role("textbox", name="GGUF file path").fill(str(copy))
    page.get_by_role("textbox", name="Name (optional)").fill("second")
    page.get_by_role("button", name="Add local model").click()
    expect(page.get_by_text(str(copy)).first).to_be_visible()
    registry = (ui_server.data_dir / "models.json").read_text(encoding="utf-8")
    assert '"second"' in registry and str(copy) in registry

    _settled(page)
    page.get_by_role("textbox", name="GGUF file path").fill(str(tmp_path / "missing.gguf"))
    page.get_by_role("textbox", name="Name (optional)").fill("")
    page.get_by_role("button", name="Add local model").click()
    expect(page.get_by_text(re.compile("missing.gguf")).first).to_be_visible()
    assert "missing.gguf" not in (ui_server.data_dir / "models.json").read_text(encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "browser-models.png"), full_page=True)
    page.close()
