"""The annotate widget: label a node's output (or one of its model calls, or the whole run) good
or bad, with an optional score, note and corrected output; list what the run's node carries;
turn an annotation into an evaluation example ("Add to dataset").

``annotation_panel(ws, run_id, node_id)`` is what the Inspector's node detail and the
workbench's finished-run section call; ``annotation_badges(ws, run_id)`` gives the graph its
per-node marks ("bad ×2"). Widget keys start with ``annot_`` and end with the node id, so two
panels on one page do not collide. The work is ``app.services.annotations``'s.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app.services import annotations as service
from app.services.annotations import annotation_badges
from engine.errors import ArborError
from storage.traces.annotations import badge

#: The choice that annotates the node's output rather than one call.
NODE_OUTPUT = "(the node's output)"
RUN_TARGET = "(the whole run)"
MESSAGE_KEY = "annot_message"


def _key(name: str, node_id: str | None) -> str:
    return f"annot_{name}_{node_id or 'run'}"


def _save(ws: Any, run_id: str, node_id: str | None, calls: dict[str, str]) -> None:
    """The Save button's callback: store, then clear the fields (only a callback may)."""
    state = st.session_state
    label = state.get(_key("label", node_id))
    if label not in service.LABELS:
        state[MESSAGE_KEY] = ("error", "Choose good or bad before saving.")
        return
    target = state.get(_key("target", node_id), NODE_OUTPUT)
    call_id = calls.get(target)
    try:
        row = service.annotate(
            ws,
            run_id,
            node_id,
            label=label,
            score=state.get(_key("score", node_id)),
            note=state.get(_key("note", node_id)) or None,
            call_id=call_id,
            corrected_output=state.get(_key("correct", node_id)) or None,
        )
    except ArborError as exc:
        state[MESSAGE_KEY] = ("error", str(exc))
        return
    where = f"call {call_id}" if call_id else (f"node {node_id}" if node_id else "the run")
    state[MESSAGE_KEY] = ("success", f"Saved: {where} is {row['label']} ({row['annotation_id']}).")
    for name in ("note", "correct"):
        state[_key(name, node_id)] = ""
    state[_key("score", node_id)] = None


def _add_to_dataset(ws: Any, run_id: str, node_id: str | None) -> None:
    state = st.session_state
    annotation_id = state.get(_key("example", node_id))
    name = (state.get(_key("dataset", node_id)) or "").strip()
    if not annotation_id or not name:
        state[MESSAGE_KEY] = ("error", "Pick an annotation and name the dataset.")
        return
    try:
        added = service.add_to_dataset(ws, run_id, annotation_id, name)
    except ArborError as exc:
        state[MESSAGE_KEY] = ("error", str(exc))
        return
    verb = "Created" if added.created else "Added to"
    state[MESSAGE_KEY] = (
        "success",
        f"{verb} dataset {added.path.stem} ({added.size} examples): example {added.example.id}.",
    )


def annotation_panel(
    ws: Any, run_id: str, node_id: str | None = None, *, calls: pd.DataFrame | None = None
) -> None:
    """The annotate widget for node ``node_id`` of run ``run_id`` (the whole run when None).

    ``calls``: the node's model calls (``call_id``, ``role``, ``sample_index``), offered as
    targets beside the node's output; read from the store when not given.
    """
    if calls is None and node_id is not None:
        calls = pd.DataFrame(ws.traces.model_calls(run_id))
        if not calls.empty:
            calls = calls[calls["node_id"] == node_id]
    targets: dict[str, str] = {}
    if calls is not None and not calls.empty and "call_id" in calls:
        for position, call in enumerate(calls.itertuples(), start=1):
            role = getattr(call, "role", None) or "answer"
            targets[f"call {position} · {role} · {call.call_id}"] = str(call.call_id)
    existing = [
        row
        for row in ws.traces.annotations(run_id)
        if (row["node_id"] == node_id if node_id else row["node_id"] is None)
    ]
    title = "Annotate this node" if node_id else "Annotate this run"
    if existing:
        title += f" · {badge([row['label'] for row in existing])}"
    with st.expander(title, expanded=bool(existing)):
        message = st.session_state.pop(MESSAGE_KEY, None)
        if message:
            getattr(st, message[0])(message[1])
        label_col, score_col = st.columns([2, 1])
        label_col.segmented_control("Label", list(service.LABELS), key=_key("label", node_id))
        low, high = service.SCORE_RANGE
        score_col.number_input(
            "Score (optional)",
            min_value=low,
            max_value=high,
            value=None,
            step=0.05,
            key=_key("score", node_id),
        )
        if targets:
            st.selectbox("Annotate", [NODE_OUTPUT, *targets], key=_key("target", node_id))
        st.text_area("Note", key=_key("note", node_id), height=68)
        st.text_area(
            "Corrected output (optional)",
            key=_key("correct", node_id),
            height=68,
            help="What the output should have been; 'Add to dataset' uses it as the expected "
            "answer.",
        )
        st.button(
            "Save annotation",
            key=_key("save", node_id),
            on_click=_save,
            args=(ws, run_id, node_id, targets),
            type="primary",
        )
        if existing:
            _existing_table(existing, node_id)
            _dataset_form(ws, run_id, node_id, existing)


def _existing_table(rows: list[dict[str, Any]], node_id: str | None) -> None:
    table = pd.DataFrame(
        [
            {
                "id": row["annotation_id"],
                "label": row["label"],
                "score": row["score"],
                "call": row["call_id"] or "",
                "note": row["note"] or "",
                "corrected output": row["corrected_output"] or "",
                "at": row["created_at"],
            }
            for row in rows
        ]
    )
    st.dataframe(
        table, key=_key("table", node_id), hide_index=True, width="stretch", placeholder=""
    )


def _dataset_form(ws: Any, run_id: str, node_id: str | None, rows: list[dict[str, Any]]) -> None:
    labels = {
        row["annotation_id"]: f"{row['annotation_id']} · {row['label']}"
        + (" · corrected" if row["corrected_output"] else "")
        for row in rows
    }
    pick_col, name_col = st.columns([2, 2])
    pick_col.selectbox(
        "Example from",
        list(labels),
        index=len(labels) - 1,
        format_func=labels.__getitem__,
        key=_key("example", node_id),
    )
    name_col.text_input("Dataset", value="annotated", key=_key("dataset", node_id))
    st.button(
        "Add to dataset",
        key=_key("dataset_add", node_id),
        on_click=_add_to_dataset,
        args=(ws, run_id, node_id),
        help="The input (the run's task, or the node's rendered prompt) and the corrected "
        "output become one example of a dataset in this workspace.",
    )


__all__ = ["annotation_badges", "annotation_panel"]
