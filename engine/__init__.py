"""Arbor's engine: plans, decomposition, model backends, budgets and execution.

Scripts use the same functions the UI does::

    from engine import ModelRef, RunCaps, decompose, execute_plan
    plan = decompose("Plan a three-day trip to Lisbon").plan
    result = execute_plan(plan, RunCaps(total_tokens=4000))
"""

from engine.budget import RunCaps
from engine.decompose import DecomposeResult, decompose
from engine.errors import (
    ArborError,
    BudgetExceeded,
    CycleError,
    DecomposeError,
    ModelCallFailed,
    ModelUnavailable,
    PlanError,
    SessionError,
    TraceStoreError,
)
from engine.executor import RunResult, execute_plan
from engine.plan import GenerationConfig, ModelRef, Node, Plan, single_node_plan

__all__ = [
    "ArborError",
    "BudgetExceeded",
    "CycleError",
    "DecomposeError",
    "DecomposeResult",
    "GenerationConfig",
    "ModelCallFailed",
    "ModelRef",
    "ModelUnavailable",
    "Node",
    "Plan",
    "PlanError",
    "RunCaps",
    "RunResult",
    "SessionError",
    "TraceStoreError",
    "decompose",
    "execute_plan",
    "single_node_plan",
]
