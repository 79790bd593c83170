"""Arbor's Streamlit entry point: a router over the pages.

Run it with ``python run.py`` (listens on 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on sys.path, not the repository root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Arbor", page_icon="🌳", layout="wide")

APP_DIR = Path(__file__).resolve().parent
pages = st.navigation(
    [
        st.Page(APP_DIR / "workbench.py", title="Workbench", icon="🛠️", default=True),
        st.Page(APP_DIR / "inspector_page.py", title="Inspector", icon="🔎"),
        st.Page(APP_DIR / "evaluate_page.py", title="Evaluate", icon="📊"),
        st.Page(APP_DIR / "sessions_page.py", title="Sessions", icon="🗂️"),
        st.Page(APP_DIR / "models_page.py", title="Models", icon="🧠"),
    ]
)
pages.run()
