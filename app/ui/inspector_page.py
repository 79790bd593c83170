"""The Inspector: the place to understand a run after (or while) it happens.

Pick runs of this session or of the whole store, filter them, and read one run as a timeline,
a cost breakdown per node and every node's calls with their prompts, compare two runs, follow
a session's trends, query the store in SQL and export a run's trace.

The page is a shell over ``storage.trace_queries`` and ``storage.sql_console``: it holds no SQL
and decides nothing. Only the chosen view's questions are asked (a segmented control instead
of tabs, which would compute every tab on every rerun), so a store of hundreds of runs stays
quick; the runs table is capped at ``RUN_LIMIT`` newest runs.

Over 500 lines: a Streamlit page is one script; its views are functions here, its queries in
``storage.trace_queries`` and its charts in ``inspector_charts``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from app.services import choices
from app.ui import flame_graph, inspector_charts, inspector_tables, state
from app.ui.annotations import annotation_panel
from app.ui.widgets import choice_box
from engine.errors import ArborError
from storage.sql_console import SavedQueries, run_read_only
from storage.trace_queries import RunFilter, TraceQueries, output_diff
from storage.traces.labels import RunLabel

RUN_STATUSES = [
    "running",
    "completed",
    "suspect",
    "stopped",
    "failed",
    "cancelled",
    "interrupted",
    # planner actions only: the output was unusable / the task was too vague to plan
    "fallback",
    "needs_detail",
]
RUN_LIMIT = 200
SCOPES = ("This session", "All runs")
#: The kind filter: plan executions (the default), planner actions, playground variants, or all.
KINDS = {
    "Plan runs": ("execution",),
    "Planner actions": ("decompose", "expand", "replan", "rate", "alternatives"),
    "Playground variants": ("playground",),
    "All kinds": (),
}
VIEWS = ["Timeline", "Cost per node", "Node detail", "Compare", "Trends", "SQL", "Export"]
SQL_MAX_ROWS = 1000
SQL_TIMEOUT_S = 10.0
NEW_QUERY = "(new query)"
IMPORTED = "imported (read-only)"
SAVED_KIND = {True: "example", False: "yours"}
FLASH_KEY = "inspector_flash"
LABEL_FLASH_KEY = "inspector_label_flash"
SQL_RESULT_KEY = "inspector_sql_result"
PICKED_KEY = "inspector_picked"
#: Button labels of ``storage.trace_export``'s formats (widget key: ``export_<format>``).
EXPORT_LABELS = {"otlp": "OTLP JSON", "parquet": "Parquet", "csv": "CSV"}

ws = state.workspace()
session = state.current_session()
queries = TraceQueries(ws.traces)


# -- small helpers -----------------------------------------------------------------------------
def _keep_valid(key: str, options: Sequence[Any], fallback: Any = None) -> None:
    """Drop a remembered choice that is no longer offered (another scope or filter), so the
    widget falls back to ``fallback`` instead of failing on a value outside its options."""
    if key not in st.session_state:
        if fallback is not None:
            st.session_state[key] = fallback
        return
    current = st.session_state[key]
    if isinstance(current, list):
        st.session_state[key] = [value for value in current if value in options]
    elif current not in options:
        if fallback is None:
            del st.session_state[key]
        else:
            st.session_state[key] = fallback


def _date_bounds(dates: Sequence[date]) -> tuple[datetime | None, datetime | None]:
    """Local-time bounds of a date range (both days included); one date means that day."""
    if not dates:
        return None, None
    first, last = dates[0], dates[-1]
    since = datetime.combine(first, time.min).astimezone()
    until = datetime.combine(last + timedelta(days=1), time.min).astimezone()
    return since, until


def _present(value: Any) -> bool:
    """A recorded value: not NULL (None or NaN, as pandas gives it back) and not empty."""
    return (
        value is not None
        and not (pd.api.types.is_scalar(value) and pd.isna(value))
        and (value != "")
    )


def _is_imported(origin: Any) -> bool:
    return _present(origin)


def _money(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"${float(value):.6f}"


def _seconds(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.2f} s"


def _run_label(row: pd.Series) -> str:
    # No run name here: the selectbox keeps the labels it was drawn with, so a name saved
    # while it is shown would not appear (the runs table and the header show it instead).
    started = inspector_tables.local_time(pd.Timestamp(row["started_at"]).to_pydatetime())
    task = str(row["task"] or "").replace("\n", " ")
    task = task if len(task) <= 50 else task[:49] + "…"
    imported = " · imported" if _is_imported(row["origin"]) else ""
    return f"{started} · {row['status']} · {task} · {row['run_id']}{imported}"


def _flash(kind: str, text: str) -> None:
    st.session_state.setdefault(FLASH_KEY, []).append((kind, text))


# -- scope, filters and the runs table ---------------------------------------------------------
def _run_filter() -> RunFilter:
    scope_col, kind_col, status_col, model_col, date_col, tag_col = st.columns([2, 2, 3, 3, 3, 3])
    kind = kind_col.radio(
        "Kind",
        list(KINDS),
        key="inspector_kind",
        help="Planner actions (decompose, expand, re-plan, rate, alternatives) are recorded "
        "as runs too, with every candidate plan and its scores.",
    )
    scope = scope_col.radio(
        "Runs of",
        SCOPES,
        index=0 if session.run_ids else 1,
        key="inspector_scope",
        help=f"This session: {session.name} (its own runs and runs saved with it).",
    )
    base = (
        RunFilter(session_id=session.id, run_ids=tuple(session.run_ids), kinds=KINDS[kind])
        if scope == SCOPES[0]
        else RunFilter(kinds=KINDS[kind])
    )
    models = queries.models(base)
    _keep_valid("inspector_models", models)
    statuses = status_col.multiselect("Status", RUN_STATUSES, key="inspector_status")
    chosen_models = model_col.multiselect(
        "Model", models, key="inspector_models", help="Runs in which any node used the model."
    )
    dates = date_col.date_input(
        "Started between", value=(), key="inspector_dates", help="Both days included."
    )
    since, until = _date_bounds(dates)
    known_tags = sorted({tag for label in labels.values() for tag in label.tags})
    _keep_valid("inspector_tags", known_tags)
    tag_col.multiselect(
        "Tags",
        known_tags,
        key="inspector_tags",
        help="Runs with every chosen tag (name and tag a run under its header below).",
        placeholder="Any tag" if known_tags else "No run is tagged yet",
    )
    return RunFilter(
        session_id=base.session_id,
        run_ids=base.run_ids,
        statuses=tuple(statuses),
        models=tuple(chosen_models),
        since=since,
        until=until,
        kinds=base.kinds,
    )


def _runs_table(runs: pd.DataFrame) -> list[str]:
    """The runs as a table; returns the run ids the analyst selected in it."""
    table = inspector_tables.runs_frame(runs, labels)
    # A table over other rows gets another key: a selection never points at the wrong run.
    key = "inspector_runs_" + hashlib.md5("\n".join(runs["run_id"]).encode()).hexdigest()[:12]
    event = st.dataframe(
        table,
        key=key,
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(table), 360),
        placeholder="",  # a missing value is an empty cell, never the word "None"
        column_config={
            "Name": st.column_config.TextColumn(width="medium"),
            "Started": st.column_config.TextColumn(
                help="The server's local time (where Arbor runs)."
            ),
            "Cost ($)": st.column_config.NumberColumn(format="%.6f"),
            "Duration (s)": st.column_config.NumberColumn(format="%.2f"),
            "Source": st.column_config.TextColumn(
                help="Imported runs came from a session file: read-only, never replayed."
            ),
            **{
                column: st.column_config.TextColumn(width="large")
                for column in inspector_tables.RUN_LONG_TEXT
            },
        },
    )
    rows = event.selection.rows if event is not None else []
    return [runs.iloc[i]["run_id"] for i in rows if 0 <= i < len(runs)]


def _follow_table_selection(picked: list[str]) -> None:
    """A new selection in the table drives the run boxes: one row inspects it, two compare
    the second (the baseline, A) with the first (B)."""
    if picked == st.session_state.get(PICKED_KEY, []):
        return
    st.session_state[PICKED_KEY] = picked
    if picked:
        st.session_state["inspect_run"] = picked[0]
    if len(picked) >= 2:
        st.session_state["compare_run"] = picked[1]
        st.session_state["inspector_view"] = "Compare"


def _save_label(run_id: str) -> None:
    """Store the name and tags typed for ``run_id`` (a callback: runs before the widgets)."""
    name = st.session_state.get(f"run_name_{run_id}", "")
    tags = st.session_state.get(f"run_tags_{run_id}", "").split(",")
    try:
        saved = ws.traces.label_run(run_id, name=name, tags=tags)
    except ArborError as exc:
        st.session_state[LABEL_FLASH_KEY] = ("error", f"Name and tags not saved: {exc}")
        return
    # Show the stored (cleaned) tags back in the box.
    st.session_state[f"run_tags_{run_id}"] = ", ".join(saved.tags)
    st.session_state[LABEL_FLASH_KEY] = (
        "success",
        f"Saved: {saved.name or 'no name'}; tags {', '.join(saved.tags) or 'none'}.",
    )


def _label_editor(run_id: str) -> None:
    """Name and tag the run, as Langfuse and Phoenix let one do with traces."""
    label = labels.get(run_id, RunLabel())
    flash = st.session_state.pop(LABEL_FLASH_KEY, None)
    if flash is not None and flash[0] == "error":
        st.error(flash[1])
    elif flash is not None:
        st.toast(flash[1], icon=":material/check_circle:")
    title = f"Name and tags: {label.name or 'unnamed'}" + (
        f" · {', '.join(label.tags)}" if label.tags else ""
    )
    # Seeded once per run, not passed as value=: the Save callback writes the cleaned tags back.
    st.session_state.setdefault(f"run_name_{run_id}", label.name)
    st.session_state.setdefault(f"run_tags_{run_id}", ", ".join(label.tags))
    with st.expander(title, expanded=False):
        name_col, tags_col, save_col = st.columns([3, 3, 1], vertical_alignment="bottom")
        name_col.text_input(
            "Run name",
            key=f"run_name_{run_id}",
            max_chars=120,
            placeholder="e.g. baseline, sc5 with the larger model",
        )
        tags_col.text_input(
            "Tags (comma-separated)",
            key=f"run_tags_{run_id}",
            placeholder="e.g. baseline, prompt-v2",
            help="Lower-case; spaces become '-'. Filter the runs by tag above.",
        )
        save_col.button(
            "Save", key="save_run_label", on_click=_save_label, args=(run_id,), type="primary"
        )


def _run_header(row: pd.Series) -> None:
    tokens = int((row["input_tokens"] or 0) + (row["output_tokens"] or 0))
    st.caption(
        f"**{row['status']}** · {row['nodes']} nodes ({row['nodes_failed']} failed) · "
        f"{row['calls']} calls · {tokens:,} tokens · {_money(row['cost_usd'])} · "
        f"{_seconds(row['duration_s'])} · models: {row['models'] or '—'} · run `{row['run_id']}`"
    )
    _label_editor(row["run_id"])
    if _is_imported(row["origin"]):
        st.info(f"This run is {IMPORTED}: {row['origin']}. Its calls are shown, never replayed.")
    if row["status"] == "running":
        st.caption("Still running: this is what has been recorded so far (press Refresh).")
    if row["status"] == "suspect" and _present(row["stop_reason"]):
        st.warning(
            f"Finished with an answer, but {row['stop_reason']}. Read those outputs with care.",
            icon=":material/warning:",
        )
    elif _present(row["stop_reason"]):
        st.caption(f"Stop reason: {row['stop_reason']}")
    if row.get("kind", "execution") != "execution":
        _planner_view(row)


def _planner_view(row: pd.Series) -> None:
    """A planner action: what it produced and every candidate plan with its scores."""
    st.markdown(f"**Planner action: {row['kind']}** · {row['task']}")
    record = queries.run(row["run_id"])
    if _present(record.get("answer")):
        st.text(record["answer"])
    table = queries.planner_candidates(row["run_id"])
    if table.empty:
        st.caption("No planner calls were recorded.")
        return
    candidates = table[table["role"] == "candidate"]
    if not candidates.empty:
        chosen = candidates[candidates["chosen"]]
        st.caption(
            f"{len(candidates)} candidate(s); chosen: "
            + (
                ", ".join(
                    f"#{n} {s}" for n, s in zip(chosen["candidate"], chosen["source"], strict=True)
                )
                or "none"
            )
        )
    st.dataframe(
        table,
        key=f"planner_candidates_{row['run_id']}",
        hide_index=True,
        width="stretch",
        column_config={"output": st.column_config.TextColumn(width="large")},
    )


# -- views of one run --------------------------------------------------------------------------
def _timeline_view(run_id: str) -> None:
    spans = queries.timeline(run_id)
    if spans.empty:
        st.info("Nothing of this run has been recorded with a start time yet.")
        return
    colour_by = st.radio(
        "Colour by", inspector_charts.COLOUR_BY, key="timeline_colour", horizontal=True
    )
    st.altair_chart(inspector_charts.timeline_chart(spans, colour_by), width="stretch")
    calls = spans[spans["span_kind"] == "call"]
    lanes = spans["node_id"].nunique()
    length = spans["end_s"].max()
    st.caption(
        f"{lanes} nodes and {len(calls)} model calls over {_seconds(length)}. Outline: the "
        "node's span (red when it failed); filled bars: its model calls. Hover for details."
    )
    flame_graph.render_flame_graph(ws, run_id)  # the annotations helper's flame graph


def _cost_view(run_id: str) -> None:
    costs = queries.node_costs(run_id)
    if costs.empty:
        st.info("No node of this run has been recorded yet.")
        return
    # Each run opens on its own default (tokens when it cost nothing); a choice then sticks.
    if st.session_state.get("cost_measure_run") != run_id:
        st.session_state["cost_measure_run"] = run_id
        st.session_state["cost_measure"] = inspector_charts.default_cost_measure(costs)
    measure = st.radio(
        "Bars show",
        ["cost_usd", "tokens"],
        format_func={"cost_usd": "cost ($)", "tokens": "tokens"}.__getitem__,
        key="cost_measure",
        horizontal=True,
    )
    st.altair_chart(inspector_charts.node_cost_chart(costs, measure), width="stretch")
    ordered = costs.sort_values(["cost_usd", "tokens"], ascending=False, na_position="last")
    st.dataframe(
        inspector_tables.human_columns(ordered, inspector_tables.NODE_COST_COLUMNS),
        key="node_costs_table",
        hide_index=True,
        width="stretch",
        placeholder="",
        column_config={
            "Cost ($)": st.column_config.NumberColumn(format="%.6f"),
            "Latency (s)": st.column_config.NumberColumn(format="%.2f"),
            "Call latency (s)": st.column_config.NumberColumn(
                format="%.2f",
                help="Summed over the node's calls: more than its latency when they overlapped.",
            ),
            "Agreement": st.column_config.NumberColumn(format="percent"),
        },
    )
    st.caption(
        f"Total: {int(costs['tokens'].fillna(0).sum()):,} tokens, "
        f"{_money(costs['cost_usd'].fillna(0).sum())}, {int(costs['calls'].sum())} calls."
    )


def _node_view(run_id: str) -> None:
    costs = queries.node_costs(run_id)
    if costs.empty:
        st.info("No node of this run has been recorded yet.")
        return
    labels = {
        row.node_id: f"{row.node_id} · {row.title} · {row.status}" for row in costs.itertuples()
    }
    # Labels carry each node's status, which differs between runs: a choice_box keeps the
    # choice when they change (a plain selectbox got the old label back and lost the click).
    node_id = choice_box("Node", list(labels), format_func=labels.__getitem__, key="inspect_node")
    detail = queries.node_detail(run_id, node_id)
    node = detail.node
    strategy = node.get("strategy") if _present(node.get("strategy")) else "single call"
    st.markdown(
        f"**{node.get('title') or node_id}** · `{node_id}` · status **{node['status']}** · "
        f"strategy {strategy} · model `{node.get('model') or '—'}`"
    )
    facts = [
        f"{int(node.get('input_tokens') or 0):,} tokens in, "
        f"{int(node.get('output_tokens') or 0):,} out",
        _money(node.get("cost_usd")),
    ]
    started, finished = node.get("started_at"), node.get("finished_at")
    if _present(started) and _present(finished):
        facts.append(f"latency {(finished - started).total_seconds():.2f} s")
    if _present(node.get("samples")):
        facts.append(f"{int(node['samples'])} samples")
    if _present(node.get("agreement")):
        facts.append(f"agreement {float(node['agreement']):.0%}")
    st.caption(" · ".join(facts))
    if _present(node.get("error")):
        st.error(f"Node {node_id} {node['status']}: {node['error']}")
    if _present(node.get("suspect")):
        st.warning(f"Suspect output: {node['suspect']}", icon=":material/warning:")
    if _present(node.get("note")):
        st.caption(f"Note: {node['note']}")
    if _present(node.get("reused_from")):
        st.caption(f"Reused from run {node['reused_from']}: no model was called.")
    st.markdown("**Output**")
    st.code(node.get("output") or "(no output)", language="text", wrap_lines=True)
    annotation_panel(ws, run_id, node_id)  # label the output good/bad (annotations helper)

    calls = detail.calls
    if not detail.votes.empty:
        st.markdown("**Votes**")
        st.dataframe(
            detail.votes, key="node_votes", hide_index=True, width="stretch", placeholder=""
        )
    if calls.empty:
        st.caption("No model call was recorded for this node.")
        return
    st.markdown(f"**Model calls ({len(calls)})**")
    summary = calls.drop(columns=["prompt", "output", "error", "started_at", "finished_at"])
    st.dataframe(
        inspector_tables.human_columns(summary, inspector_tables.CALL_COLUMNS),
        key="node_calls",
        hide_index=True,
        width="stretch",
        placeholder="",
        column_config={
            "Cost ($)": st.column_config.NumberColumn(format="%.6f"),
            "Latency (s)": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    samples = int(calls["sample_index"].max()) + 1 if calls["sample_index"].notna().any() else 1
    from app.ui.playground import call_playground  # issue 14: variants of a recorded call

    for i, call in enumerate(calls.itertuples()):
        _call_block(i, call, detail.messages(i), samples)
        call_playground(ws, run_id, str(call.call_id), node_id)


def _call_block(i: int, call: Any, messages: list[dict[str, str]], samples: int) -> None:
    title = f"Call {i + 1} · {call.role}"
    if call.role != "answer" and _present(call.sample_index):
        title += f" · sample {int(call.sample_index) + 1} of {samples}"
    if _present(call.selected) and bool(call.selected):
        title += " · selected"
    facts = [f"`{call.model}`", call.status]
    facts.append(f"{int(call.input_tokens or 0)} in / {int(call.output_tokens or 0)} out tokens")
    facts.append(_seconds(call.latency_s))
    if _present(call.score):
        facts.append(f"score {float(call.score):.3g}")
    if _present(call.vote):
        facts.append(f"vote {call.vote!r}")
    if _present(call.finish_reason):
        facts.append(f"finish: {call.finish_reason}")
    if _present(call.reused_from):
        facts.append(f"replayed from run {call.reused_from}")
    with st.container(border=True):
        st.markdown(f"**{title}**")
        st.caption(" · ".join(str(fact) for fact in facts))
        if _present(call.error):
            st.error(f"Call error: {call.error}")
        with st.expander(f"Prompt ({len(messages)} message{'s' if len(messages) != 1 else ''})"):
            for message in messages:
                with st.chat_message(message["role"] or "user"):
                    st.text(message["content"])
        st.code(call.output or "(no output)", language="text", wrap_lines=True)


def _compare_view(run_id: str, runs: pd.DataFrame, labels: dict[str, str]) -> None:
    others = [other for other in runs["run_id"] if other != run_id]
    if not others:
        st.info("Only one run is listed: widen the scope or the filters to compare two.")
        return
    position = runs["run_id"].tolist().index(run_id)
    older = runs["run_id"].iloc[position + 1] if position + 1 < len(runs) else others[0]
    _keep_valid("compare_run", others, older)
    baseline = st.selectbox(
        "Compare with (run A, the baseline)",
        others,
        format_func=labels.__getitem__,
        key="compare_run",
        help="Deltas are B − A, B being the run inspected above.",
    )
    comparison = queries.compare(baseline, run_id)
    st.markdown(f"**A:** {labels[baseline]}  \n**B:** {labels[run_id]}")

    st.markdown("**Plan**")
    diff = comparison.plan_diff
    if comparison.plan_diff_problem:
        st.warning(f"The plans were not compared: {comparison.plan_diff_problem}.")
    elif diff is not None:
        st.markdown(f"Plan changes: {diff.summary()}")
        if diff.added:
            st.markdown("Added in B: " + ", ".join(f"`{node}`" for node in diff.added))
        if diff.removed:
            st.markdown("Removed in B: " + ", ".join(f"`{node}`" for node in diff.removed))
        for node, fields in diff.changed.items():
            st.markdown(f"Changed `{node}`: {', '.join(fields)}")

    st.markdown("**Totals** (B − A)")
    st.dataframe(
        comparison.totals,
        key="compare_totals",
        placeholder="",  # an empty cell, not "None"
        hide_index=True,
        width="stretch",
        column_config={"change": st.column_config.NumberColumn(format="percent")},
    )
    for note in comparison.notes:
        st.caption(note)
    nodes = comparison.nodes
    st.markdown("**Per node**")
    _annotated_line(nodes)
    # the labels next to the node, not past the right edge where the grid draws nothing yet
    leading = [c for c in ("node_id", "title", "annotations_a", "annotations_b") if c in nodes]
    nodes = nodes[[*leading, *(c for c in nodes.columns if c not in leading)]]
    st.dataframe(
        nodes.drop(columns=["output_a", "output_b"]),
        key="compare_nodes",
        placeholder="",  # an empty cell, not "None"
        hide_index=True,
        width="stretch",
        column_config={
            "cost_a": st.column_config.NumberColumn(format="%.6f"),
            "cost_b": st.column_config.NumberColumn(format="%.6f"),
            "cost_delta": st.column_config.NumberColumn(format="%.6f"),
            "latency_a": st.column_config.NumberColumn(format="%.2f"),
            "latency_b": st.column_config.NumberColumn(format="%.2f"),
            "latency_delta": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    differing = nodes[~nodes["same_output"].astype(bool)] if not nodes.empty else nodes
    if differing.empty:
        st.success("Every node has the same output in both runs.")
        return
    titles = {row.node_id: f"{row.node_id} · {row.title}" for row in differing.itertuples()}
    _keep_valid("compare_node", list(titles))
    node_id = st.selectbox(
        "Output diff of node", list(titles), format_func=titles.__getitem__, key="compare_node"
    )
    row = differing.set_index("node_id").loc[node_id]
    outputs = [row[side] if _present(row[side]) else None for side in ("output_a", "output_b")]
    text = output_diff(*outputs, names=(f"A {baseline}", f"B {run_id}"))
    if text:
        st.code(text, language="diff")
    else:
        st.caption("One run has no output for this node and the other an empty one.")


def _annotated_line(nodes: pd.DataFrame) -> None:
    """One line naming the nodes labelled in either run, with each run's badge."""
    if nodes.empty or "annotations_a" not in nodes:
        return
    labelled = nodes[(nodes["annotations_a"] != "") | (nodes["annotations_b"] != "")]
    if labelled.empty:
        return
    parts = [
        f"`{row.node_id}` A {row.annotations_a or '–'} · B {row.annotations_b or '–'}"
        for row in labelled.itertuples()
    ]
    st.markdown("Annotated: " + "; ".join(parts))


def _export_view(run_id: str) -> None:
    try:
        from storage.trace_export import (
            EXPORT_FORMATS,
            ExportFormat,
            export_filename,
            export_run_bytes,
        )
    except ImportError:
        st.warning("Exports are not available: this build has no storage/trace_export.py.")
        return
    formats = choices.ordered(ExportFormat, EXPORT_LABELS)
    columns = st.columns(len(formats))
    for column, fmt in zip(columns, formats, strict=True):
        label, key = EXPORT_LABELS.get(fmt, fmt), f"export_{fmt}"
        try:
            data = export_run_bytes(ws.traces, run_id, fmt)
        except ArborError as exc:
            column.error(f"{label} export failed: {exc}")
            continue
        column.download_button(
            f"{label} ({len(data) / 1024:,.1f} KB)",
            data,
            file_name=export_filename(run_id, fmt),
            mime=EXPORT_FORMATS[fmt][1],
            key=key,
            on_click="ignore",
        )
    st.caption(
        "OTLP JSON loads into any OpenTelemetry backend (Jaeger, Tempo, Phoenix); Parquet and "
        "CSV hold the run's spans, one row each, with the columns of the `spans` view."
    )


# -- views of many runs ------------------------------------------------------------------------
def _trends_view(run_filter: RunFilter) -> None:
    trends = queries.trends(run_filter)
    if trends.empty:
        st.info("No run matches the scope and filters.")
        return
    st.altair_chart(inspector_charts.trends_chart(trends))
    st.caption(f"{len(trends)} runs, oldest first; point colour is the run's status.")


def _load_saved_query() -> None:
    """Fill the editor with the chosen saved query (a callback: runs before the widgets)."""
    title = st.session_state.get("sql_saved")
    try:
        saved = {query.title: query.sql for query in SavedQueries(state.workspace().root).list()}
    except ArborError as exc:
        _flash("error", str(exc))
        return
    if title in saved:
        st.session_state["sql_text"] = saved[title]


def _run_query() -> None:
    sql = st.session_state.get("sql_text", "")
    try:
        result = run_read_only(
            state.workspace().traces, sql, max_rows=SQL_MAX_ROWS, timeout_s=SQL_TIMEOUT_S
        )
    except ArborError as exc:
        st.session_state[SQL_RESULT_KEY] = {"error": str(exc)}
        return
    st.session_state[SQL_RESULT_KEY] = {"result": result}


def _save_query() -> None:
    title = st.session_state.get("sql_title", "").strip()
    try:
        SavedQueries(state.workspace().root).save(title, st.session_state.get("sql_text", ""))
    except ArborError as exc:
        _flash("error", f"Not saved: {exc}")
        return
    st.session_state["sql_saved"] = title
    _flash("success", f"Saved as {title!r}.")


def _delete_query() -> None:
    title = st.session_state.get("sql_saved")
    try:
        SavedQueries(state.workspace().root).delete(title)
    except ArborError as exc:
        _flash("error", f"Not deleted: {exc}")
        return
    st.session_state["sql_saved"] = NEW_QUERY
    _flash("success", f"Deleted {title!r}.")


def _sql_view() -> None:
    for kind, text in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(text)
    try:
        saved = SavedQueries(ws.root).list()
    except ArborError as exc:
        st.error(str(exc))
        saved = SavedQueries.examples()
    kinds = {query.title: query.example for query in saved}
    options = [NEW_QUERY, *kinds]
    _keep_valid("sql_saved", options, NEW_QUERY)
    chosen = st.selectbox(
        "Saved queries",
        options,
        key="sql_saved",
        on_change=_load_saved_query,
        format_func=lambda t: t if t == NEW_QUERY else f"{t} ({SAVED_KIND[kinds[t]]})",
    )
    st.text_area(
        "SQL (one SELECT)",
        key="sql_text",
        height=160,
        placeholder="SELECT gen_ai_request_model, count(*) FROM spans GROUP BY 1",
        help="Tables: runs, node_executions, model_calls; view: spans (one row per run, node, "
        "sample and call, with OpenTelemetry GenAI names). Read-only.",
    )
    run_col, title_col, save_col, delete_col = st.columns([1, 2, 1, 1])
    run_col.button("Run query", key="sql_run", type="primary", on_click=_run_query)
    title_col.text_input(
        "Save as", key="sql_title", label_visibility="collapsed", placeholder="Save as…"
    )
    save_col.button("Save query", key="sql_save", on_click=_save_query)
    if chosen != NEW_QUERY and not kinds.get(chosen, True):
        delete_col.button("Delete saved query", key="sql_delete", on_click=_delete_query)
    st.caption(
        f"One SELECT at a time, at most {SQL_MAX_ROWS:,} rows, stopped after "
        f"{SQL_TIMEOUT_S:g} s; functions that read files or the environment are refused."
    )
    outcome = st.session_state.get(SQL_RESULT_KEY)
    if outcome is None:
        return
    if "error" in outcome:
        st.error(outcome["error"])
        return
    result = outcome["result"]
    st.dataframe(result.frame, key="sql_result_table", hide_index=True, width="stretch")
    st.caption(f"{len(result.frame):,} rows in {result.elapsed_ms:.0f} ms")
    if result.truncated:
        st.warning(f"Only the first {SQL_MAX_ROWS:,} rows are shown; the query returned more.")


# -- the page ----------------------------------------------------------------------------------
st.title("Inspector")
st.caption(
    "Every run, node, sample and model call in the trace store. Select one run in the table to "
    "inspect it, or two to compare them."
)

# One connection for the whole render: opening one costs more than most of these queries.
with queries.held():
    try:
        labels = ws.traces.run_labels()
        run_filter = _run_filter()
        runs = queries.runs(run_filter, limit=RUN_LIMIT)
    except ArborError as exc:
        st.error(f"The trace store cannot be read: {exc}")
        st.stop()
    # Tags filter the listed (newest RUN_LIMIT) runs: labels live in their own table.
    chosen_tags = st.session_state.get("inspector_tags") or []
    runs = inspector_tables.with_tags(runs, labels, chosen_tags)

    filtered = bool(
        run_filter.statuses
        or run_filter.models
        or run_filter.since
        or run_filter.until
        or chosen_tags
    )
    if runs.empty:
        if filtered:
            st.info("No run matches these filters.")
        elif run_filter.session_id is not None:
            st.info(
                f"The session {session.name!r} has no runs yet: run its plan on the Workbench, or "
                "choose All runs."
            )
        else:
            st.info(
                "No runs yet. Run a plan on the Workbench, or import a session file on the "
                "Sessions page; its runs appear here."
            )
    else:
        if len(runs) == RUN_LIMIT:
            st.caption(f"The newest {RUN_LIMIT} runs are listed; narrow the filters to see older.")
        _follow_table_selection(_runs_table(runs))

    run_labels = {row["run_id"]: _run_label(row) for _, row in runs.iterrows()}
    run_id: str | None = None
    if run_labels:
        run_col, refresh_col = st.columns([6, 1])
        _keep_valid("inspect_run", list(run_labels))
        run_id = run_col.selectbox(
            "Run to inspect",
            list(run_labels),
            format_func=run_labels.__getitem__,
            key="inspect_run",
        )
        refresh_col.button("Refresh", key="inspector_refresh", help="Read the store again.")
        _run_header(runs[runs["run_id"] == run_id].iloc[0])

    _keep_valid("inspector_view", VIEWS, VIEWS[0])
    view = st.segmented_control("View", VIEWS, required=True, key="inspector_view")
    try:
        if view == "SQL":
            _sql_view()
        elif view == "Trends":
            _trends_view(run_filter)
        elif run_id is None:
            st.info("Pick a run above to see this view.")
        elif view == "Timeline":
            _timeline_view(run_id)
        elif view == "Cost per node":
            _cost_view(run_id)
        elif view == "Node detail":
            _node_view(run_id)
        elif view == "Compare":
            _compare_view(run_id, runs, run_labels)
        elif view == "Export":
            _export_view(run_id)
    except ArborError as exc:
        st.error(str(exc))
