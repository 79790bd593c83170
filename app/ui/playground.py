"""The playground: a node's (or a recorded call's) prompt with upstream outputs from a chosen
run, edited and run as variants side by side, the winner applied back to the node.

Everything it does goes through ``app.services.playground``; variants run in the background on
``PlaygroundJobs`` (held in ``st.cache_resource``), and a fragment polls the job every second
while it runs, so the streamed text of each variant shows as it comes. Worker threads never
touch Streamlit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import streamlit as st

from app.services import playground as service
from app.ui import compute_panel
from app.ui.widgets import choice_box, field_slider, model_picker
from engine.errors import ArborError, user_message
from engine.models.base import ChatMessage
from engine.plan import GenerationConfig, Plan
from engine.run.playground import Variant, VariantResult, is_hand_edited
from storage.sessions import ArborSession
from storage.workspace import Workspace

#: Variants side by side in the page (the service takes more; the page stays readable).
MAX_PAGE_VARIANTS = 4
#: Records an edit for undo: (label, edit) -> whether it was applied.
ApplyEdit = Callable[[str, Callable[[], Plan]], bool]


@st.cache_resource
def jobs() -> service.PlaygroundJobs:
    """The process-wide runner of playground variants (one playground at a time)."""
    return service.PlaygroundJobs()


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# -- inputs ----------------------------------------------------------------------------------
def _prompt_inputs(rendered: list[ChatMessage], key: str) -> list[ChatMessage]:
    """Editable boxes for the rendered prompt: one per message (a base prompt is one box of
    raw text). A box is keyed by what it was rendered from, so a changed instruction shows the
    new prompt; what the analyst typed stays until then."""
    edited: list[ChatMessage] = []
    for i, message in enumerate(rendered):
        label = (
            "Prompt (raw text the model continues)"
            if len(rendered) == 1
            else f"Message {i + 1} ({message['role']})"
        )
        text = st.text_area(
            label,
            value=message["content"],
            height=220,
            key=f"{key}_msg{i}_{_digest(message['content'])}",
        )
        edited.append(ChatMessage(role=message["role"], content=text))
    return edited


def _variant_inputs(source: service.PlaygroundSource, index: int, key: str) -> Variant | None:
    """One variant's inputs: instruction, prompt, model, temperature, max tokens, seed,
    strategy. None when an input is invalid (the problem is shown)."""
    base = source.base
    vkey = f"{key}_v{index}"
    st.markdown(f"**Variant {index + 1}**")
    try:
        model = model_picker(base.model, key=f"{vkey}_model") or base.model
        generation = base.generation
        temperature = field_slider(
            GenerationConfig,
            "temperature",
            generation.temperature if index == 0 else min(2.0, generation.temperature + 0.5),
            step=0.1,
            key=f"{vkey}_temp",
        )
        max_col, seed_col = st.columns(2)
        max_tokens = max_col.number_input(
            "Max tokens", 1, 8192, value=generation.max_tokens, step=16, key=f"{vkey}_max"
        )
        seed_default = generation.seed if generation.seed is not None else index + 1
        seed = seed_col.number_input("Seed", value=seed_default, step=1, key=f"{vkey}_seed")
        strategy = compute_panel.strategy_inputs(base.strategy, key=f"{vkey}_strategy")
        instruction = None
        if source.in_plan and source.call_id is None:
            node = source.plan.node(source.node_id)
            written = st.text_area(
                "Instruction", value=node.instruction, height=90, key=f"{vkey}_instruction"
            )
            instruction = written if written != node.instruction else None
        variant = Variant(
            model=model,
            generation=generation.model_copy(
                update={
                    "temperature": temperature,
                    "max_tokens": int(max_tokens),
                    "seed": int(seed),
                }
            ),
            strategy=strategy,
            instruction=instruction,
            messages=base.messages,
        )
        with st.expander("Prompt", expanded=index == 0):
            rendered = source.prompt(variant)
            edited = _prompt_inputs(rendered, vkey)
        if is_hand_edited(edited, rendered):
            variant.messages = edited
            st.caption("Prompt edited by hand: applying this variant keeps the other settings.")
        return variant
    except (ArborError, ValueError) as exc:
        st.error(f"Variant {index + 1}: {user_message(exc)}")
        return None


# -- results ---------------------------------------------------------------------------------
def _facts(result: VariantResult) -> str:
    return (
        f"{result.input_tokens:,} tokens in, {result.output_tokens:,} out · "
        f"{result.seconds:.2f} s · ${result.cost_usd:.6f} · {len(result.records)} call(s)"
    )


def _results(snapshot: dict[str, Any], state: dict[str, Any], apply: ApplyEdit | None) -> None:
    """Each variant's streamed or final text in columns side by side, its tokens, seconds and
    cost, and (when finished) the button that applies it to the node."""
    variants: list[Variant] = state["variants"]
    columns = st.columns(len(variants))
    for index, column in enumerate(columns):
        with column:
            result: VariantResult | None = snapshot["results"].get(index)
            st.markdown(f"**Variant {index + 1}** · {variants[index].describe()}")
            if result is None:
                text = snapshot["texts"].get(index, "")
                waiting = "streaming…" if text else "waiting…"
                st.caption(waiting if not snapshot["finished"] else "not run")
                st.code(text or " ", language="text", wrap_lines=True)
                continue
            st.code(result.output or "(no output)", language="text", wrap_lines=True)
            st.caption(_facts(result))
            if result.error:
                st.error(f"Variant {index + 1}: {result.error}")
            if result.suspect:
                st.warning(f"Suspect output: {result.suspect}", icon=":material/warning:")
            if apply is not None and result.ok and snapshot["finished"]:
                _apply_button(state, snapshot["job_id"], result, apply)
    if snapshot["finished"]:
        if snapshot["error"]:
            st.error(f"Playground failed: {snapshot['error']}")
        elif snapshot["run_id"]:
            st.caption(
                f"Recorded as run `{snapshot['run_id']}` (kind playground) in the trace store."
            )
        elif snapshot["record_problem"]:
            st.warning(f"Not recorded: {snapshot['record_problem']}")


def _apply_button(
    state: dict[str, Any], job_id: str, result: VariantResult, apply: ApplyEdit
) -> None:
    index = result.index
    if not st.button(
        f"Apply variant {index + 1} to the node", key=f"{state['key']}_apply_{job_id}_{index}"
    ):
        return
    source: service.PlaygroundSource = state["source"]
    current: Plan = state["plan"]()
    variant = result.variant

    def edit() -> Plan:
        return service.apply_variant(source, variant, current)

    if apply(f"playground variant {index + 1} on {source.node_id}", edit):
        state["applied"] = index
    st.rerun(scope="app")


@st.fragment(run_every=1.0)
def _live(key: str, apply: ApplyEdit | None) -> None:
    state = st.session_state.get(f"{key}_state")
    job = jobs().get(state["job_id"]) if state else None
    if job is None or state is None:
        return
    snapshot = job.snapshot()
    if st.button("Cancel variants", key=f"{key}_cancel"):
        job.cancel.set()
    _results(snapshot, state, apply)
    if snapshot["finished"]:
        st.rerun(scope="app")  # leave polling and draw the final state


# -- the panel -------------------------------------------------------------------------------
def panel(
    ws: Workspace,
    source: service.PlaygroundSource,
    apply: ApplyEdit | None,
    plan: Callable[[], Plan],
    *,
    key: str,
    session_id: str | None = None,
) -> None:
    """The playground for ``source``: inputs per variant, Run variants, results side by side."""
    facts = [f"upstream outputs from run `{source.run_id}` (nothing upstream runs again)"]
    if source.missing:
        facts.append(f"no recorded output for {', '.join(source.missing)}")
    if source.call_id:
        facts.append(f"prompt of call `{source.call_id[:12]}`")
    st.caption(" · ".join(facts))
    if source.recorded_output is not None:
        with st.expander("Output recorded in that run"):
            st.code(source.recorded_output or "(empty)", language="text", wrap_lines=True)
    count = int(
        st.number_input(
            "Variants",
            1,
            MAX_PAGE_VARIANTS,
            value=2,
            key=f"{key}_count",
            help="Each variant has its own model, settings, strategy and prompt.",
        )
    )
    columns = st.columns(count)
    variants: list[Variant | None] = []
    for index, column in enumerate(columns):
        with column:
            variants.append(_variant_inputs(source, index, key))
    state = st.session_state.get(f"{key}_state")
    job = jobs().get(state["job_id"]) if state else None
    running = job is not None and not job.done
    ready = [v for v in variants if v is not None]
    if st.button(
        "Run variants",
        key=f"{key}_run",
        type="primary",
        disabled=running or len(ready) != len(variants),
    ):
        job = jobs().start(ws, source, ready, session_id=session_id)
        state = {"job_id": job.job_id, "variants": ready, "source": source, "key": key}
        st.session_state[f"{key}_state"] = state
        running = True
    if state is None or job is None:
        return
    state["plan"] = plan
    if running:
        _live(key, apply)
    else:
        _results(job.snapshot(), state, apply)


def _session_runs(ws: Workspace, session: ArborSession) -> list[str]:
    """The session's plan runs, newest first (the workbench's current run first)."""
    runs = [row["run_id"] for row in ws.traces.runs(session.id, kinds=("execution",), detect=False)]
    listed = [run for run in reversed(session.run_ids) if run not in runs]
    current = st.session_state.get("run_id")
    ordered = [current] if current in runs or current in listed else []
    return list(dict.fromkeys([*ordered, *runs, *listed]))


def playground_panel(
    ws: Workspace,
    session: ArborSession,
    run_id: str,
    node_id: str,
    apply_edit: ApplyEdit | None,
) -> None:
    """The playground for ``node_id`` of the session's plan, upstream outputs from ``run_id``."""
    plan = session.plan
    try:
        source = service.open_node(ws, run_id, node_id, plan=plan, session_id=session.id)
    except ArborError as exc:
        st.info(f"No playground for {node_id}: {user_message(exc)}")
        return

    def current() -> Plan:
        return session.plan or source.plan

    panel(ws, source, apply_edit, current, key=f"pg_{node_id}", session_id=session.id)


def workbench_playground(
    ws: Workspace, session: ArborSession, node_id: str, apply_edit: ApplyEdit
) -> None:
    """The workbench's "Playground" expander for the selected node, when the session has a run
    to take upstream outputs from (the run is chosen; the latest by default)."""
    try:
        runs = _session_runs(ws, session)
    except ArborError:
        return
    if session.plan is None or not runs:
        return
    with st.expander("Playground", expanded=False):
        run_id = choice_box("Upstream outputs from run", runs, key="pg_run")
        playground_panel(ws, session, run_id, node_id, apply_edit)


def call_playground(ws: Workspace, run_id: str, call_id: str, node_id: str) -> None:
    """A model call's playground in the Inspector: opened by a button, one call at a time. A
    variant can be applied to the node of the same id in the workbench's current plan."""
    chosen = st.session_state.get("pg_call")
    if chosen != (run_id, call_id):
        if st.button("Open in playground", key=f"pg_open_{call_id}"):
            st.session_state["pg_call"] = (run_id, call_id)
            st.rerun()
        return
    from app.ui import plan_panel, state  # deferred: the workbench's undo history

    session = state.current_session()
    plan = session.plan
    try:
        source = service.open_call(ws, run_id, call_id, plan=None, session_id=session.id)
    except ArborError as exc:
        st.error(f"No playground for this call: {user_message(exc)}")
        return
    apply: ApplyEdit | None = None
    if plan is not None and source.in_plan and node_id in plan.nodes():

        def apply(label: str, edit: Callable[[], Plan]) -> bool:
            return plan_panel.apply_edit(session, label, edit)

    else:
        st.caption(
            "Applying a variant needs the node in the workbench's plan; open the run's session "
            "there to apply one."
        )

    def current() -> Plan:
        return session.plan or source.plan

    with st.container(border=True):
        st.markdown("**Playground**")
        if st.button("Close playground", key=f"pg_close_{call_id}"):
            st.session_state.pop("pg_call", None)
            st.rerun()
        panel(ws, source, apply, current, key=f"pgc_{call_id[:12]}", session_id=session.id)


__all__ = ["call_playground", "jobs", "panel", "playground_panel", "workbench_playground"]
