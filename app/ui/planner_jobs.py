"""A planner action running in the background, as the workbench shows it: elapsed time, the
stage, the model's text so far, the alternatives already finished, and Cancel.

One planner job per browser session (its id under ``JOB_KEY``); while it runs the planner
buttons are disabled with ``BUSY_HELP`` as their tooltip. ``panel`` polls the job from an
``st.fragment`` that reruns every second; when the job ends the fragment reruns the page and
``apply_finished`` (called near the top of the workbench) applies the result, or says why
nothing changed. Worker threads never call ``st.*`` (``app.services.planner_jobs``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import streamlit as st

from app.services.planner_jobs import ACTION_VERBS, PlannerJob, PlannerJobManager
from storage.sessions import ArborSession

JOB_KEY = "planner_job_id"
#: Where the job was started: "task" (Decompose) or "plan" (the planner actions).
ORIGIN_KEY = "planner_job_origin"
#: The last finished job's one-line outcome, shown where it ran until the next job.
OUTCOME_KEY = "planner_job_outcome"
CANCEL_KEY = "cancel_planner"
BUSY_HELP = "A planner action is running; wait for it or press Cancel in its progress box."


@st.cache_resource
def manager() -> PlannerJobManager:
    """The planner job pool, shared by every browser session of this server."""
    return PlannerJobManager(workers=2)


def current() -> PlannerJob | None:
    return manager().get(st.session_state.get(JOB_KEY))


def busy() -> bool:
    """Whether this browser session has a planner job that has not been applied yet."""
    return current() is not None


def busy_help(default: str | None = None) -> str | None:
    """The tooltip for a planner button: why it is disabled, else ``default``."""
    return BUSY_HELP if busy() else default


def remember(job: PlannerJob, origin: str) -> None:
    """Make ``job`` this session's planner job, shown where it was started."""
    st.session_state[JOB_KEY] = job.job_id
    st.session_state[ORIGIN_KEY] = origin
    st.session_state[OUTCOME_KEY] = None


@st.fragment(run_every=1.0)
def _live(job_id: str) -> None:
    job = manager().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    if not snap.running:
        st.rerun()  # leave polling: the page applies the result
    with st.container(border=True, key="planner_job_box"):
        head, button = st.columns([4, 1])
        head.markdown(f"**{snap.title}** · running for {snap.elapsed_s:.0f} s")
        if snap.cancel_requested:
            head.caption(f"Stage: cancelling (was: {snap.stage})...")
        else:
            head.caption(f"Stage: {snap.stage}")
        if button.button("Cancel", key=CANCEL_KEY, disabled=snap.cancel_requested):
            job.cancel()
            st.rerun(scope="fragment")
        if snap.partial:
            k = job.context.get("k", len(snap.partial))
            st.caption(f"{len(snap.partial)} of {k} alternatives ready")
            under = job.context.get("node_id")
            columns = st.columns(len(snap.partial))
            for number, (column, result) in enumerate(
                zip(columns, snap.partial, strict=True), start=1
            ):
                node = result.plan.node(under) if under else result.plan.root
                steps = "\n".join(f"{i}. {c.title}" for i, c in enumerate(node.children, 1))
                column.markdown(f"**Plan {number}**" + (" (unusable)" if result.fallback else ""))
                column.text(steps or "(no steps)")
        if snap.text:
            st.caption("The model's text so far")
            st.code(snap.text[-1500:], language=None, height=160)


def panel(origin: str) -> None:
    """The running job's progress box (if it was started from ``origin``), else the last
    finished job's outcome line."""
    job = current()
    if job is not None and st.session_state.get(ORIGIN_KEY) == origin:
        _live(job.job_id)
        return
    outcome = st.session_state.get(OUTCOME_KEY)
    if job is None and outcome and outcome[0] == origin:
        st.caption(outcome[1])


def _changed_note(title: str) -> str:
    return f"{title}: the plan changed while the planner worked, so its result was not applied."


def apply_finished(session: ArborSession) -> None:
    """Apply this session's finished planner job (once), then rerun so the page shows it."""
    job = current()
    if job is None or not job.done:
        return
    from app.ui import plan_panel, planner_story  # they import this module

    snap = job.snapshot()
    origin = st.session_state.get(ORIGIN_KEY, "plan")
    st.session_state[JOB_KEY] = None
    manager().forget(job.job_id)
    verb = ACTION_VERBS.get(snap.action, snap.action)
    what = f"{verb} {job.subject}".strip() if snap.action in ("expand", "replan") else verb
    seconds = f"{snap.elapsed_s:.0f} s"
    if snap.status == "cancelled":
        line = f"{snap.title} cancelled after {seconds}; nothing was changed."
        plan_panel.flash("info", line)
    elif snap.status == "failed":
        line = f"Could not {what}: {snap.error}"
        plan_panel.flash("error", line)
    else:
        line = f"{snap.title} finished in {seconds}."
        _apply_result(session, job, snap.result, snap.run_id, plan_panel, planner_story)
    st.session_state[OUTCOME_KEY] = (origin, line)
    st.rerun()


def _apply_result(
    session: ArborSession,
    job: PlannerJob,
    result: Any,
    run_id: str | None,
    plan_panel: ModuleType,
    planner_story: ModuleType,
) -> None:
    base = job.context.get("base")
    title = job.snapshot().title
    if job.action == "decompose":
        session.task = job.context["task"]
        planner_story.remember(result, run_id)
        if result.clarification is None:
            plan_panel.set_plan(session, result.plan)
            st.session_state.pop("run_id", None)
            kind = "warning" if result.fallback else "success"
            summary = (
                result.notes[-1]
                if result.fallback
                else f"Plan with {len(result.plan.root.children)} subtasks "
                f"({result.attempts} planner call(s))."
            )
            plan_panel.flash(kind, summary)
        st.session_state.decompose_notes = result.notes
        return
    if job.action == "alternatives":
        # Shown beside the plan whatever changed meanwhile: using one is an edit of its own.
        assert base is not None
        node_id = job.context.get("node_id")
        st.session_state.alternatives = {
            "results": result,
            "under": node_id or base.root.id,
            "base": base,
        }
        return
    if base is not None and session.plan != base:
        plan_panel.flash("warning", _changed_note(title))
        return
    if job.action in ("expand", "replan"):
        label = f"{ACTION_VERBS[job.action]} {job.subject}"
        plan_panel._planner_result(session, label, lambda: result)
    elif job.action == "rate":
        rated, notes = result
        if rated != base:
            plan_panel.apply_edit(session, "rate difficulty", lambda: rated)
        for note in notes:
            plan_panel.flash("info", note)
