"""Arbor's engine: plans, the planner, model backends, execution with budgets, and tuning.

Packages, from the bottom up (each imports only those below it; import-linter checks it)::

    engine.errors, engine.redaction   every named error; masking credentials in URLs
    engine.plan                       the typed plan and what it holds
    engine.models                     backends, GGUF headers, the registry, ``backend_for``
    engine.prompts, engine.checks     prompt texts from assets/; answer checks
    engine.planner | engine.run       task -> plan | plan -> run (scheduler, strategies, budgets)
    engine.tune                       datasets, evaluation, allocation search

Scripts use the same functions the UI does::

    from engine import ModelRef, RunCaps, decompose, execute_plan
    plan = decompose("Plan a three-day trip to Lisbon").plan
    result = execute_plan(plan, RunCaps(total_tokens=4000))

The names below are loaded on first use, so ``import engine.errors`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Allocation": "engine.run.allocation",
    "allocate": "engine.run.allocation",
    "merge_alternatives": "engine.planner.alternatives",
    "sample_alternatives": "engine.planner.alternatives",
    "RunCaps": "engine.run.budget",
    "AllocationPolicy": "engine.plan.compute_config",
    "NodeBudget": "engine.plan.compute_config",
    "SelectorConfig": "engine.plan.compute_config",
    "StrategyConfig": "engine.plan.compute_config",
    "DecomposeResult": "engine.planner.decompose",
    "decompose": "engine.planner.decompose",
    "rate_difficulty": "engine.planner.difficulty",
    "ArborError": "engine.errors",
    "CycleError": "engine.errors",
    "ModelCallFailed": "engine.errors",
    "ModelUnavailable": "engine.errors",
    "PlanError": "engine.errors",
    "SessionError": "engine.errors",
    "TraceStoreError": "engine.errors",
    "RunResult": "engine.run.executor",
    "execute_plan": "engine.run.executor",
    "ExpandResult": "engine.planner.expand",
    "expand_node": "engine.planner.expand",
    "replan_subtree": "engine.planner.expand",
    "PlanHistory": "engine.plan.history",
    "GenerationConfig": "engine.plan",
    "ModelRef": "engine.plan",
    "Node": "engine.plan",
    "Plan": "engine.plan",
    "single_node_plan": "engine.plan",
    "export_plan": "engine.plan.files",
    "import_plan": "engine.plan.files",
}
#: Modules offered by name (``from engine import editing``).
_MODULES = {"editing": "engine.plan.editing"}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
