"""Saved sessions: search, open, rename, duplicate, delete; export and import ``.arbor`` files.

Every action goes through ``SessionStore``, ``Workspace`` or ``storage.bundles``; a refused one
shows its error and changes nothing. Successful actions rerun the page so the table is fresh,
carrying their message over in ``flash``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import plan_panel, state
from app.ui.widgets import choice_box, show_flash
from engine.errors import ArborError
from storage import bundles

ws = state.workspace()
st.title("Sessions")
show_flash()


def _done(message: str, *, choose: str | None = None) -> None:
    """Report a successful action after the rerun, optionally selecting session ``choose``."""
    plan_panel.flash("success", message)
    if choose is not None:
        st.session_state.choose_session = choose
    st.rerun()


query = st.text_input("Search", key="session_search", placeholder="part of a name or task")
try:
    saved = ws.sessions.search(query)
except ArborError as exc:
    st.error(str(exc))
    saved = []

if not saved:
    if query.strip():
        st.info(f"No session's name or task contains {query.strip()!r}.")
    else:
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
    # A selection asked for by the last action (a new copy) is applied before the box exists.
    wanted = st.session_state.pop("choose_session", None)
    if wanted in by_id:
        st.session_state.open_choice = wanted
    chosen = choice_box(
        "Session",
        list(by_id),
        format_func=lambda sid: f"{by_id[sid].name} ({sid})",
        key="open_choice",
    )
    session = by_id[chosen]

    if st.button("Open in workbench", key="open_session", type="primary"):
        state.replace_session(ws.sessions.get(chosen))
        st.switch_page("ui/workbench.py")

    manage, share = st.columns(2)
    with manage:
        st.subheader("Rename, duplicate, delete")
        if st.session_state.get("rename_for") != chosen:  # a new choice starts from its name
            st.session_state.rename_for = chosen
            st.session_state.rename_name = session.name
        new_name = st.text_input("New name", key="rename_name")
        if st.button("Rename", key="rename_button"):
            try:
                renamed = ws.sessions.rename(chosen, new_name)
            except ArborError as exc:
                st.error(f"Not renamed: {exc}")
            else:
                _done(f"Renamed session {chosen} to {renamed.name!r}.")
        if st.button("Duplicate", key="duplicate_button", help="Task, plan and caps; no runs"):
            try:
                copy = ws.sessions.duplicate(chosen)
            except ArborError as exc:
                st.error(f"Not duplicated: {exc}")
            else:
                _done(f"Duplicated as {copy.name!r} ({copy.id}).", choose=copy.id)
        confirmed = st.checkbox(f"Yes, delete {session.name!r}", key="delete_confirm")
        with_runs = st.checkbox(
            "Also delete its runs from the trace store", key="delete_runs", value=False
        )
        if st.button("Delete session", key="delete_button", disabled=not confirmed):
            try:
                deleted = ws.delete_session(chosen, delete_runs=with_runs)
            except ArborError as exc:
                st.error(f"Not deleted: {exc}")
            else:
                runs_note = f" and {len(deleted)} run(s)" if with_runs else "; its runs are kept"
                for key in ("delete_confirm", "delete_runs"):
                    st.session_state.pop(key, None)
                _done(f"Deleted session {session.name!r}{runs_note}.")

    with share:
        st.subheader("Export")
        try:
            runs = bundles.session_runs(ws, chosen)
        except ArborError as exc:
            st.error(str(exc))
            runs = []
        labels = {
            r["run_id"]: f"{r['run_id']} ({r['status']}, {r['started_at']:%Y-%m-%d %H:%M})"
            for r in runs
        }
        if st.session_state.get("export_for") != chosen:  # a new choice starts with all runs
            st.session_state.export_for = chosen
            st.session_state.export_runs = list(labels)
        picked = st.multiselect(
            "Runs to include", list(labels), format_func=labels.__getitem__, key="export_runs"
        )
        try:
            data, report = bundles.export_session_bytes(ws, chosen, picked)
        except ArborError as exc:
            st.error(f"Not exportable: {exc}")
        else:
            st.download_button(
                f"Download .arbor file ({len(report.run_ids)} run(s), {len(data):,} bytes)",
                data=data,
                file_name=bundles.bundle_file_name(session),
                mime="application/zip",
                key="export_download",
            )
            for warning in report.warnings:
                st.caption(warning)

st.subheader("Import a file")
upload = st.file_uploader(
    "An .arbor session file, a JSON session file or a plan file",
    type=["arbor", "json", "yaml", "yml"],
    key="import_file",
)
if upload is not None and st.button("Import", key="import_button"):
    try:
        imported = bundles.import_upload(ws, upload.getvalue(), upload.name)
    except ArborError as exc:
        st.error(f"Not imported: {exc}")
    else:
        state.replace_session(imported.session)
        plan_panel.flash("success", imported.summary())
        if imported.runs_imported:
            plan_panel.flash("info", "Runs imported: " + ", ".join(imported.runs_imported))
        for warning in imported.warnings:
            plan_panel.flash("warning", warning)
        st.switch_page("ui/workbench.py")
