"""Plan edits as pure functions: each takes a plan and returns a new, validated plan.

The input plan is never modified, so a caller can keep it for undo, and a refused edit (a cycle,
a dangling dependency, a blank title) leaves the caller's plan as it was.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from engine.errors import PlanError
from engine.plan import Node, Plan


def _validated(plan: Plan) -> Plan:
    plan.validate_graph()
    return plan


def update_node(plan: Plan, node_id: str, **changes: Any) -> Plan:
    """Change fields of one node (title, instruction, depends_on, model, generation)."""
    candidate = plan.model_copy(deep=True)
    target = candidate.node(node_id)
    try:
        updated = Node.model_validate({**target.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "node"
        raise PlanError(f"Node {node_id!r}: {field}: {first['msg']}.") from exc
    for name in changes:
        setattr(target, name, getattr(updated, name))
    return _validated(candidate)


def add_child(plan: Plan, parent_id: str, title: str, instruction: str = "") -> tuple[Plan, str]:
    """Append a new leaf under ``parent_id``; returns the new plan and the new node's id."""
    candidate = plan.model_copy(deep=True)
    new_id = candidate.new_node_id("n")
    candidate.node(parent_id).children.append(Node(id=new_id, title=title, instruction=instruction))
    return _validated(candidate), new_id


def remove_node(plan: Plan, node_id: str) -> Plan:
    """Delete a node and its subtree; dependencies on removed nodes are dropped too."""
    if node_id == plan.root.id:
        raise PlanError("The root node cannot be deleted; edit it instead.")
    candidate = plan.model_copy(deep=True)
    parent = candidate.parent_of(node_id)
    if parent is None:  # pragma: no cover - only the root has no parent
        raise PlanError(f"Node {node_id!r} has no parent.")
    removed_subtree = Plan(task=candidate.task, root=candidate.node(node_id))
    removed = {node.id for node, _ in removed_subtree.iter_nodes()}
    parent.children = [child for child in parent.children if child.id != node_id]
    for other, _ in candidate.iter_nodes():
        other.depends_on = [dep for dep in other.depends_on if dep not in removed]
    return _validated(candidate)
