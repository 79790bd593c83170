"""The plan section of the workbench: graph, node editor, restructuring, planner actions,
undo/redo, revisions and import/export. Every change goes through ``engine`` functions that
return a new validated plan; a refused edit shows its message and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app.ui import compute_panel, layout, planner_jobs, run_control, state
from app.ui.graph import picked_node, plan_chart
from app.ui.widgets import choice_box, model_picker
from engine.errors import ArborError
from engine.models.model_kind import KindVerdict, kind_of
from engine.plan import GenerationConfig, ModelRef, Node, Plan, editing
from engine.plan.files import export_plan, import_plan
from engine.plan.history import PlanHistory
from engine.plan.templates import check_instruction
from engine.planner.alternatives import merge_alternatives
from engine.prompts import preview_messages
from storage.sessions import ArborSession
from storage.workspace import Workspace

GRAPH_KEY = "plan_graph"


# -- state helpers --------------------------------------------------------------------------
def flash(kind: str, text: str) -> None:
    st.session_state.setdefault("flash", []).append((kind, text))


def history(session: ArborSession) -> PlanHistory:
    """Undo history of the session's current plan, started afresh when the plan is replaced."""
    current: PlanHistory | None = st.session_state.get("history")
    if current is None or current.current != session.plan:
        current = PlanHistory(session.plan)
        st.session_state.history = current
    return current


def set_plan(session: ArborSession, plan: Plan) -> None:
    """Replace the plan wholesale (decompose, open, import): a new undo history starts."""
    session.plan = plan
    st.session_state.history = PlanHistory(plan)
    st.session_state.select_next = plan.root.id


def apply_edit(
    session: ArborSession, label: str, edit: Callable[[], Plan | tuple[Plan, str]]
) -> bool:
    """Run one engine edit; on success record it for undo and select the new node if any."""
    try:
        outcome = edit()
    except ArborError as exc:
        flash("error", f"Not applied ({label}): {exc}")
        return False
    plan, new_id = outcome if isinstance(outcome, tuple) else (outcome, None)
    session.plan = history(session).apply(plan, label)
    if new_id:
        st.session_state.select_next = new_id
    flash("success", f"{label}: done.")
    return True


# -- sections --------------------------------------------------------------------------------
def toolbar(session: ArborSession) -> None:
    hist = history(session)
    undo_col, redo_col, colour_col, json_col, yaml_col = st.columns([1, 1, 2, 1, 1])
    if undo_col.button(
        "Undo", key="undo", disabled=not hist.can_undo, help=f"Undo: {hist.undo_label or '-'}"
    ):
        session.plan = hist.undo()
        flash("info", "Undone.")
        st.rerun()
    if redo_col.button(
        "Redo", key="redo", disabled=not hist.can_redo, help=f"Redo: {hist.redo_label or '-'}"
    ):
        session.plan = hist.redo()
        flash("info", "Redone.")
        st.rerun()
    colour_col.radio(
        "Colour nodes by",
        ["status", "difficulty"],
        horizontal=True,
        key="colour_by",
        label_visibility="collapsed",
    )
    for column, fmt in ((json_col, "json"), (yaml_col, "yaml")):
        column.download_button(
            f"Export {fmt.upper()}",
            data=export_plan(session.plan, fmt),
            file_name=f"plan.{fmt}",
            mime="application/json" if fmt == "json" else "application/yaml",
            key=f"export_{fmt}",
        )


def selection(plan: Plan) -> str:
    """The selected node id: a click on the graph, else the node picker, else the root.

    ``selected_node`` is page state, not a widget's key, so code may change it at any point
    of a run (``choice_box`` carries it into the picker).
    """
    nodes = plan.nodes()
    clicked = picked_node(st.session_state.get(graph_key(st.session_state.get("selected_node"))))
    if clicked in nodes:
        st.session_state.selected_node = clicked
    if "select_next" in st.session_state:
        st.session_state.selected_node = st.session_state.pop("select_next")
    if st.session_state.get("selected_node") not in nodes:
        st.session_state.selected_node = plan.root.id
    return st.session_state.selected_node


def graph_key(selected: str | None) -> str:
    """The graph's widget key, one per selected node.

    A Vega point selection ignores a click on the point it already holds, so a chart that kept
    its selection would swallow a click on a node picked before (and since left through the
    picker). A chart keyed by the selection starts empty whenever the selection moves.
    """
    return f"{GRAPH_KEY}_{selected}"


GRAPH_VIEWS = {"beside": "Graph beside the editor", "wide": "Graph full width"}
SIZE_BY_LABELS = {
    "none": "Same size",
    "tokens": "Size by tokens",
    "cost": "Size by cost",
    "seconds": "Size by seconds",
}


def run_metrics(ws: Workspace, run_id: str | None) -> dict[str, dict[str, float]]:
    """Per node figures of a recorded run (tokens, cost, seconds) for the graph."""
    if not run_id:
        return {}
    figures: dict[str, dict[str, float]] = {}
    for row in ws.traces.node_executions(run_id):
        started, finished = row.get("started_at"), row.get("finished_at")
        seconds = (finished - started).total_seconds() if started and finished else 0.0
        figures[row["node_id"]] = {
            "tokens": float((row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)),
            "cost": float(row.get("cost_usd") or 0.0),
            "seconds": float(seconds),
        }
    return figures


def graph(
    plan: Plan,
    status: dict[str, str],
    selected: str,
    *,
    metrics: dict[str, dict[str, float]] | None = None,
    marks: dict[str, list[str]] | None = None,
) -> None:
    options_col, size_col = st.columns([1, 1])
    options_col.segmented_control(
        "Graph",
        list(GRAPH_VIEWS),
        format_func=GRAPH_VIEWS.__getitem__,
        key="graph_view",
        default="beside",
        label_visibility="collapsed",
    )
    size_by = size_col.segmented_control(
        "Node size",
        list(SIZE_BY_LABELS),
        format_func=SIZE_BY_LABELS.__getitem__,
        key="graph_size_by",
        default="none",
        label_visibility="collapsed",
        disabled=not metrics,
        help="Needs a run: size each node by its tokens, cost or seconds in the latest run.",
    )
    chart = plan_chart(
        plan,
        status,
        colour_by=st.session_state.get("colour_by", "status"),
        selected=selected,
        suspect=st.session_state.get("suspect_nodes"),  # set by the workbench from the run
        metrics=metrics,
        marks=marks,
        size_by=size_by or "none",
    )
    # Drawn at its natural size (a column per layer, a row per leaf); a wider or taller graph
    # scrolls inside its box. Stretched to the box, Streamlit fits legends and plot into the
    # chart's height, which squeezed a small plan's rows into a few pixels.
    with st.container(key=layout.GRAPH_BOX_KEY):
        st.altair_chart(chart, on_select="rerun", key=graph_key(selected), width="content")
    st.caption(
        "Click a node to edit it. Grey lines: subtask of. Dashed blue arcs: uses the output of. "
        "Hover a node for its full title."
    )


PROMPT_STYLES = ("auto", "chat", "base", "completion")
PROMPT_STYLE_HELP = (
    "auto: base prompts for base (pretrained) models, chat prompts for instruction-tuned ones."
    " chat: the node prompt in the model's chat format. base: Arbor's few-shot completion"
    " prompt (worked question/answer pairs in several languages, then this node's question);"
    " what a base model such as the bundled Gemma 3 270M needs, since it echoes chat prompts."
    " completion: the instruction alone as raw text; write your own examples into it."
)


def _node_kind(plan: Plan, node: Node) -> tuple[KindVerdict, str]:
    """The node model's kind (its registry entry's override included) and the style auto
    gives it."""
    ref = plan.model_for(node)
    try:
        declared = state.registry().declared_kind(ref)
    except ArborError:
        declared = "auto"
    verdict = kind_of(ref, declared)
    return verdict, "base" if verdict.kind == "base" else "chat"


def _style_change(inherited: GenerationConfig, prompt_format: str) -> dict[str, object]:
    """The node's own generation settings with the chosen style; none if it did not change."""
    if prompt_format == inherited.prompt_format:
        return {}
    return {"generation": inherited.model_copy(update={"prompt_format": prompt_format})}


def node_editor(session: ArborSession, plan: Plan, selected: str) -> None:
    nodes = plan.nodes()
    node = nodes[selected]
    with st.form(f"edit_{selected}"):
        st.markdown(f"**Edit node `{selected}`**")
        title = st.text_input("Title", value=node.title)
        instruction = st.text_area(
            "Instruction",
            value=node.instruction,
            height=120,
            help="A Jinja template: {{ task }}, {{ parent.title }}, {{ ancestors }}, "
            "{{ deps.ID }} (the output of a dependency).",
        )
        others = [nid for nid in nodes if nid != selected]
        depends_on = st.multiselect(
            "Uses the output of",
            others,
            default=[d for d in node.depends_on if d in others],
            format_func=lambda nid: f"{nid}: {nodes[nid].title}",
        )
        difficulty_col, reason_col = st.columns([1, 2])
        difficulty = difficulty_col.selectbox(
            "Difficulty",
            [None, 1, 2, 3, 4, 5],
            index=node.difficulty or 0,
            format_func=lambda d: "unrated" if d is None else str(d),
        )
        reason = reason_col.text_input("Why", value=node.difficulty_reason or "")
        node_model = model_picker(node.model, key=f"node_model_{selected}", allow_inherit=True)
        inherited = plan.generation_for(node)
        verdict, style = _node_kind(plan, node.model_copy(update={"model": node_model}))
        style_col, kind_col = st.columns([1, 2])
        prompt_format = style_col.selectbox(
            "Prompt style",
            list(PROMPT_STYLES),
            index=list(PROMPT_STYLES).index(inherited.prompt_format),
            help=PROMPT_STYLE_HELP,
        )
        kind_col.caption(
            f"Model kind: {verdict.describe()}. With prompt style auto this node is sent "
            f"{style} prompts."
        )
        applied = st.form_submit_button("Apply changes")
    if applied:
        problems = check_instruction(plan, selected, instruction, depends_on=depends_on)
        if problems:
            flash("error", "Not applied: " + " ".join(problems))
        else:
            apply_edit(
                session,
                f"edit {selected}",
                lambda: editing.update_node(
                    plan,
                    selected,
                    title=title,
                    instruction=instruction,
                    depends_on=depends_on,
                    model=node_model,
                    difficulty=difficulty,
                    difficulty_reason=reason.strip() or None,
                    **_style_change(inherited, prompt_format),
                ),
            )
        st.rerun()
    with st.expander("Prompt as it will be rendered"):
        try:
            if inherited.prompt_format != "auto":
                style = inherited.prompt_format
            st.caption(f"Prompt style: {style}")
            for message in preview_messages(plan, selected, style=style):  # type: ignore[arg-type]
                st.text(f"[{message['role']}]\n{message['content']}")
        except ArborError as exc:
            st.error(str(exc))
    run_control.node_controls(session, selected)  # pause toggles and the pin (issue 14)


def restructure(session: ArborSession, plan: Plan, selected: str) -> None:
    """Buttons that change the tree's shape around the selected node."""
    is_root = selected == plan.root.id
    parent = None if is_root else plan.parent_of(selected)
    row1 = st.columns(4)
    if row1[0].button("Add child", key="add_child"):
        apply_edit(
            session,
            "add child",
            lambda: editing.add_child(
                plan, selected, _fresh_title(plan), "Describe what this step produces."
            ),
        )
        st.rerun()
    if row1[1].button("Add sibling", key="add_sibling", disabled=is_root):
        apply_edit(
            session,
            "add sibling",
            lambda: editing.add_sibling(
                plan, selected, _fresh_title(plan), "Describe what this step produces."
            ),
        )
        st.rerun()
    if row1[2].button("Duplicate", key="duplicate", disabled=is_root):
        apply_edit(session, "duplicate", lambda: editing.duplicate_node(plan, selected))
        st.rerun()
    if row1[3].button("Add dependency…", key="show_dep", disabled=is_root):
        st.session_state.show_dep_picker = True
    if st.session_state.get("show_dep_picker") and not is_root:
        nodes = plan.nodes()
        candidates = [n for n in nodes if n != selected and n not in nodes[selected].depends_on]
        dep_col, go_col = st.columns([3, 1], vertical_alignment="bottom")
        with dep_col:
            dep = choice_box(
                f"{selected} uses the output of",
                candidates,
                key="dep_choice",
                format_func=lambda nid: f"{nid}: {nodes[nid].title}",
            )
        if go_col.button("Add edge", key="add_dep") and dep:
            if apply_edit(
                session,
                f"add dependency {selected} <- {dep}",
                lambda: editing.add_dependency(plan, selected, dep),
            ):
                st.session_state.show_dep_picker = False
            st.rerun()
    row2 = st.columns(4)
    if parent is not None:
        siblings = [child.id for child in parent.children]
        position = siblings.index(selected)
        if row2[0].button("Move up", key="move_up", disabled=position == 0):
            apply_edit(
                session, "move up", lambda: editing.reorder_node(plan, selected, position - 1)
            )
            st.rerun()
        if row2[1].button("Move down", key="move_down", disabled=position == len(siblings) - 1):
            apply_edit(
                session, "move down", lambda: editing.reorder_node(plan, selected, position + 1)
            )
            st.rerun()
        if row2[2].button("Delete subtree", key="delete_subtree"):
            apply_edit(session, f"delete {selected}", lambda: editing.remove_node(plan, selected))
            st.rerun()
        if row2[3].button("Delete, keep children", key="delete_keep"):
            apply_edit(
                session,
                f"delete {selected} (children kept)",
                lambda: editing.remove_node(plan, selected, keep_children=True),
            )
            st.rerun()
        nodes = plan.nodes()
        targets = [n for n in nodes if n != selected and n != parent.id]
        if targets:
            move_col, go_col = st.columns([3, 1], vertical_alignment="bottom")
            with move_col:
                target = choice_box(
                    "Move under",
                    targets,
                    key="move_target",
                    format_func=lambda nid: f"{nid}: {nodes[nid].title}",
                )
            if go_col.button("Move", key="move_node"):
                apply_edit(
                    session,
                    f"move {selected} under {target}",
                    lambda: editing.move_node(plan, selected, target),
                )
                st.rerun()


def planner_actions(
    session: ArborSession, plan: Plan, selected: str, model: ModelRef, ws: Workspace
) -> None:
    """Model-backed actions: expand, re-plan, rate difficulty, alternatives. Each runs as a
    background planner job (``app.ui.planner_jobs``: elapsed time, stage, Cancel) and is
    recorded in the trace store as a planner run (``app.services.planning``)."""
    traced = {"store": ws.traces, "session_id": session.id}
    jobs = planner_jobs.manager()
    busy = planner_jobs.busy()
    cols = st.columns(4)
    if cols[0].button(
        "Expand with planner",
        key="expand_node",
        disabled=busy,
        help=planner_jobs.busy_help(f"Split {selected} into new subtasks, added after its own."),
    ):
        planner_jobs.remember(jobs.split(plan, selected, model, **traced), "plan")
        st.rerun()
    if cols[1].button(
        "Re-plan subtree",
        key="replan_subtree",
        disabled=busy,
        help=planner_jobs.busy_help(f"Replace everything below {selected} with a fresh split."),
    ):
        planner_jobs.remember(jobs.split(plan, selected, model, replace=True, **traced), "plan")
        st.rerun()
    if cols[2].button(
        "Rate difficulty",
        key="rate_difficulty",
        disabled=busy,
        help=planner_jobs.busy_help(
            "Rate every node that has no difficulty yet (1-5, with a reason)."
        ),
    ):
        planner_jobs.remember(jobs.rate(plan, model, **traced), "plan")
        st.rerun()
    k = cols[3].number_input("Alternatives", min_value=2, max_value=4, value=2, key="alt_k")
    scope_col, go_col = st.columns([2, 1])
    scope = scope_col.radio(
        "Alternatives for",
        ["whole task", "selected subtree"],
        horizontal=True,
        key="alt_scope",
        disabled=selected == plan.root.id,
    )
    under = selected if scope == "selected subtree" and selected != plan.root.id else None
    if go_col.button(
        "Sample alternative plans",
        key="sample_alternatives",
        disabled=busy,
        help=planner_jobs.busy_help(),
    ):
        job = jobs.alternatives(plan.task, int(k), model, plan=plan, node_id=under, **traced)
        planner_jobs.remember(job, "plan")
        st.rerun()
    planner_jobs.panel("plan")


def _planner_result(session: ArborSession, label: str, call: Callable[[], object]) -> None:
    try:
        result = call()
    except ArborError as exc:
        flash("error", f"Could not {label}: {exc}")
        return
    notes = list(getattr(result, "notes", []))
    if getattr(result, "fallback", False):
        flash(
            "warning",
            f"{label}: the planner's output was unusable; the plan is unchanged. "
            + " ".join(notes),
        )
        return
    apply_edit(session, label, lambda: result.plan)
    for note in notes:
        flash("info", note)


def alternatives_panel(session: ArborSession) -> None:
    """k sampled plans side by side: use one, or tick subtasks from several and merge them."""
    offer = st.session_state.get("alternatives")
    if not offer:
        return
    results, under, base = offer["results"], offer["under"], offer["base"]
    where = "the task" if under == base.root.id else f"{under}: {base.node(under).title}"
    st.markdown(f"#### Alternative plans for {where}")
    columns = st.columns(len(results))
    picks: list[tuple[Plan, str]] = []
    for index, (column, result) in enumerate(zip(columns, results, strict=True)):
        with column:
            st.markdown(f"**Plan {index + 1}**" + (" (unusable)" if result.fallback else ""))
            for child in result.plan.node(under).children:
                deps = f" ← {', '.join(child.depends_on)}" if child.depends_on else ""
                rating = f" · difficulty {child.difficulty}" if child.difficulty else ""
                if st.checkbox(f"{child.id} {child.title}{deps}", key=f"alt_{index}_{child.id}"):
                    picks.append((result.plan, child.id))
                st.caption(child.instruction + rating)
            for note in result.notes:
                st.caption(f"note: {note}")
            if not result.fallback and st.button("Use this plan", key=f"use_alt_{index}"):
                apply_edit(session, f"use alternative {index + 1}", lambda r=result: r.plan)
                st.session_state.alternatives = None
                st.rerun()
    merge_col, close_col = st.columns(2)
    if merge_col.button("Merge ticked subtasks", key="merge_alternatives", disabled=not picks):
        try:
            merged, notes = merge_alternatives(session.plan or base, picks, under=under)
        except ArborError as exc:
            flash("error", f"Not merged: {exc}")
        else:
            apply_edit(session, f"merge {len(picks)} subtasks", lambda: merged)
            for note in notes:
                flash("info", note)
            st.session_state.alternatives = None
        st.rerun()
    if close_col.button("Close alternatives", key="close_alternatives"):
        st.session_state.alternatives = None
        st.rerun()


def revisions_panel(session: ArborSession, ws: Workspace) -> None:
    if not ws.sessions.exists(session.id):
        st.caption("Save the session to start recording plan revisions.")
        return
    revisions = ws.sessions.revisions.list(session.id)
    if not revisions:
        st.caption("No revisions yet.")
        return
    for revision in revisions:
        st.markdown(
            f"- **r{revision.number}** {revision.created_at:%Y-%m-%d %H:%M:%S} "
            f"{revision.message or ''} ({revision.summary})"
        )
    numbers = [revision.number for revision in revisions]
    a_col, b_col = st.columns(2)
    older = a_col.selectbox("From", numbers, index=min(1, len(numbers) - 1), key="rev_a")
    newer = b_col.selectbox("To", numbers, index=0, key="rev_b")
    diff = ws.sessions.revisions.diff(session.id, older, newer)
    st.markdown(f"**r{older} → r{newer}:** {diff.summary()}")
    for label, ids in (("added", diff.added), ("removed", diff.removed)):
        if ids:
            st.markdown(f"- {label}: {', '.join(ids)}")
    for node_id, fields in diff.changed.items():
        st.markdown(f"- changed {node_id}: {', '.join(fields)}")
    restore = st.selectbox("Restore revision", numbers, key="rev_restore")
    if st.button("Restore", key="restore_revision"):
        revision = ws.sessions.revisions.get(session.id, restore)
        apply_edit(session, f"restore r{restore}", lambda: revision.plan)
        st.rerun()


def import_box(session: ArborSession) -> None:
    upload = st.file_uploader(
        "Import a plan (JSON or YAML)", type=["json", "yaml", "yml"], key="plan_upload"
    )
    if upload is not None and st.button("Import plan", key="import_plan"):
        text = upload.getvalue().decode("utf-8", errors="replace")
        try:
            plan = import_plan(text, source=upload.name)
        except ArborError as exc:
            st.error(f"Not imported: {exc}")
            return
        session.task = plan.task
        set_plan(session, plan)
        flash("success", f"Imported {upload.name}.")
        st.rerun()


def _fresh_title(plan: Plan) -> str:
    titles = {node.title.casefold() for node, _ in plan.iter_nodes()}
    index = 1
    while f"new subtask {index}" in titles:
        index += 1
    return f"New subtask {index}"


def graph_marks(session: ArborSession, ws: Workspace, run_id: str | None) -> dict[str, list[str]]:
    """Words to write under each node's label: pins, breakpoints, annotations."""
    from app.ui import annotations, run_control  # their panels import this module

    marks: dict[str, list[str]] = {}
    for node_id in run_control.pinned_nodes(session):
        marks.setdefault(node_id, []).append("pinned")
    for when, node_ids in run_control.breakpoints(session).items():
        for node_id in sorted(node_ids):
            marks.setdefault(node_id, []).append(f"pause {when}")
    if run_id:
        for node_id, badge in annotations.annotation_badges(ws, run_id).items():
            marks.setdefault(node_id, []).append(badge)
    return marks


def render(session: ArborSession, ws: Workspace, status: dict[str, str], model: ModelRef) -> None:
    """The whole plan section for ``session.plan``."""
    plan = session.plan
    assert plan is not None
    st.subheader("Plan")
    toolbar(session)
    selected = selection(plan)
    metrics = run_metrics(ws, st.session_state.get("run_id"))
    marks = graph_marks(session, ws, st.session_state.get("run_id"))
    area = st.container(key=layout.PLAN_AREA_KEY)
    if st.session_state.get("graph_view", "beside") == "wide":
        with area:
            graph(plan, status, selected, metrics=metrics, marks=marks)
        editor_col = st.container()
    else:
        graph_col, editor_col = area.columns([3, 2])
        with graph_col:
            graph(plan, status, selected, metrics=metrics, marks=marks)
    with editor_col:
        nodes = plan.nodes()
        choice_box(
            "Node",
            list(nodes),
            key="selected_node",
            format_func=lambda nid: f"{nid}: {nodes[nid].title}",
        )
        node_editor(session, plan, selected)
        compute_panel.node_compute_form(
            plan, selected, lambda label, edit: apply_edit(session, label, edit)
        )
    with st.expander("Restructure", expanded=True):
        restructure(session, plan, selected)
    with st.expander("Planner actions", expanded=True):
        planner_actions(session, plan, selected, model, ws)
    alternatives_panel(session)
    with st.expander("Revisions"):
        revisions_panel(session, ws)
    with st.expander("Import / plan as JSON"):
        import_box(session)
        st.code(plan.to_json(), language="json")
    from app.ui.playground import workbench_playground  # issue 14: try variants of a node

    workbench_playground(
        ws, session, selected, lambda label, edit: apply_edit(session, label, edit)
    )
