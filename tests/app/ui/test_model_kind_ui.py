"""Model kinds where analysts see and change them: the Models page, the node editor, and
``run.py models``."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.models.registry import BUNDLED_NAME, Registry
from tests.support.cli import run_cli

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")

pytestmark = pytest.mark.model  # the kind is read from the bundled GGUF's header


@pytest.fixture
def app(tmp_path, monkeypatch, bundled_path):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ARBOR_MODELS_DIR", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def test_models_page_shows_the_kind_and_saves_an_override(app, tmp_path):
    app.switch_page("ui/models_page.py").run()
    assert not app.exception
    table = app.dataframe[0].value
    kind = table[table["name"] == BUNDLED_NAME].iloc[0]["model_kind"]
    assert kind.startswith("base (no chat template")
    assert any("Model kind: base (no chat template" in c.value for c in app.caption)

    app.selectbox(key=f"model_kind_{BUNDLED_NAME}").set_value("instruct").run()
    assert not app.exception
    assert Registry(tmp_path / "models.json").get(BUNDLED_NAME).model_kind == "instruct"
    table = app.dataframe[0].value
    kind = table[table["name"] == BUNDLED_NAME].iloc[0]["model_kind"]
    assert kind == "instruct (set in the model registry)"


def test_node_editor_shows_the_kind_and_sets_the_prompt_style(app):
    app.text_area(key="task_input").input("What is the capital of Japan?")
    app.button(key="blank_plan").click().run()
    assert not app.exception
    assert any("Model kind: base (no chat template" in c.value for c in app.caption)
    style = next(box for box in app.selectbox if box.label == "Prompt style")
    assert style.value == "auto"
    preview = [t.value for t in app.text if t.value.startswith("[user]")]
    assert preview and preview[0].endswith("Question: What is the capital of Japan?\nAnswer:")

    style.set_value("chat")
    next(b for b in app.button if b.label == "Apply changes").click().run()
    assert not app.exception
    root = app.session_state.session.plan.root
    assert root.generation is not None and root.generation.prompt_format == "chat"
    preview = [t.value for t in app.text if t.value.startswith("[user]")]
    assert preview and "careful assistant" in preview[0]


def test_cli_lists_the_kind_and_sets_an_override(tmp_path):
    data = tmp_path / "data"
    listed = run_cli(data, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "kind: base (no chat template; GGUF name 'Gemma 3 270m'" in listed.stdout
    changed = run_cli(data, "models", "set-kind", BUNDLED_NAME, "instruct")
    assert changed.returncode == 0, changed.stderr
    assert "instruct (set in the model registry)" in changed.stdout
    refused = run_cli(data, "models", "set-kind", BUNDLED_NAME, "chatty")
    assert refused.returncode == 2
