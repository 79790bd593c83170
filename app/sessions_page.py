"""Saved sessions: open, delete, import a session or plan file."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from engine.errors import ArborError
from engine.plan import Plan
from storage.sessions import SESSION_FORMAT, ArborSession

ws = state.workspace()
st.title("Sessions")

try:
    saved = ws.sessions.list()
except ArborError as exc:
    st.error(str(exc))
    saved = []

if not saved:
    st.info("No saved sessions yet. Build a plan on the Workbench and press 'Save session'.")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "task": s.task[:80],
                    "runs": len(s.run_ids),
                    "updated": s.updated_at,
                }
                for s in saved
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    by_id = {s.id: s for s in saved}
    chosen = st.selectbox(
        "Session",
        list(by_id),
        format_func=lambda sid: f"{by_id[sid].name} ({sid})",
        key="open_choice",
    )
    open_col, delete_col = st.columns(2)
    if open_col.button("Open in workbench", key="open_session", type="primary"):
        state.replace_session(ws.sessions.get(chosen))
        st.switch_page("workbench.py")
    if delete_col.button("Delete session", key="delete_session"):
        ws.sessions.delete(chosen)
        st.rerun()

st.subheader("Import a file")
upload = st.file_uploader("Session or plan file (.json)", type=["json"], key="import_file")
if upload is not None and st.button("Import", key="import_button"):
    text = upload.getvalue().decode("utf-8", errors="replace")
    try:
        if f'"{SESSION_FORMAT}"' in text[:200]:
            session = ArborSession.from_file_text(text, source=upload.name)
        else:
            plan = Plan.from_json(text, source=upload.name)
            session = ArborSession(
                name=upload.name.removesuffix(".json"), task=plan.task, plan=plan
            )
    except ArborError as exc:
        st.error(f"Not imported: {exc}")
    else:
        ws.sessions.save(session)
        state.replace_session(session)
        st.switch_page("workbench.py")
