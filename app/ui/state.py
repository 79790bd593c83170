"""Process-wide resources and per-browser-session state for the pages."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app.services.jobs import EvalJobManager, JobManager
from engine.errors import ArborError
from engine.models.registry import Registry
from storage.sessions import ArborSession
from storage.workspace import Workspace


@st.cache_resource
def _workspace(data_dir: str | None) -> Workspace:
    workspace = Workspace(data_dir)
    # Opened now rather than on first use (as the CLI does): every page reports a corrupt
    # session store as soon as it loads, not when the analyst first saves.
    _ = workspace.sessions
    return workspace


def workspace() -> Workspace:
    """The data directory named by ARBOR_DATA_DIR (read per call so tests can point elsewhere)."""
    return _workspace(os.environ.get("ARBOR_DATA_DIR"))


def registry() -> Registry:
    """The model registry in the workspace (``models.json``), read afresh on each call.

    Not cached: the CLI may change the file while the UI runs. Raises ``RegistryError`` when the
    file is corrupt (it is left untouched).
    """
    return Registry.in_data_dir(workspace().root)


@st.cache_resource
def jobs() -> JobManager:
    """The process-wide manager of background plan runs."""
    return JobManager()


@st.cache_resource
def eval_jobs() -> EvalJobManager:
    """The process-wide manager of background evaluations and searches."""
    return EvalJobManager()


def current_session() -> ArborSession:
    if "session" not in st.session_state:
        st.session_state.session = ArborSession()
    return st.session_state.session


def replace_session(session: ArborSession) -> None:
    """Switch the page to another session; widget state of the old one is dropped."""
    st.session_state.session = session
    for key in list(st.session_state.keys()):
        if key != "session":
            del st.session_state[key]
    st.session_state[_SAVED_AS] = _fingerprint(session)  # as stored: nothing to autosave


_SAVED_AS = "autosaved_fingerprint"
AUTOSAVE_KEY = "autosave"


def _fingerprint(session: ArborSession) -> str:
    content = session.model_dump_json(exclude={"updated_at"})
    return hashlib.sha256(content.encode()).hexdigest()


def autosave(ws: Workspace, session: ArborSession, note: DeltaGenerator) -> None:
    """Save ``session`` if it changed since it was last saved or opened in this browser tab,
    and say so in ``note`` (a placeholder).

    Called at the end of every Workbench run, so an edit is on disk before the next click.
    A session with neither task nor plan is not worth a row. A plan that cannot be saved is
    reported in ``note``; the last good save stays untouched.
    """
    if not st.session_state.get(AUTOSAVE_KEY, True):
        note.caption("Autosave is off: press Save session to keep changes.")
        return
    if not session.task.strip() and session.plan is None:
        return
    fingerprint = _fingerprint(session)
    if st.session_state.get(_SAVED_AS) != fingerprint:
        try:
            ws.sessions.save(session, message="autosave")
        except ArborError as exc:
            note.warning(f"Not autosaved: {exc}")
            return
        st.session_state[_SAVED_AS] = _fingerprint(session)
        st.session_state["autosaved_at"] = datetime.now().strftime("%H:%M:%S")
    if st.session_state.get("autosaved_at"):
        note.caption(f"Autosaved at {st.session_state.autosaved_at}.")
