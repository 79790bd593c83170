"""Before a run: can its caps reach the answer? After a capped run: what caps would continue it?

Combines the plan's allocation (``engine.run.allocation``), each model's recorded latency
(``storage.call_profiles``) and registry prices and concurrency into the reachability check
(``engine.run.reachability``), for the workbench and ``run.py run``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from engine.errors import ArborError
from engine.models.registry import DEFAULT_REMOTE_CONCURRENCY, Registry
from engine.plan import ModelRef, Plan
from engine.run.allocation import Allocation, allocate
from engine.run.budget import RunCaps
from engine.run.reachability import CallProfile, Reachability, check_reachability, nice_ceiling
from storage.call_profiles import recorded_call_profiles
from storage.workspace import Workspace

#: A run stopped on a cap continues with at least this multiple of the cap that stopped it.
CONTINUE_FACTOR = 2


@dataclass(frozen=True)
class RunPreview:
    allocation: Allocation
    reachability: Reachability
    #: Why some of what the check could use was missing (an unreadable registry or store).
    notes: tuple[str, ...] = ()


def call_profiles(workspace: Workspace | None, allocation: Allocation) -> tuple[dict, list[str]]:
    """A ``CallProfile`` per model of the allocation, and notes on what could not be read."""
    refs: dict[str, ModelRef] = {item.model.label: item.model for item in allocation.nodes.values()}
    notes: list[str] = []
    recorded = {}
    registry = None
    if workspace is not None:
        try:
            recorded = recorded_call_profiles(workspace.traces, refs)
        except ArborError as exc:
            notes.append(f"recorded latencies unavailable: {exc}")
        try:
            registry = Registry.in_data_dir(workspace.root)
        except ArborError as exc:
            notes.append(f"model registry unavailable (no prices): {exc}")
    profiles = {}
    for label, ref in refs.items():
        entry = None
        if registry is not None:
            try:
                entry = registry.entry_for(ref)
            except (ArborError, StopIteration):
                entry = None
        calls = recorded.get(label)
        default_lanes = 1 if ref.kind == "local" else DEFAULT_REMOTE_CONCURRENCY
        profiles[label] = CallProfile(
            seconds_per_call=calls.seconds_per_call if calls else None,
            output_tokens_per_call=calls.output_tokens_per_call if calls else None,
            recorded_calls=calls.calls if calls else 0,
            price_in_per_m=entry.price_in_per_m if entry else 0.0,
            price_out_per_m=entry.price_out_per_m if entry else 0.0,
            max_concurrent=entry.max_concurrent if entry else default_lanes,
        )
    return profiles, notes


def preview_run(plan: Plan, caps: RunCaps, workspace: Workspace | None = None) -> RunPreview:
    """The allocation and the reachability verdict of running ``plan`` under ``caps``.

    Raises ``PlanError`` when the plan's graph is invalid (as ``allocate`` does).
    """
    allocation = allocate(plan, caps)
    profiles, notes = call_profiles(workspace, allocation)
    reachability = check_reachability(plan, caps, allocation, profiles)
    return RunPreview(allocation, reachability, tuple(notes))


def continue_caps(
    plan: Plan, caps: RunCaps, stop_reason: str | None, workspace: Workspace | None = None
) -> RunCaps:
    """Caps to continue a run that stopped on a cap: the cap that stopped it raised to what the
    check suggests and at least ``CONTINUE_FACTOR`` times what it was; the others as they were
    unless the check says they cannot reach the answer either."""
    reason = (stop_reason or "").lower()
    try:
        suggested = preview_run(plan, caps, workspace).reachability.suggested_caps(caps)
    except ArborError:
        suggested = caps
    update: dict[str, object] = {}
    if reason.startswith("time cap") and caps.wall_time_s is not None:
        wall = max(suggested.wall_time_s or 0.0, caps.wall_time_s * CONTINUE_FACTOR)
        update["wall_time_s"] = min(86_400.0, float(nice_ceiling(wall, 10)))
    elif "$" in reason and caps.total_cost_usd is not None and "token cap" in reason:
        money = max(suggested.total_cost_usd or 0.0, caps.total_cost_usd * CONTINUE_FACTOR)
        update["total_cost_usd"] = min(10_000.0, money)
        tokens = max(suggested.total_tokens, caps.total_tokens)
        update["total_tokens"] = min(200_000, tokens)
    if reason.startswith("token cap") or not update:
        tokens = max(suggested.total_tokens, caps.total_tokens * CONTINUE_FACTOR)
        update["total_tokens"] = min(200_000, nice_ceiling(tokens))
    return suggested.model_copy(update=update)


def warn_if_unreachable(
    plan: Plan, caps: RunCaps, workspace: Workspace | None = None, out: TextIO | None = None
) -> Reachability | None:
    """Before a command-line run: the check's verdict and reasons on stderr when the caps may
    not reach the answer (the run goes ahead: the analyst may know better)."""
    try:
        check = preview_run(plan, caps, workspace).reachability
    except ArborError:
        return None  # the run itself reports an invalid plan
    if check.verdict != "reachable":
        stream = out or sys.stderr
        print(f"warning: {check.headline()}", file=stream)
        for finding in check.problems:
            print(f"  - {finding.reason}", file=stream)
    return check


def stopped_on_cap(status: str | None, stop_reason: str | None) -> bool:
    """Whether a run ended because a token, money or time cap ran out."""
    reason = (stop_reason or "").lower()
    return status == "stopped" and ("cap reached" in reason)


__all__ = [
    "CONTINUE_FACTOR",
    "RunPreview",
    "call_profiles",
    "continue_caps",
    "preview_run",
    "stopped_on_cap",
    "warn_if_unreachable",
]
