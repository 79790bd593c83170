"""What the empty workbench shows: the example tasks, a few with a finished plan and run, and
what the bundled model can and cannot do.

"Use this task" fills the task box (a callback, so it runs before the box is drawn); "Open the
finished run" imports the recorded session bundle (``app.services.examples``) and shows its run,
with no model call.
"""

from __future__ import annotations

import streamlit as st

from app.services.examples import ExampleTask, example_tasks, load_recorded
from app.ui import state
from app.ui.plan_panel import flash
from engine.errors import ArborError
from storage.sessions import ArborSession
from storage.workspace import Workspace

BUNDLED_MODEL_NOTE = (
    "The bundled model is Gemma 3 270M, a small *base* model: it continues text. It splits "
    "everyday tasks into plausible steps and writes short on-topic drafts in about a second a "
    "call, but it cannot do arithmetic, follow long instructions or check its own facts, and "
    "its plans sometimes copy a worked example. For real work, plug in a stronger model."
)
COLUMNS = 3


def _use_task(session: ArborSession, text: str) -> None:
    """Fill the task box (an ``on_click`` callback: it runs before the box is drawn)."""
    session.task = text
    st.session_state["task_input"] = text


def _open_recorded(ws: Workspace, example: ExampleTask) -> None:
    assert example.recorded is not None
    try:
        loaded = load_recorded(ws, example.recorded)
    except ArborError as exc:
        flash("error", f"The example {example.id!r} could not be opened: {exc}")
        return
    state.replace_session(loaded.session)
    if loaded.run_id:
        st.session_state.run_id = loaded.run_id
    st.session_state["task_input"] = loaded.session.task
    flash(
        "success",
        f"Opened the example {example.id!r}: a plan and a run recorded with the bundled model. "
        "The Inspector shows the run's calls.",
    )


def _example_card(ws: Workspace, session: ArborSession, example: ExampleTask) -> None:
    with st.container(border=True):
        label = f"{example.kind} · {example.language}" if example.kind else example.language
        st.caption(label + (" · finished run included" if example.recorded else ""))
        st.markdown(example.task)
        st.button(
            "Use this task",
            key=f"example_task_{example.id}",
            on_click=_use_task,
            args=(session, example.task),
            icon=":material/edit_note:",
        )
        if example.recorded is not None:
            st.button(
                "Open the finished run",
                key=f"example_run_{example.id}",
                on_click=_open_recorded,
                args=(ws, example),
                type="primary",
                icon=":material/play_circle:",
            )


def render(ws: Workspace, session: ArborSession) -> None:
    """The first-run panel, shown while the session has no plan."""
    st.info(
        "Type a task and press Decompose to get a plan, or start from an example below.",
        icon=":material/lightbulb:",
    )
    note_col, link_col = st.columns([5, 1], vertical_alignment="center")
    note_col.caption(BUNDLED_MODEL_NOTE)
    link_col.page_link("ui/models_page.py", label="Models page", icon=":material/memory:")
    st.subheader("Examples")
    examples = example_tasks()
    for start in range(0, len(examples), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, example in zip(columns, examples[start : start + COLUMNS], strict=False):
            with column:
                _example_card(ws, session, example)
