"""The workbench page: task -> plan -> edit -> run -> answer and traces -> save."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app.ui import (
    annotations,
    compute_panel,
    plan_panel,
    planner_jobs,
    planner_story,
    run_control,
    state,
    tables,
)
from app.ui.charts import tokens_per_node
from app.ui.run_control import panel as run_control_panel
from app.ui.widgets import choice_box, model_picker, show_flash
from engine.errors import ArborError
from engine.models import backend_for
from engine.plan import Plan, single_node_plan

ws = state.workspace()
jobs = state.jobs()
session = state.current_session()


_flash = plan_panel.flash


# -- sidebar: model, caps, session ---------------------------------------------------------
with st.sidebar:
    st.header("Model")
    plan_model = session.plan.default_model if session.plan else None
    default_model = model_picker(plan_model, key="default_model") or plan_model
    if session.plan is not None and default_model is not None:
        session.plan.default_model = default_model
    if st.button("Check model", key="check_model"):
        try:
            with st.spinner("Checking the model..."):
                label = backend_for(default_model).check()
            st.success(f"{label} is ready.")
        except ArborError as exc:
            st.error(str(exc))

    st.header("Caps")
    caps = compute_panel.caps_inputs(session.caps)
    session.caps = caps

    st.header("Session")
    session.name = st.text_input("Name", value=session.name, key="session_name")
    if st.button("Save session", key="save_session", type="primary"):
        try:
            ws.sessions.save(session)
            _flash("success", f"Saved session '{session.name}' ({session.id}).")
        except ArborError as exc:
            _flash("error", f"Not saved: {exc}")
    st.toggle(
        "Autosave",
        value=True,
        key=state.AUTOSAVE_KEY,
        help="Save the session after every change (each changed plan becomes a revision).",
    )
    autosave_note = st.empty()  # filled at the end of the page, after this run's changes
    st.download_button(
        "Download session file",
        data=session.to_file_text(),
        file_name=f"arbor-session-{session.id}.json",
        mime="application/json",
        key="download_session",
    )


# -- task and decomposition -----------------------------------------------------------------
st.title("Arbor workbench")
show_flash()

task = st.text_area(
    "Task",
    value=session.task,
    height=110,
    key="task_input",
    placeholder="Describe a complex task, e.g. 'Plan a three-day trip to Lisbon on a budget'.",
)
col_decompose, col_blank = st.columns([1, 1])
# A finished planner job (any action) is applied before the plan is drawn.
planner_jobs.apply_finished(session)
if col_decompose.button(
    "Decompose",
    key="decompose",
    type="primary",
    disabled=planner_jobs.busy(),
    help=planner_jobs.busy_help(),
):
    if not task.strip():
        st.error("The task is empty: type what you want done, then decompose.")
    else:
        # The planner runs in the background (elapsed time, stage, Cancel: app.ui.planner_jobs).
        planner_jobs.remember(
            planner_jobs.manager().decompose(
                task, default_model or None, store=ws.traces, session_id=session.id
            ),
            "task",
        )
        st.rerun()
planner_jobs.panel("task")
if col_blank.button("Start from a one-node plan", key="blank_plan"):
    if not task.strip():
        st.error("The task is empty: type what you want done first.")
    else:
        session.task = task
        planner_story.remember(None)
        plan_panel.set_plan(session, single_node_plan(task, default_model))
        st.rerun()

planner_story.render(session)
notes = st.session_state.get("decompose_notes")
if notes:
    with st.expander(f"What the planner's output needed ({len(notes)} note(s))"):
        for note in notes:
            st.markdown(f"- {note}")

plan: Plan | None = session.plan
if plan is None:
    from app.ui import first_run  # the examples panel (kept inside this block: issue 18)

    first_run.render(ws, session)
    state.autosave(ws, session, autosave_note)
    st.stop()

# -- the plan: graph and editor ------------------------------------------------------------
run_id = st.session_state.get("run_id")
job = jobs.get(run_id) if run_id else None
live_status = job.snapshot()["status"] if job else {}
# Finished nodes whose output failed the output check: the graph colours them "suspect".
st.session_state.suspect_nodes = job.snapshot().get("suspect", {}) if job else {}
plan_panel.render(session, ws, live_status, default_model or plan.default_model)
plan = session.plan
nodes = plan.nodes()


compute_panel.allocation_panel(
    plan, caps, lambda label, edit: plan_panel.apply_edit(session, label, edit)
)
plan = session.plan
nodes = plan.nodes()

# -- running -------------------------------------------------------------------------------
st.subheader("Run")
running = job is not None and not job.done
selected_node = st.session_state.get("selected_node", plan.root.id)
use_cache = st.checkbox(
    "Reuse unchanged nodes",
    value=True,
    key="use_cache",
    help="A node whose rendered prompt, model, parameters and seed match a recorded call "
    "reuses that call's output instead of calling the model again.",
)
compute_panel.reachability_warning(plan, caps, ws, session)
run_col, rerun_col, cancel_col = st.columns([1, 1, 1])


def _start_run(rerun: list[str]) -> None:
    try:
        plan.validate_graph()
    except ArborError as exc:
        st.error(str(exc))
        return
    if run_control.has_control(session):  # pins, breakpoints or step mode apply to every run
        new_job = run_control.start_debug_run(
            ws, jobs, session, plan, caps, use_cache=use_cache, rerun=rerun
        )
    else:
        new_job = jobs.start(
            ws, plan.model_copy(deep=True), caps, session.id, use_cache=use_cache, rerun=rerun
        )
    session.run_ids.append(new_job.run_id)
    st.session_state.run_id = new_job.run_id
    st.rerun()


if run_col.button("Run plan", key="run_plan", type="primary", disabled=running):
    _start_run([])
if rerun_col.button(
    f"Re-run from {selected_node}",
    key="rerun_from",
    disabled=running or selected_node not in nodes,
    help="Run this node and everything downstream of it again; reuse the rest.",
):
    _start_run([selected_node])
if running and cancel_col.button("Cancel run", key="cancel_run"):
    job.cancel.set()
run_control_panel(  # step mode, debug run, the paused run, fork (issue 14)
    ws, jobs, session, plan, caps, selected_node, use_cache=use_cache, running=running
)

interrupted = [r for r in ws.traces.runs(session.id) if r["status"] == "interrupted"]
for record in interrupted[:3]:
    note_col, resume_col = st.columns([3, 1])
    note_col.warning(
        f"Run `{record['run_id']}` was interrupted (its process stopped mid-run); "
        "its finished nodes are kept."
    )
    if resume_col.button("Resume", key=f"resume_{record['run_id']}", disabled=running):
        new_job = jobs.resume(ws, record["run_id"], plan)
        session.run_ids.append(new_job.run_id)
        st.session_state.run_id = new_job.run_id
        st.rerun()


def _progress_table(snapshot: dict) -> pd.DataFrame:
    rows = []
    for nid, status in snapshot["status"].items():
        streamed = snapshot["partial"].get(nid, "")
        rows.append(
            {
                "Node": nid,
                "Title": nodes[nid].title if nid in nodes else nid,
                "Status": f"{status} (reused)" if nid in snapshot["reused"] else status,
                "Streamed so far": streamed[-160:],
                "Output check": snapshot.get("suspect", {}).get(nid, ""),
            }
        )
    return pd.DataFrame(rows)


#: The finished run's node table: what happened first, the long text last.
NODE_COLUMNS = {
    "node_id": "Node",
    "title": "Title",
    "status": "Status",
    "output_tokens": "Output tokens",
    "input_tokens": "Input tokens",
    "seconds": "Seconds",
    "cost_usd": "Cost (US$)",
    "strategy": "Strategy",
    "samples": "Samples",
    "agreement": "Agreement",
    "reused_from": "Reused from run",
    "token_cap": "Token cap",
    "suspect": "Output check",
    "started_at": "Started",
    "output": "Output",
    "error": "Error",
    "note": "Note",
}
CALL_COLUMNS = {
    "node_id": "Node",
    "role": "Role",
    "sample_index": "Sample",
    "status": "Status",
    "output_tokens": "Output tokens",
    "input_tokens": "Input tokens",
    "latency_s": "Seconds",
    "model": "Model",
    "output": "Output",
    "error": "Error",
}


@st.fragment(run_every=1.0)
def live_progress(run_id: str) -> None:
    current = jobs.get(run_id)
    if current is None:
        return
    snapshot = current.snapshot()
    finished = sum(
        s in {"done", "failed", "blocked", "skipped", "cancelled"}
        for s in snapshot["status"].values()
    )
    total = max(1, len(snapshot["status"]))
    st.progress(
        finished / total,
        text=f"{finished}/{total} nodes finished ({len(snapshot['reused'])} reused), "
        f"{snapshot['tokens_used']} of {caps.total_tokens} tokens used",
    )
    compute_panel.budget_meter(snapshot["meter"])
    tables.show_table(_progress_table(snapshot), long_text=["Streamed so far"])
    if current.done:
        st.rerun()  # leave polling and draw the final state


if running:
    live_progress(run_id)
elif run_id:
    snapshot = job.snapshot() if job else None
    record = ws.traces.run(run_id)
    if snapshot and snapshot["error"]:
        st.error(f"The run failed: {snapshot['error']}")
    if snapshot and snapshot["result"] is not None:
        for warning in snapshot["result"].warnings:
            st.warning(warning)
    if record is not None:
        status = record["status"]
        reason = f" ({record['stop_reason']})" if record["stop_reason"] else ""
        node_rows = ws.traces.node_executions(run_id)
        reused = [row["node_id"] for row in node_rows if row.get("reused_from")]
        executed = [
            row["node_id"]
            for row in node_rows
            if not row.get("reused_from") and row["status"] in {"done", "failed", "cancelled"}
        ]
        cost = record.get("cost_usd") or 0.0
        summary = (
            f"Run `{run_id}`: **{status}**{reason}; "
            f"{record['input_tokens']} input + {record['output_tokens']} output tokens"
            f"{f', ${cost:.4f}' if cost else ''}. "
            f"Executed {len(executed)} node(s)"
            + (f"; reused {len(reused)} unchanged: {', '.join(reused)}" if reused else "")
            + "."
        )
        (st.success if status == "completed" else st.warning)(summary)
        compute_panel.continue_control(ws, jobs, session, plan, caps, record)
        suspects = [row for row in node_rows if row.get("suspect")]
        if suspects:
            listed = "\n".join(f"- `{row['node_id']}`: {row['suspect']}" for row in suspects)
            st.warning(
                f"{len(suspects)} node(s) gave output that does not look like an answer; "
                f"read it with care:\n{listed}",
                icon=":material/warning:",
            )
        st.markdown("#### Answer")
        if record["answer"]:
            st.markdown(record["answer"])
        else:
            st.write("No answer: the root node did not finish.")
        st.markdown("#### Nodes")
        if node_rows:
            st.altair_chart(tokens_per_node(node_rows), width="stretch")
        for row in node_rows:
            row["seconds"] = tables.seconds_between(row.get("started_at"), row.get("finished_at"))
        tables.show_table(
            tables.readable_frame(node_rows, NODE_COLUMNS), long_text=["Output", "Error"]
        )
        annotated = selected_node if selected_node in {r["node_id"] for r in node_rows} else None
        with st.expander(
            f"Annotate {'node ' + annotated if annotated else 'the run'}: good or bad, a note, "
            "the right answer",
            expanded=False,
        ):
            annotations.annotation_panel(ws, run_id, annotated)
        compute_panel.samples_view(ws, run_id)
        st.markdown("#### Model calls")
        calls = ws.traces.model_calls(run_id)
        if calls:
            tables.show_table(
                tables.readable_frame(calls, CALL_COLUMNS),
                long_text=["Output", "Error"],
                key="calls_table",
            )
            call_index = choice_box(
                "Inspect a call",
                range(len(calls)),
                format_func=lambda i: f"{calls[i]['node_id']} ({calls[i]['model']})",
                key="inspect_call",
            )
            call = calls[call_index]
            st.markdown("Rendered prompt")
            for message in json.loads(call["prompt"] or "[]"):
                st.text(f"[{message['role']}]\n{message['content']}")
            st.markdown("Output")
            st.text(call["output"] or call["error"] or "")
        else:
            st.write("No model calls were made.")

# Last: everything this run changed is in ``session`` now.
state.autosave(ws, session, autosave_note)
