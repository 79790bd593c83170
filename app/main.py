"""Arbor's Streamlit entry point: a router over the pages in ``app/ui/``.

Run it with ``python run.py`` (listens on 127.0.0.1 unless told otherwise), which starts
``streamlit run app/main.py``. The project is installed (``pip install -e .`` or ``pip install
.``), so ``app``, ``engine`` and ``storage`` import from anywhere without a path patch.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app.ui.layout import responsive_layout
from engine.errors import ArborError, user_message

st.set_page_config(page_title="Arbor", page_icon=":material/account_tree:", layout="wide")
responsive_layout()

UI_DIR = Path(__file__).resolve().parent / "ui"
# Material icons, not emoji: Streamlit ships the Material Symbols font, while emoji need a
# colour-emoji font that headless Chromium and many Linux desktops lack (they drew empty boxes).
pages = st.navigation(
    [
        st.Page(
            UI_DIR / "workbench.py", title="Workbench", icon=":material/construction:", default=True
        ),
        st.Page(UI_DIR / "inspector_page.py", title="Inspector", icon=":material/search:"),
        st.Page(UI_DIR / "evaluate_page.py", title="Evaluate", icon=":material/monitoring:"),
        st.Page(UI_DIR / "sessions_page.py", title="Sessions", icon=":material/folder_open:"),
        st.Page(UI_DIR / "models_page.py", title="Models", icon=":material/memory:"),
        st.Page(UI_DIR / "settings_page.py", title="Settings", icon=":material/settings:"),
    ]
)
try:
    pages.run()
except Exception as exc:  # Streamlit's stop and rerun are BaseExceptions: they pass through
    # Never a traceback on a page: one line saying what is wrong (a corrupt store, a file).
    if os.environ.get("ARBOR_DEBUG"):
        raise
    if isinstance(exc, ArborError | OSError):
        st.error(user_message(exc))
    else:
        st.error(f"Unexpected error: {user_message(exc)} (set ARBOR_DEBUG=1 for the traceback).")
