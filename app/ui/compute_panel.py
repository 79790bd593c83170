"""Test-time compute in the workbench: strategies, caps, the allocation table, the live meter
and the samples of a run grouped under their nodes.

Widgets are built from the pydantic fields' bounds (``engine.plan.compute_config``), so the UI and
the engine agree on what is allowed; everything here only reads state and calls the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from app.services import choices, run_preview
from app.ui.widgets import field_bounds, field_slider, model_picker
from engine.checks import check_selector
from engine.errors import ArborError
from engine.plan import Plan
from engine.plan.compute_config import (
    STRATEGY_LABELS,
    AllocationPolicy,
    DecaySchedule,
    NodeBudget,
    PolicyKind,
    SelectorConfig,
    SelectorKind,
    StrategyConfig,
    StrategyKind,
    VoteOn,
)
from engine.run.allocation import allocate
from engine.run.budget import RunCaps
from storage.workspace import Workspace

SELECTOR_LABELS = {
    "judge": "LLM judge",
    "regex": "regex check",
    "json_schema": "JSON schema check",
    "expression": "expression check",
}
POLICY_LABELS = {
    "uniform": "uniform",
    "difficulty": "by difficulty (Plan-and-Budget)",
    "fast_deliberate": "fast / deliberate by difficulty (SCALE)",
}


#: What a strategy starts with when it is chosen (a single call keeps ``samples=1``, which is
#: no start for a vote whose minimum is 3).
KIND_DEFAULTS: dict[str, dict[str, int]] = {
    "self_consistency": {"samples": 5, "min_samples": 3},
    "best_of_n": {"samples": 4},
    "self_refine": {"refine_rounds": 2},
}


def strategy_inputs(current: StrategyConfig, *, key: str) -> StrategyConfig:
    """Inputs for one strategy; returns the edited copy (validation errors raise)."""
    kinds = choices.ordered(StrategyKind, STRATEGY_LABELS)
    kind = st.selectbox(
        "Strategy",
        kinds,
        index=kinds.index(current.kind),
        format_func=choices.label_of(STRATEGY_LABELS),
        key=f"{key}_kind",
    )
    if kind != current.kind:  # a newly chosen strategy starts from its own defaults
        current = current.model_copy(update=KIND_DEFAULTS.get(kind, {}))
    values: dict[str, Any] = {"kind": kind}
    if kind in ("best_of_n", "self_consistency"):
        # Keyed by the strategy, so switching strategy shows that strategy's default count.
        values["samples"] = field_slider(
            StrategyConfig,
            "samples",
            current.samples,
            key=f"{key}_{kind}_samples",
            step=1,
            label="Samples per node",
        )
        values["temperature"] = field_slider(
            StrategyConfig,
            "temperature",
            current.temperature if current.temperature is not None else 0.8,
            key=f"{key}_temp",
            step=0.1,
            label="Sample temperature",
        )
    if kind == "best_of_n":
        values["selector"] = selector_inputs(current.selector, key=f"{key}_sel")
    if kind == "self_consistency":
        votes = list(choices.values(VoteOn))
        values["vote_on"] = st.selectbox(
            "Vote on",
            votes,
            index=votes.index(current.vote_on),
            help=StrategyConfig.model_fields["vote_on"].description,
            key=f"{key}_vote",
        )
        values["early_stop"] = st.checkbox(
            "Stop early once the vote is settled", value=current.early_stop, key=f"{key}_early"
        )
        values["min_samples"] = field_slider(
            StrategyConfig,
            "min_samples",
            min(current.min_samples, values["samples"]),
            key=f"{key}_min",
            step=1,
            label="Samples before stopping early",
        )
        values["confidence"] = field_slider(
            StrategyConfig, "confidence", current.confidence, key=f"{key}_conf", step=0.01
        )
    if kind == "self_refine":
        values["refine_rounds"] = field_slider(
            StrategyConfig,
            "refine_rounds",
            current.refine_rounds,
            key=f"{key}_rounds",
            step=1,
            label="Refine rounds",
        )
    merged = {**current.model_dump(), **values}
    if kind == "single":
        merged["samples"] = 1
    return StrategyConfig.model_validate(merged)


def selector_inputs(current: SelectorConfig, *, key: str) -> SelectorConfig:
    kinds = choices.ordered(SelectorKind, SELECTOR_LABELS)
    kind = st.selectbox(
        "Selector",
        kinds,
        index=kinds.index(current.kind),
        format_func=choices.label_of(SELECTOR_LABELS),
        key=f"{key}_kind",
    )
    values: dict[str, Any] = {"kind": kind}
    if kind == "judge":
        values["judge_model"] = model_picker(
            current.judge_model, key=f"{key}_judge", allow_inherit=True
        )
    elif kind == "regex":
        values["pattern"] = st.text_input(
            "Pattern a good sample contains", value=current.pattern or "", key=f"{key}_re"
        )
    elif kind == "json_schema":
        values["json_schema"] = st.text_area(
            "JSON schema a good sample matches",
            value=current.json_schema or '{"type": "object"}',
            key=f"{key}_schema",
        )
    else:
        values["expression"] = st.text_input(
            "Expression (higher is better)",
            value=current.expression or "number is not None and length < 200",
            help="Names: output, length, words, lines, number; functions: len, lower, upper, "
            "contains, matches, startswith, endswith, abs, min, max, round.",
            key=f"{key}_expr",
        )
    selector = SelectorConfig.model_validate({**current.model_dump(), **values})
    check_selector(selector)
    return selector


def node_compute_form(
    plan: Plan, selected: str, apply: Callable[[str, Callable[[], Plan]], bool]
) -> None:
    """Strategy and manual caps of the selected node (None = the policy decides)."""
    from engine.plan import editing

    node = plan.node(selected)
    with st.expander(f"Test-time compute of `{selected}`", expanded=False):
        own = st.checkbox(
            "Own strategy (otherwise the allocation policy decides)",
            value=node.strategy is not None,
            key=f"own_strategy_{selected}",
        )
        strategy = None
        problem = None
        if own:
            try:
                strategy = strategy_inputs(
                    node.strategy or plan.default_strategy, key=f"node_strategy_{selected}"
                )
            except (ArborError, ValueError) as exc:
                problem = str(exc)
                st.error(problem)
        cap_col, money_col = st.columns(2)
        budget = node.budget or NodeBudget()
        tokens = cap_col.number_input(
            "Token cap (0 = none)",
            min_value=0,
            max_value=1_000_000,
            value=budget.tokens or 0,
            step=50,
            key=f"node_cap_{selected}",
            help=NodeBudget.model_fields["tokens"].description,
        )
        dollars = money_col.number_input(
            "Cost cap, USD (0 = none)",
            min_value=0.0,
            max_value=1000.0,
            value=budget.cost_usd or 0.0,
            step=0.01,
            format="%.4f",
            key=f"node_money_{selected}",
        )
        if st.button(
            "Apply compute settings", key=f"apply_compute_{selected}", disabled=bool(problem)
        ):
            new_budget = None
            if tokens or dollars:
                new_budget = NodeBudget(tokens=tokens or None, cost_usd=dollars or None)
            if apply(
                f"compute settings of {selected}",
                lambda: editing.update_node(plan, selected, strategy=strategy, budget=new_budget),
            ):
                st.rerun()


#: Session-state keys of the caps inputs (the sidebar's); the suggested-caps and continue
#: buttons set them in their callbacks, before the inputs are drawn again.
CAP_KEYS = {
    "total_tokens": "cap_total",
    "max_tokens_per_node": "cap_node",
    "max_parallel": "cap_parallel",
    "total_cost_usd": "cap_money",
    "wall_time_s": "cap_time",
}


def caps_inputs(current: RunCaps) -> RunCaps:
    """The run's global caps: tokens, money, wall time (and the per-node output limit).

    Number inputs with their units: a slider over 100-200,000 tokens cannot be set to 3,000.
    """
    low, high = field_bounds(RunCaps, "total_tokens")
    total = st.number_input(
        "Total tokens (tokens)",
        min_value=low,
        max_value=high,
        value=min(max(current.total_tokens, low), high),
        step=500,
        help=str(RunCaps.model_fields["total_tokens"].description),
        key=CAP_KEYS["total_tokens"],
    )
    low, high = field_bounds(RunCaps, "max_tokens_per_node")
    per_node = st.number_input(
        "Output limit per call (tokens)",
        min_value=low,
        max_value=high,
        value=min(max(current.max_tokens_per_node, low), high),
        step=64,
        help=str(RunCaps.model_fields["max_tokens_per_node"].description),
        key=CAP_KEYS["max_tokens_per_node"],
    )
    parallel = field_slider(
        RunCaps,
        "max_parallel",
        current.max_parallel,
        step=1,
        key=CAP_KEYS["max_parallel"],
        label="Nodes at once",
    )
    money_on = st.checkbox(
        "Cap money", value=current.total_cost_usd is not None, key="cap_money_on"
    )
    money = None
    if money_on:
        money = float(
            st.number_input(
                "Money cap (US$)",
                min_value=0.0,
                max_value=10_000.0,
                value=float(current.total_cost_usd if current.total_cost_usd is not None else 0.10),
                step=0.05,
                format="%.2f",
                help=RunCaps.model_fields["total_cost_usd"].description,
                key=CAP_KEYS["total_cost_usd"],
            )
        )
    time_on = st.checkbox("Cap wall time", value=current.wall_time_s is not None, key="cap_time_on")
    wall = None
    if time_on:
        wall = float(
            st.number_input(
                "Time cap (seconds)",
                min_value=1.0,
                max_value=86_400.0,
                value=float(current.wall_time_s if current.wall_time_s is not None else 120.0),
                step=30.0,
                format="%g",
                help=RunCaps.model_fields["wall_time_s"].description,
                key=CAP_KEYS["wall_time_s"],
            )
        )
    return RunCaps(
        total_tokens=int(total),
        max_tokens_per_node=int(per_node),
        max_parallel=parallel,
        total_cost_usd=money,
        wall_time_s=wall,
    )


def _set_caps(session: Any, caps: RunCaps) -> None:
    """Callback: make ``caps`` the session's and the sidebar inputs' values."""
    session.caps = caps
    st.session_state[CAP_KEYS["total_tokens"]] = caps.total_tokens
    st.session_state[CAP_KEYS["max_tokens_per_node"]] = caps.max_tokens_per_node
    st.session_state["cap_money_on"] = caps.total_cost_usd is not None
    if caps.total_cost_usd is not None:
        st.session_state[CAP_KEYS["total_cost_usd"]] = caps.total_cost_usd
    st.session_state["cap_time_on"] = caps.wall_time_s is not None
    if caps.wall_time_s is not None:
        st.session_state[CAP_KEYS["wall_time_s"]] = caps.wall_time_s


def reachability_warning(plan: Plan, caps: RunCaps, ws: Workspace, session: Any) -> None:
    """Right above the Run button: whether these caps can reach the answer, and a button that
    applies the least caps that would."""
    try:
        preview = run_preview.preview_run(plan, caps, ws)
    except ArborError:
        return  # the allocation panel above shows why the plan cannot be allocated
    check = preview.reachability
    reasons = [finding.reason for finding in check.problems]
    if check.verdict == "reachable":
        detail = f"about {check.needed_tokens:,} tokens needed at most"
        if check.expected_seconds is not None:
            detail += f", about {check.expected_seconds:,.0f} s expected from recorded runs"
        st.caption(f"These caps can reach the answer ({detail}).")
        return
    text = check.headline() + "\n" + "\n".join(f"- {reason}" for reason in reasons)
    (st.error if check.verdict == "cannot_reach" else st.warning)(text, icon=":material/warning:")
    suggested = check.suggested_caps(caps)
    if suggested != caps:
        changes = _cap_changes(caps, suggested)
        st.button(
            f"Use the suggested caps ({changes})",
            key="apply_suggested_caps",
            on_click=_set_caps,
            args=(session, suggested),
        )


def _cap_changes(before: RunCaps, after: RunCaps) -> str:
    parts = []
    if after.total_tokens != before.total_tokens:
        parts.append(f"{after.total_tokens:,} tokens")
    if after.wall_time_s != before.wall_time_s and after.wall_time_s is not None:
        parts.append(f"{after.wall_time_s:g} s")
    if after.total_cost_usd != before.total_cost_usd and after.total_cost_usd is not None:
        parts.append(f"US${after.total_cost_usd:.2f}")
    return ", ".join(parts)


def continue_control(
    ws: Workspace,
    jobs: Any,
    session: Any,
    plan: Plan,
    caps: RunCaps,
    record: dict[str, Any],
) -> None:
    """After a run that stopped on a cap: continue it with a higher cap, reusing every node
    that finished (the call cache), in a new run."""
    if not run_preview.stopped_on_cap(record.get("status"), record.get("stop_reason")):
        return
    raised = run_preview.continue_caps(plan, caps, record.get("stop_reason"), ws)
    time_cap = str(record.get("stop_reason") or "").startswith("time cap")
    with st.container(border=True):
        st.markdown("**Continue with a higher cap**: finished nodes are reused, not run again.")
        value_col, button_col = st.columns([2, 1])
        if time_cap:
            wall = value_col.number_input(
                "New time cap (seconds)",
                min_value=1.0,
                max_value=86_400.0,
                value=float(raised.wall_time_s or 120.0),
                step=30.0,
                format="%g",
                key="continue_time_cap",
            )
            raised = raised.model_copy(update={"wall_time_s": float(wall)})
        else:
            tokens = value_col.number_input(
                "New total tokens (tokens)",
                min_value=100,
                max_value=200_000,
                value=int(raised.total_tokens),
                step=500,
                key="continue_total_tokens",
            )
            raised = raised.model_copy(update={"total_tokens": int(tokens)})
        button_col.button(
            "Continue with a higher cap",
            key="continue_higher_cap",
            type="primary",
            on_click=_continue_run,
            args=(ws, jobs, session, plan, raised),
        )


def _continue_run(ws: Workspace, jobs: Any, session: Any, plan: Plan, caps: RunCaps) -> None:
    """Callback: raise the caps everywhere and start the run with the call cache on."""
    _set_caps(session, caps)
    job = jobs.start(ws, plan.model_copy(deep=True), caps, session.id, use_cache=True)
    session.run_ids.append(job.run_id)
    st.session_state.run_id = job.run_id


def allocation_panel(
    plan: Plan, caps: RunCaps, apply: Callable[[str, Callable[[], Plan]], bool]
) -> None:
    """The policy, the default strategy, and the per-node allocation the run will use."""
    st.markdown("#### Budget allocation")
    policy = plan.allocation
    kinds = choices.ordered(PolicyKind, POLICY_LABELS)
    with st.container(border=True):
        kind = st.selectbox(
            "Allocation policy",
            kinds,
            index=kinds.index(policy.kind),
            format_func=choices.label_of(POLICY_LABELS),
            key="policy_kind",
        )
        values: dict[str, Any] = {"kind": kind}
        decays = list(choices.values(DecaySchedule))
        values["decay"] = st.selectbox(
            "Decay along the execution order (by difficulty)",
            decays,
            index=decays.index(policy.decay),
            key="policy_decay",
        )
        if kind == "fast_deliberate":
            values["threshold"] = field_slider(
                AllocationPolicy, "threshold", policy.threshold, key="policy_threshold", step=1,
                label="Deliberate from difficulty",
            )  # fmt: skip
            fast_col, slow_col = st.columns(2)
            with fast_col:
                st.caption("Fast model (easy nodes, one call); default: the plan's")
                values["fast_model"] = model_picker(
                    policy.fast_model, key="policy_fast", allow_inherit=True
                )
            with slow_col:
                st.caption("Deliberate model (hard nodes); default: the plan's")
                values["deliberate_model"] = model_picker(
                    policy.deliberate_model, key="policy_slow", allow_inherit=True
                )
                values["deliberate_strategy"] = strategy_inputs(
                    policy.deliberate_strategy, key="policy_slow_strategy"
                )
        st.caption("Plan default strategy (uniform and by-difficulty policies)")
        default_strategy = strategy_inputs(plan.default_strategy, key="default_strategy")
        submitted = st.button("Apply policy", key="apply_policy")
    if submitted:
        merged = {**policy.model_dump(), **values}
        new_policy = AllocationPolicy.model_validate(merged)

        def edit() -> Plan:
            return plan.model_copy(
                update={"allocation": new_policy, "default_strategy": default_strategy}, deep=True
            )

        if apply("allocation policy", edit):
            st.rerun()
    try:
        allocation = allocate(plan, caps)
    except ArborError as exc:
        st.error(f"No allocation: {exc}")
        return
    rows = allocation.rows()
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, width="stretch", key="allocation_table", placeholder="")
    planned = sum(item.planned_tokens for item in allocation.nodes.values())
    st.caption(
        f"{len(rows)} node(s); {planned:,} of {caps.total_tokens:,} tokens planned"
        + (f"; ${caps.total_cost_usd:g} money cap" if caps.total_cost_usd is not None else "")
        + ". Shares are recomputed as nodes start: what a node leaves unspent goes to the "
        "nodes still to run; no node passes its manual cap, no run its caps."
    )


def budget_meter(meter: dict[str, Any] | None) -> None:
    """Spent against allowed for tokens, money and time, from the run's BudgetUpdate events."""
    if not meter:
        return
    cols = st.columns(3)
    used, allowed = meter["tokens_used"], meter["tokens_allowed"]
    cols[0].progress(min(1.0, used / max(1, allowed)), text=f"tokens {used:,} / {allowed:,}")
    cost, cost_cap = meter["cost_used_usd"], meter["cost_allowed_usd"]
    if cost_cap:
        cols[1].progress(min(1.0, cost / cost_cap), text=f"${cost:.4f} / ${cost_cap:g}")
    else:
        cols[1].caption(f"${cost:.4f} spent (no money cap)")
    elapsed, wall = meter["elapsed_s"], meter["time_allowed_s"]
    if wall:
        cols[2].progress(min(1.0, elapsed / wall), text=f"{elapsed:.0f} s / {wall:g} s")
    else:
        cols[2].caption(f"{elapsed:.0f} s elapsed (no time cap)")


def samples_view(ws: Workspace, run_id: str) -> None:
    """Every sample, score and vote of a run, grouped under its node with the agreement."""
    nodes = {row["node_id"]: row for row in ws.traces.node_executions(run_id)}
    calls = ws.traces.model_calls(run_id)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        if call.get("role") not in (None, "answer") or (nodes.get(call["node_id"]) or {}).get(
            "samples"
        ):
            grouped.setdefault(call["node_id"], []).append(call)
    if not grouped:
        return
    st.markdown("#### Samples, scores and votes")
    for node_id, node_calls in grouped.items():
        node = nodes.get(node_id, {})
        agreement = node.get("agreement")
        head = f"`{node_id}` {node.get('title') or ''} · {node.get('strategy') or ''}"
        head += f" · {node.get('samples') or len(node_calls)} sample(s)"
        if agreement is not None:
            head += f" · agreement {agreement:.0%}"
        with st.expander(head, expanded=False):
            if node.get("note"):
                st.caption(node["note"])
            frame = pd.DataFrame(
                [
                    {
                        "role": c.get("role"),
                        "#": c["sample_index"],
                        "selected": "✔" if c.get("selected") else "",
                        "vote": c.get("vote"),
                        "score": c.get("score"),
                        "tokens": (c["input_tokens"] or 0) + (c["output_tokens"] or 0),
                        "replayed": "yes" if c.get("reused_from") else "",
                        "output": (c["output"] or c["error"] or "")[:300],
                    }
                    for c in node_calls
                ]
            )
            st.dataframe(
                frame, hide_index=True, width="stretch", key=f"samples_{node_id}", placeholder=""
            )
