"""The empty workbench's first-run panel (examples, a recorded run opened without a model call)
and the Models page's "Found on this machine" section, under Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.services.examples import example_tasks, load_recorded
from engine.models.registry import Registry
from storage.workspace import Workspace
from tests.support.apptest import notices
from tests.support.model_folders import build_model_home, roots_env
from tests.support.servers import free_port

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")
OVERRIDES = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "OLLAMA_MODELS",
    "LMSTUDIO_MODELS_DIR",
    "GPT4ALL_MODELS_DIR",
)


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ARBOR_MODELS_DIR", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _recorded():
    return [task for task in example_tasks() if task.recorded is not None]


def test_shipped_recorded_examples_hold_a_plan_and_an_on_topic_answer(tmp_path):
    recorded = _recorded()
    assert 2 <= len(recorded) <= 4
    ws = Workspace(tmp_path)
    for example in recorded:
        loaded = load_recorded(ws, example.recorded)
        assert loaded.imported and loaded.session.task == example.task
        assert loaded.session.plan is not None and loaded.session.plan.root.children
        run = ws.traces.run(loaded.run_id)
        assert run["status"] in {"completed", "suspect"}  # finished; suspect: a node flagged
        answer = run["answer"].lower()
        # On topic: the answer shares a content word with the task.
        words = {w.strip(".,").lower()[:5] for w in example.task.split() if len(w) >= 5}
        assert any(word in answer for word in words), (example.id, answer)
        assert ws.traces.model_calls(loaded.run_id)
        again = load_recorded(ws, example.recorded)  # a second open reuses the session
        assert not again.imported and again.session.id == loaded.session.id


def test_empty_workbench_offers_the_examples_and_the_model_note(app):
    buttons = {button.key for button in app.button}
    assert {f"example_task_{task.id}" for task in example_tasks()} <= buttons
    assert {f"example_run_{task.id}" for task in _recorded()} <= buttons
    assert any("press Decompose" in text for text in notices(app))
    assert any("Gemma 3 270M" in caption.value for caption in app.caption)


def test_use_this_task_fills_the_task_box(app):
    task = example_tasks()[-1]
    app.button(key=f"example_task_{task.id}").click().run()
    assert not app.exception
    assert app.text_area(key="task_input").value == task.task
    assert app.session_state.session.plan is None


def test_opening_a_recorded_example_shows_its_plan_and_run(app):
    example = _recorded()[0]
    app.button(key=f"example_run_{example.id}").click().run()
    assert not app.exception
    session = app.session_state.session
    assert session.plan is not None and session.task == example.task
    run_id = app.session_state.run_id
    assert session.run_ids == [run_id]
    assert any(f"Run `{run_id}`" in text for text in notices(app))
    assert any("Opened the example" in text for text in notices(app))
    app.switch_page("ui/inspector_page.py").run()
    assert not app.exception
    assert run_id in str(
        [element.value for element in app.markdown]
        + [c.value for c in app.caption]
        + [s.value for s in app.selectbox]
    )


def test_models_page_finds_models_and_adds_one(tmp_path, monkeypatch, bundled_path):
    home = build_model_home(tmp_path / "home", bundled_path)
    for name, value in roots_env(home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ARBOR_SERVER_PORTS", str(free_port()))  # nothing listens there
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path / "data"))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("ui/models_page.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    for name in ("gemma3:270m", "gemma-3-270m-it", "gemma-small", "google/gemma-3-270m-GGUF"):
        assert name in text
    unusable = next(e for e in at.expander if "could not be used" in e.label)
    reasons = " ".join(m.value for m in unusable.markdown)
    assert "not a GGUF model file" in reasons and "part 2 of 3" in reasons
    assert any("No OpenAI-compatible server answered" in c.value for c in at.caption)

    add_keys = [b.key for b in at.button if b.key and b.key.startswith("discover_add_")]
    at.button(key=add_keys[-1]).click().run()  # sorted by source: the Ollama model is last
    assert not at.exception
    assert Registry(tmp_path / "data" / "models.json").get("gemma3:270m").model_kind == "instruct"
    assert any("Added 'gemma3:270m'" in text for text in notices(at))
    text = " ".join(m.value for m in at.markdown)
    assert "registered as **gemma3:270m**" in text
