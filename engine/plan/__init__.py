"""The typed plan and what it holds: nodes, model references, generation settings, compute
budgets; editing, history, diff, plan files and instruction templates.

Everything else in the engine reads these types; this package imports no backend, planner or
executor (import-linter checks it), so a plan can be loaded, edited and saved without a model
library in the process.
"""

from engine.plan.core import (
    NODE_ID_PATTERN,
    PLAN_FORMAT,
    PLAN_FORMAT_VERSION,
    Node,
    Plan,
    single_node_plan,
)
from engine.plan.model_settings import BUNDLED_MODEL, GenerationConfig, ModelRef

__all__ = [
    "BUNDLED_MODEL",
    "NODE_ID_PATTERN",
    "PLAN_FORMAT",
    "PLAN_FORMAT_VERSION",
    "GenerationConfig",
    "ModelRef",
    "Node",
    "Plan",
    "single_node_plan",
]
