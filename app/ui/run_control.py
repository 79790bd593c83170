"""The Workbench's run control panel: pins, breakpoints, step mode, the paused run, forks.

``node_controls`` (under the node editor) toggles "Pause before" / "Pause after" for the
selected node and pins its output (prefilled with its last output); ``panel`` (under the Run
buttons) has "Step mode", the "Debug run" button (a run with the session's pins and
breakpoints), the paused run and, on a finished run, "Fork from <node>" (with the node's
instruction, a pinned output, its model or its strategy changed).

Pins and breakpoints live in the session (``ArborSession.pins`` / ``break_before`` /
``break_after`` / ``step_mode``), so they are saved with it. A run paused in this process waits
on a ``PauseGate`` (``app.services.run_control``); the store records it as ``paused`` with its
node, so a reloaded page finds it again: if the gate still waits the panel answers it, else
(the process that ran it is gone, or ``run.py`` paused it) Continue resumes it from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.services import run_control as control
from app.services.jobs import JobManager, RunJob
from app.ui.widgets import model_picker
from engine.errors import ArborError, user_message
from engine.plan import Plan
from engine.plan.compute_config import strategy_from_spec
from engine.run.budget import RunCaps
from engine.run.control import Decision, Pause
from storage.sessions import ArborSession
from storage.traces.run_control import close_paused
from storage.workspace import Workspace

#: ``st.session_state`` keys the Inspector reads to open a run compared against another.
INSPECT_KEY, COMPARE_KEY, VIEW_KEY = "inspect_run", "compare_run", "inspector_view"
#: The strategies a fork offers for its node (``strategy_from_spec`` names).
FORK_STRATEGIES = ["single", "bo4", "sc3", "sc5", "refine2"]
PAUSED_ACTIONS = {
    "paused_continue": ("Continue", "continue"),
    "paused_step": ("Step", "step"),
    "paused_skip": ("Skip node", "skip"),
    "paused_cancel": ("Cancel run", "cancel"),
}


# -- what the graph marks --------------------------------------------------------------------
def pinned_nodes(session: ArborSession) -> dict[str, str]:
    """Node id -> pinned text, for the graph to mark."""
    return dict(session.pins)


def breakpoints(session: ArborSession) -> dict[str, set[str]]:
    """{"before": node ids, "after": node ids}, for the graph to mark."""
    return {"before": set(session.break_before), "after": set(session.break_after)}


def has_control(session: ArborSession) -> bool:
    """Whether a run of this session needs run control (pins, breakpoints or step mode)."""
    return bool(session.pins or session.break_before or session.break_after or session.step_mode)


# -- per node ------------------------------------------------------------------------------
def _set_member(values: list[str], node_id: str, on: bool) -> list[str]:
    kept = [v for v in values if v != node_id]
    return [*kept, node_id] if on else kept


def node_controls(session: ArborSession, node_id: str, last_output: str | None = None) -> None:
    """Pause toggles and the pin of one node (under its editor)."""
    if last_output is None:
        last_output = _last_output(session, node_id)
    st.markdown(f"**Debug `{node_id}`**")
    before_col, after_col = st.columns(2)
    before = before_col.toggle(
        "Pause before",
        value=node_id in session.break_before,
        key=f"pause_before_{node_id}",
        help="The run stops before this node and shows its inputs and prompt.",
    )
    after = after_col.toggle(
        "Pause after",
        value=node_id in session.break_after,
        key=f"pause_after_{node_id}",
        help="The run stops after this node and shows its output.",
    )
    session.break_before = _set_member(session.break_before, node_id, before)
    session.break_after = _set_member(session.break_after, node_id, after)
    pinned = session.pins.get(node_id)
    text = st.text_area(
        "Pinned output" if pinned is not None else "Pin output",
        value=pinned if pinned is not None else (last_output or ""),
        key=f"pin_text_{node_id}",
        height=90,
        help="Runs use this text as the node's output and call no model for it.",
    )
    pin_col, unpin_col = st.columns(2)
    if pin_col.button("Pin output", key=f"pin_{node_id}", disabled=not text.strip()):
        session.pins[node_id] = text
        st.rerun()
    if unpin_col.button("Unpin", key=f"unpin_{node_id}", disabled=pinned is None):
        session.pins.pop(node_id, None)
        st.session_state.pop(f"pin_text_{node_id}", None)
        st.rerun()
    if pinned is not None:
        st.caption("Pinned: runs use this text and call no model for the node.")


def _last_output(session: ArborSession, node_id: str) -> str | None:
    """The node's output in the session's newest run that has one."""
    from app.ui import state

    try:
        traces = state.workspace().traces
        for run in traces.runs(session.id, limit=3):
            for row in traces.node_executions(run["run_id"]):
                if row["node_id"] == node_id and row["status"] == "done" and row["output"]:
                    return str(row["output"])
    except Exception:  # a prefill is a convenience; an unreadable store leaves it empty
        return None
    return None


# -- the panel under the Run buttons -------------------------------------------------------
def start_debug_run(
    ws: Workspace,
    jobs: JobManager,
    session: ArborSession,
    plan: Plan,
    caps: RunCaps,
    *,
    use_cache: bool = True,
    rerun: list[str] | None = None,
) -> RunJob:
    """Start a background run with the session's pins and breakpoints, answerable from here."""
    plan = plan.model_copy(deep=True)  # the page may edit its plan while this one runs
    known = plan.nodes()
    gate = control.PauseGate()
    pins = {n: t for n, t in session.pins.items() if n in known}
    before = [n for n in session.break_before if n in known]
    after = [n for n in session.break_after if n in known]
    # JobManager runs the work and collects the events; the workflow is the service's.
    return jobs._submit(  # the job manager's own runner, with run control
        plan,
        lambda job: control.run_with_control(
            ws,
            plan,
            caps,
            pins=pins,
            break_before=before,
            break_after=after,
            step=session.step_mode,
            controller=gate,
            session_id=session.id,
            listeners=[job.on_event],
            run_id=job.run_id,
            cancel=job.cancel,
            use_cache=use_cache,
            rerun=rerun or (),
        ),
    )


def panel(
    ws: Workspace,
    jobs: JobManager,
    session: ArborSession,
    plan: Plan,
    caps: RunCaps,
    selected: str,
    *,
    use_cache: bool = True,
    running: bool = False,
) -> None:
    """Step mode, the Debug run button, the paused run and the fork of a finished run."""
    session.step_mode = st.toggle(
        "Step mode",
        value=session.step_mode,
        key="step_mode",
        help="A debug run pauses before every node.",
    )
    marks = []
    if session.pins:
        marks.append(f"{len(session.pins)} pinned")
    if session.break_before or session.break_after:
        marks.append(f"{len(session.break_before) + len(session.break_after)} breakpoint(s)")
    if has_control(session) and st.button(
        "Debug run",
        key="debug_run",
        disabled=running,
        help="Run with the pins, breakpoints and step mode set here (" + ", ".join(marks) + ").",
    ):
        try:
            plan.validate_graph()
            job = start_debug_run(ws, jobs, session, plan, caps, use_cache=use_cache)
        except ArborError as exc:
            st.error(user_message(exc))
            return
        session.run_ids.append(job.run_id)
        st.session_state.run_id = job.run_id
        st.rerun()
    paused_view(ws, jobs, session, plan)
    fork_view(ws, jobs, session, plan, selected, running=running)


def _paused_record(ws: Workspace, session: ArborSession) -> dict[str, Any] | None:
    """The session's newest run if it is paused (in the store)."""
    runs = ws.traces.runs(session.id, limit=1)
    return runs[0] if runs and runs[0]["status"] == "paused" else None


@st.fragment(run_every=1.0)
def paused_view(ws: Workspace, jobs: JobManager, session: ArborSession, plan: Plan) -> None:
    """The paused run: its node, inputs, prompt (before) or output (after), and the buttons."""
    run_id = st.session_state.get("run_id")
    gate = control.live_gate(run_id) if run_id else None
    record = None
    if gate is None:
        record = _paused_record(ws, session)
        if record is not None:
            gate = control.live_gate(record["run_id"])
    pause = gate.pending if gate is not None else None
    if gate is not None and pause is not None:
        _live_pause(gate, pause)
    elif record is not None:
        _stored_pause(ws, jobs, session, plan, record)


def _live_pause(gate: control.PauseGate, pause: Pause) -> None:
    st.warning(f"Paused {pause.when} **{pause.node_id}**: {pause.title} ({pause.reason})")
    for node_id, text in pause.inputs.items():
        st.text_area(f"Input from {node_id}", text, disabled=True, key=f"paused_in_{node_id}")
    key = f"paused_{pause.run_id}_{pause.node_id}_{pause.when}"
    instruction = prompt = output = None
    if pause.when == "before":
        instruction = st.text_area("Instruction", pause.instruction, key=f"{key}_instruction")
        prompt = st.text_area("Prompt", pause.prompt or "", key=f"{key}_prompt", height=200)
    else:
        output = st.text_area("Output", pause.output or "", key=f"{key}_output", height=160)
    columns = st.columns(len(PAUSED_ACTIONS))
    for column, (button_key, (label, action)) in zip(columns, PAUSED_ACTIONS.items(), strict=True):
        if column.button(label, key=button_key):
            decision = Decision(
                action,  # type: ignore[arg-type]
                instruction=instruction if instruction != pause.instruction else None,
                prompt=prompt if prompt is not None and prompt != (pause.prompt or "") else None,
                output=output if output is not None and output != (pause.output or "") else None,
            )
            gate.answer(decision)
            st.rerun(scope="app")


def _stored_pause(
    ws: Workspace, jobs: JobManager, session: ArborSession, plan: Plan, record: dict[str, Any]
) -> None:
    """A run paused in the store with nobody waiting: Continue resumes it as a new run."""
    run_id, node_id = record["run_id"], record.get("paused_node") or ""
    st.warning(f"Run `{run_id}` is paused: {record.get('stop_reason') or node_id}")
    nodes = {r["node_id"]: r for r in ws.traces.node_executions(run_id)}
    known = plan.nodes()
    node = known.get(node_id)
    if node is not None:
        for upstream in [*node.depends_on, *(c.id for c in node.children)]:
            text = (nodes.get(upstream) or {}).get("output") or ""
            st.text_area(f"Input from {upstream}", text, disabled=True, key=f"stored_in_{upstream}")
    instruction = st.text_area(
        "Instruction", node.instruction if node else "", key=f"stored_{run_id}_instruction"
    )
    output = st.text_area(
        "Output (leave empty to run the node)", "", key=f"stored_{run_id}_output", height=120
    )
    columns = st.columns(len(PAUSED_ACTIONS))
    clicked = [
        action
        for column, (button_key, (label, action)) in zip(
            columns, PAUSED_ACTIONS.items(), strict=True
        )
        if column.button(label, key=button_key)
    ]
    if not clicked:
        return
    action = clicked[0]
    if action == "cancel":
        close_paused(ws.traces, run_id)
        st.rerun(scope="app")
    set_output = {node_id: output} if output.strip() and node_id else {}
    if action == "skip" and node_id:
        set_output = {node_id: ""}
    set_instruction = (
        {node_id: instruction} if node is not None and instruction != node.instruction else {}
    )
    gate = control.PauseGate()
    job = jobs._submit(
        plan,
        lambda job: control.resume_with_edits(
            ws,
            run_id,
            set_output=set_output,
            set_instruction=set_instruction,
            step=action == "step",
            controller=gate,
            listeners=[job.on_event],
            cancel=job.cancel,
            new_run_id=job.run_id,
        ),
    )
    session.run_ids.append(job.run_id)
    st.session_state.run_id = job.run_id
    st.rerun(scope="app")


# -- fork ----------------------------------------------------------------------------------
def fork_view(
    ws: Workspace,
    jobs: JobManager,
    session: ArborSession,
    plan: Plan,
    selected: str,
    *,
    running: bool = False,
) -> None:
    """ "Fork from <node>" on the session's newest finished run, then the comparison."""
    current = st.session_state.get("run_id")
    record = ws.traces.run(current) if current else None
    if record and record.get("forked_from") and record["status"] not in ("running", "paused"):
        st.success(fork_summary(ws, record))
        if st.button("Compare in the Inspector", key="fork_compare"):
            st.session_state[INSPECT_KEY] = record["run_id"]
            st.session_state[COMPARE_KEY] = record["forked_from"]
            st.session_state[VIEW_KEY] = "Compare"
            st.switch_page(str(Path(__file__).with_name("inspector_page.py")))
    runs = [r for r in ws.traces.runs(session.id, limit=5) if r["status"] != "running"]
    if not runs or selected not in plan.nodes():
        return
    source = runs[0]
    with st.expander(f"Fork from {selected}"):
        st.caption(
            f"A new run of `{source['run_id']}`: nodes not downstream of `{selected}` are taken "
            "from its records without calls; this node and everything downstream run again."
        )
        instruction = st.text_area(
            "Instruction", plan.nodes()[selected].instruction, key=f"fork_instruction_{selected}"
        )
        output = st.text_area(
            "Output (pins it; leave empty to run the node)", "", key=f"fork_output_{selected}"
        )
        node = plan.nodes()[selected]
        model_col, strategy_col = st.columns(2)
        with model_col:
            model = model_picker(node.model, key=f"fork_model_{selected}", allow_inherit=True)
        current = node.strategy or plan.default_strategy  # None: the plan's default
        keep = f"as it was ({current.kind.replace('_', ' ')})"
        strategy = strategy_col.selectbox(
            "Strategy", [keep, *FORK_STRATEGIES], key=f"fork_strategy_{selected}"
        )
        changes: dict[str, Any] = {}
        if model != node.model:
            changes["model"] = model
        if strategy != keep:
            changes["strategy"] = strategy_from_spec(strategy)
        if st.button(f"Fork from {selected}", key="fork_run", disabled=running):
            try:
                job = start_fork(
                    ws,
                    jobs,
                    source["run_id"],
                    selected,
                    plan,
                    instruction=instruction,
                    output=output,
                    changes=changes,
                )
            except ArborError as exc:
                st.error(user_message(exc))
                return
            session.run_ids.append(job.run_id)
            st.session_state.run_id = job.run_id
            st.rerun()


def start_fork(
    ws: Workspace,
    jobs: JobManager,
    source_run_id: str,
    node_id: str,
    plan: Plan,
    *,
    instruction: str | None = None,
    output: str | None = None,
    changes: dict[str, Any] | None = None,
) -> RunJob:
    """Fork in the background; ``fork_summary`` reads what it did from the store.

    ``changes``: the node's plan fields to change for the fork (``model``, ``strategy``)."""
    record = ws.traces.run(source_run_id)
    stored = Plan.from_json(record["plan_json"]) if record and record.get("plan_json") else plan
    old = stored.nodes()[node_id].instruction if node_id in stored.nodes() else None
    set_instruction = {node_id: instruction} if instruction and instruction != old else {}
    set_output = {node_id: output} if output and output.strip() else {}

    def work(job: RunJob):
        return control.fork(
            ws,
            source_run_id,
            node_id,
            set_output=set_output,
            set_instruction=set_instruction,
            changes={node_id: changes} if changes else None,
            listeners=[job.on_event],
            cancel=job.cancel,
            run_id=job.run_id,
        ).result

    return jobs._submit(stored, work)  # the job manager's own runner


def fork_summary(ws: Workspace, record: dict[str, Any]) -> str:
    """One line on a finished fork against its source: reused nodes, calls, the answer."""
    source = ws.traces.run(record["forked_from"]) or {}
    nodes = ws.traces.node_executions(record["run_id"])
    reused = sum(1 for n in nodes if n["reused_from"] == record["forked_from"])
    calls = sum(control.calls_by_node(ws, record["run_id"]).values())
    changed = (record.get("answer") or "").strip() != (source.get("answer") or "").strip()
    return (
        f"Forked `{record['forked_from']}` at `{record.get('forked_at_node')}`: {reused} nodes "
        f"reused, {calls} model call(s) made, answer {'changed' if changed else 'unchanged'}."
    )


__all__ = [
    "breakpoints",
    "fork_summary",
    "node_controls",
    "panel",
    "paused_view",
    "pinned_nodes",
    "start_debug_run",
    "start_fork",
]
