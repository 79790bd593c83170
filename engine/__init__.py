"""Arbor's engine: plans, decomposition, model backends, budgets and execution.

Scripts use the same functions the UI does::

    from engine import ModelRef, RunCaps, decompose, execute_plan
    plan = decompose("Plan a three-day trip to Lisbon").plan
    result = execute_plan(plan, RunCaps(total_tokens=4000))
"""

from engine.allocation import Allocation, allocate
from engine.alternatives import merge_alternatives, sample_alternatives
from engine.budget import RunCaps
from engine.compute_config import AllocationPolicy, NodeBudget, SelectorConfig, StrategyConfig
from engine.decompose import DecomposeResult, decompose
from engine.difficulty import rate_difficulty
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
from engine.expand import ExpandResult, expand_node, replan_subtree
from engine.history import PlanHistory
from engine.plan import GenerationConfig, ModelRef, Node, Plan, single_node_plan
from engine.plan_io import export_plan, import_plan

__all__ = [
    "Allocation",
    "AllocationPolicy",
    "ArborError",
    "BudgetExceeded",
    "CycleError",
    "DecomposeError",
    "DecomposeResult",
    "ExpandResult",
    "GenerationConfig",
    "ModelCallFailed",
    "ModelRef",
    "ModelUnavailable",
    "Node",
    "NodeBudget",
    "Plan",
    "PlanError",
    "PlanHistory",
    "RunCaps",
    "RunResult",
    "SelectorConfig",
    "SessionError",
    "StrategyConfig",
    "TraceStoreError",
    "allocate",
    "decompose",
    "execute_plan",
    "expand_node",
    "export_plan",
    "import_plan",
    "merge_alternatives",
    "rate_difficulty",
    "replan_subtree",
    "sample_alternatives",
    "single_node_plan",
]
