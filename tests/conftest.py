"""Shared fixtures: the real bundled model, a real llama_cpp.server on loopback, a data dir."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SERVER_API_KEY,
    serve_llama,
    serve_ui,
)


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    from engine.models.bundled import bundled_model_path

    path = bundled_model_path()
    assert path.is_file(), f"bundled model missing at {path}"
    return path


@pytest.fixture(scope="session")
def llama_server(bundled_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible ``llama_cpp.server`` serving the bundled model; yields base_url."""
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with serve_llama(bundled_path, log_path) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def keyed_llama_server(
    bundled_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """Like ``llama_server`` but every request needs ``SERVER_API_KEY``; yields (url, key)."""
    log_path = tmp_path_factory.mktemp("keyed_llama_server") / "server.log"
    with serve_llama(bundled_path, log_path, "--api_key", SERVER_API_KEY) as base_url:
        yield base_url, SERVER_API_KEY


@pytest.fixture(scope="session", autouse=True)
def _close_loaded_models() -> Iterator[None]:
    """Free models the process loaded while the interpreter is whole.

    Left to garbage collection at exit, llama-cpp-python's ``__del__`` prints a TypeError.
    """
    yield
    local = sys.modules.get("engine.models.local")
    if local is not None:
        local.unload_all()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Workspace over a fresh data dir; ARBOR_DATA_DIR points there too."""
    from storage.workspace import Workspace

    data = tmp_path / "data"
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    return Workspace(data)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """``run.py`` serving the UI on loopback with a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("ui-data")
    log_path = tmp_path_factory.mktemp("ui-log") / "streamlit.log"
    with serve_ui(data_dir, log_path) as server:
        yield server


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
