"""Process-wide resources and per-browser-session state for the pages."""

from __future__ import annotations

import os

import streamlit as st

from app.jobs import JobManager
from engine.registry import Registry
from storage.sessions import ArborSession
from storage.workspace import Workspace


@st.cache_resource
def _workspace(data_dir: str | None) -> Workspace:
    return Workspace(data_dir)


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
    return JobManager()


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
