"""What the workbench shows about a decomposition: "Why this plan" (every candidate the planner
considered, its scores, the chosen one, the pattern and the task's language, and a button to
use another usable candidate instead), the clarification a vague task gets, and the planner's
progress while it works.

The decompose result is kept in ``st.session_state`` under ``RESULT_KEY`` (with the planner
run's id under ``RUN_KEY``) until the next decomposition or a fresh plan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd
import streamlit as st
from streamlit.elements.lib.mutable_status_container import StatusContainer

from app.ui import plan_panel
from engine.plan import Plan
from engine.planner.decompose import DecomposeResult
from storage.sessions import ArborSession

RESULT_KEY = "decompose_result"
RUN_KEY = "decompose_run_id"
IN_USE_KEY = "decompose_in_use"
TASK_KEY = "task_input"


def remember(result: DecomposeResult | None, run_id: str | None = None) -> None:
    """Keep ``result`` for the panels below (None forgets the last one)."""
    st.session_state[RESULT_KEY] = result
    st.session_state[RUN_KEY] = run_id
    st.session_state[IN_USE_KEY] = result.chosen if result is not None else None


def progress_reporter(status: StatusContainer) -> Callable[[str], None]:
    """A planner ``on_progress`` that relabels ``status`` (an ``st.status``) with each stage.

    Only the script's own thread may draw; a stage reported from another thread is dropped.
    """
    owner = threading.current_thread()

    def report(stage: str) -> None:
        if threading.current_thread() is owner:
            status.update(label=f"Planner: {stage}...")
            status.write(stage)

    return report


def _use_example(example: str) -> None:
    # A callback runs before the script, so the task box may still be changed.
    st.session_state[TASK_KEY] = example


def clarification(result: DecomposeResult) -> None:
    """The planner's request for detail, with each example rewrite as a button."""
    assert result.clarification is not None
    st.warning(result.clarification.message)
    if result.clarification.examples:
        st.markdown("For example (click one to put it in the task box):")
        for index, example in enumerate(result.clarification.examples):
            st.button(
                example,
                key=f"clarify_example_{index}",
                on_click=_use_example,
                args=(example,),
            )


def _candidates_table(result: DecomposeResult, in_use: int | None) -> pd.DataFrame:
    rows = []
    for index, candidate in enumerate(result.candidates):
        row: dict[str, object] = {
            "#": index + 1,
            "source": candidate.source,
            "chosen": "✓ chosen" if index == result.chosen else "",
            "in use": "✓" if index == in_use else "",
            "total": round(candidate.total, 3),
        }
        for name, value in candidate.scores.items():
            row[name] = round(value, 3)
        row["steps"] = len(candidate.plan.root.children) if candidate.plan is not None else None
        row["problem"] = candidate.problem or ""
        rows.append(row)
    return pd.DataFrame(rows)


def _replacement(plan: Plan) -> Callable[[], Plan]:
    copy = plan.model_copy(deep=True)
    return lambda: copy


def why_this_plan(session: ArborSession, result: DecomposeResult, run_id: str | None) -> None:
    """Every candidate with its scores; a usable one can replace the session's plan (an edit,
    so *Undo* brings the planner's choice back)."""
    in_use = st.session_state.get(IN_USE_KEY)
    count = len(result.candidates)
    title = f"Why this plan ({count} candidate(s))" if count else "Why this plan"
    with st.expander(title, expanded=False):
        facts = [f"planner: **{result.style}**"]
        facts.append(f"pattern: **{result.pattern or 'none'}**")
        facts.append(f"task language: **{result.language or 'unclear'}**")
        facts.append(f"{result.attempts} model call(s)")
        st.markdown(" · ".join(facts))
        if run_id:
            st.caption(f"Recorded as planner run `{run_id}` (Inspector, kind *decompose*).")
        if not result.candidates:
            st.write(
                "This planner answered once under a JSON schema; there were no other candidates."
                + (
                    " Its answer was unusable, so this is the one-node plan."
                    if result.fallback
                    else ""
                )
            )
            return
        st.dataframe(
            _candidates_table(result, in_use), hide_index=True, width="stretch", placeholder=""
        )
        for index, candidate in enumerate(result.candidates):
            marks = []
            if index == result.chosen:
                marks.append("chosen")
            if index == in_use and index != result.chosen:
                marks.append("in use")
            heading = f"**{index + 1}. {candidate.source}**" + (
                f" ({', '.join(marks)})" if marks else ""
            )
            scores = ", ".join(f"{name} {value:.2f}" for name, value in candidate.scores.items())
            st.markdown(
                f"{heading} total {candidate.total:.2f}" + (f" · {scores}" if scores else "")
            )
            if candidate.plan is None:
                st.caption(f"unusable: {candidate.problem or 'no plan'}")
                continue
            st.caption(
                "Steps: "  # not at the start: "1." would become a Markdown list
                + " · ".join(
                    f"{n}. {child.title}" for n, child in enumerate(candidate.plan.root.children, 1)
                )
            )
            for note in candidate.notes:
                st.caption(f"note: {note}")
            if index != in_use and st.button("Use this plan instead", key=f"use_candidate_{index}"):
                label = f"use candidate {index + 1} ({candidate.source})"
                if plan_panel.apply_edit(session, label, _replacement(candidate.plan)):
                    st.session_state[IN_USE_KEY] = index
                st.rerun()


def render(session: ArborSession) -> None:
    """The panels for the last decomposition, if any."""
    result: DecomposeResult | None = st.session_state.get(RESULT_KEY)
    if result is None:
        return
    if result.clarification is not None:
        clarification(result)
        return
    why_this_plan(session, result, st.session_state.get(RUN_KEY))
