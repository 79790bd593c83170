"""Plan edits as pure functions: each takes a plan and returns a new, validated plan.

The input plan is never modified, so a caller can keep it for undo, and a refused edit (a cycle,
a dangling dependency, a blank or repeated title, an unknown id) raises ``PlanError`` (or
``CycleError``) naming the nodes involved and leaves the caller's plan as it was.

Sibling titles are kept distinct (compared trimmed and case-insensitively) because a parent's
prompt lists its children's outputs under their titles; an edit that would give a node the title
of one of its siblings is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import networkx as nx
from pydantic import ValidationError

from engine.errors import CycleError, PlanError
from engine.plan.core import Node, Plan

EDITABLE_FIELDS = frozenset(
    {
        "title",
        "instruction",
        "depends_on",
        "model",
        "generation",
        "difficulty",
        "difficulty_reason",
        "strategy",
        "budget",
    }
)
COPY_SUFFIX = " (copy)"
_MAX_TITLE: int = next(
    rule.max_length for rule in Node.model_fields["title"].metadata if hasattr(rule, "max_length")
)


# -- helpers ---------------------------------------------------------------------------------
def _validated(plan: Plan) -> Plan:
    plan.validate_graph()
    return plan


def _title_key(title: str) -> str:
    return title.strip().casefold()


def _locate(plan: Plan, node_id: str) -> tuple[Node, Node | None]:
    """The node and its parent, or ``PlanError`` naming the unknown id."""
    for node, parent in plan.iter_nodes():
        if node.id == node_id:
            return node, parent
    raise PlanError(f"No node with id {node_id!r} in the plan.")


def _non_root(plan: Plan, node_id: str, action: str) -> tuple[Node, Node]:
    node, parent = _locate(plan, node_id)
    if parent is None:
        raise PlanError(f"The root node {node_id!r} cannot be {action}.")
    return node, parent


def _subtree_ids(node: Node) -> set[str]:
    return {n.id for n, _ in Plan(task="", root=node).iter_nodes()}


def _check_title_free(siblings: Iterable[Node], title: str, who: str) -> None:
    """Refuse ``title`` if one of ``siblings`` already carries it; ``who`` opens the message."""
    key = _title_key(title)
    for sibling in siblings:
        if _title_key(sibling.title) == key:
            raise PlanError(
                f"{who} already has a sibling titled {sibling.title!r} ({sibling.id!r}); "
                "choose another title."
            )


def _new_node(node_id: str, title: str, instruction: str) -> Node:
    if not isinstance(title, str) or not title.strip():
        raise PlanError("A new node needs a title; a blank title is refused.")
    try:
        return Node(id=node_id, title=title, instruction=instruction)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "node"
        raise PlanError(f"New node: {field}: {first['msg']}.") from exc


def _clamp(index: int | None, length: int) -> int:
    """``None`` means the end; anything else is clamped into ``0..length``."""
    if index is None:
        return length
    return max(0, min(index, length))


def _fresh_ids(taken: set[str], count: int, prefix: str = "n") -> list[str]:
    """``count`` ids of the form ``n<k>`` not in ``taken`` (which is updated)."""
    fresh: list[str] = []
    index = len(taken)
    while len(fresh) < count:
        candidate = f"{prefix}{index}"
        if candidate not in taken:
            taken.add(candidate)
            fresh.append(candidate)
        index += 1
    return fresh


# -- node fields -----------------------------------------------------------------------------
def update_node(plan: Plan, node_id: str, **changes: Any) -> Plan:
    """Change fields of one node: title, instruction, depends_on, model, generation,
    difficulty, difficulty_reason, strategy, budget.

    A blank title, a title a sibling already has, an unknown dependency or a cycle is refused.
    """
    unknown = sorted(set(changes) - EDITABLE_FIELDS)
    if unknown:
        raise PlanError(
            f"Node {node_id!r}: cannot change {', '.join(unknown)}; editable fields are "
            f"{', '.join(sorted(EDITABLE_FIELDS))}."
        )
    candidate = plan.model_copy(deep=True)
    target, parent = _locate(candidate, node_id)
    if "title" in changes:
        title = changes["title"]
        if isinstance(title, str) and not title.strip():
            raise PlanError(f"Node {node_id!r} needs a title; a blank title is refused.")
    try:
        updated = Node.model_validate({"id": target.id, "title": target.title, **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "node"
        raise PlanError(f"Node {node_id!r}: {field}: {first['msg']}.") from exc
    # Re-checked only when the title really changes, so a plan that already has repeated
    # titles (an imported file, say) can still have its other fields edited.
    if parent is not None and _title_key(updated.title) != _title_key(target.title):
        others = [child for child in parent.children if child.id != node_id]
        _check_title_free(others, updated.title, f"Node {node_id!r}")
    for name in changes:
        value = getattr(updated, name)
        if name == "depends_on":
            value = list(dict.fromkeys(value))  # a repeated dependency means nothing more
        setattr(target, name, copy.deepcopy(value))
    return _validated(candidate)


# -- adding ----------------------------------------------------------------------------------
def add_child(
    plan: Plan, parent_id: str, title: str, instruction: str = "", index: int | None = None
) -> tuple[Plan, str]:
    """Insert a new leaf under ``parent_id`` at ``index`` (``None``: last; clamped).

    Returns the new plan and the new node's id.
    """
    candidate = plan.model_copy(deep=True)
    parent, _ = _locate(candidate, parent_id)
    new_id = candidate.new_node_id("n")
    node = _new_node(new_id, title, instruction)
    _check_title_free(parent.children, node.title, f"The new child of {parent_id!r}")
    parent.children.insert(_clamp(index, len(parent.children)), node)
    return _validated(candidate), new_id


def add_sibling(plan: Plan, node_id: str, title: str, instruction: str = "") -> tuple[Plan, str]:
    """Insert a new leaf right after ``node_id`` under the same parent (not for the root).

    Returns the new plan and the new node's id.
    """
    candidate = plan.model_copy(deep=True)
    _, parent = _locate(candidate, node_id)
    if parent is None:
        raise PlanError(f"The root node {node_id!r} has no siblings; add a child instead.")
    new_id = candidate.new_node_id("n")
    node = _new_node(new_id, title, instruction)
    _check_title_free(parent.children, node.title, f"The new sibling of {node_id!r}")
    position = [child.id for child in parent.children].index(node_id)
    parent.children.insert(position + 1, node)
    return _validated(candidate), new_id


def duplicate_node(plan: Plan, node_id: str) -> tuple[Plan, str]:
    """Copy ``node_id``'s subtree, with fresh ids, right after the original.

    Dependencies between nodes of the subtree point at the copies; dependencies on nodes outside
    it are kept. The copy's title gets " (copy)" (" (copy 2)", ... if that is taken). Returns
    the new plan and the copy's id.
    """
    candidate = plan.model_copy(deep=True)
    original, parent = _non_root(candidate, node_id, "duplicated")
    copied = original.model_copy(deep=True)
    old_ids = [n.id for n, _ in Plan(task="", root=copied).iter_nodes()]
    taken = set(candidate.nodes())
    mapping = dict(zip(old_ids, _fresh_ids(taken, len(old_ids)), strict=True))
    for node, _ in Plan(task="", root=copied).iter_nodes():
        node.id = mapping[node.id]
        node.depends_on = [mapping.get(dep, dep) for dep in node.depends_on]
    copied.title = _copy_title(original.title, parent.children)
    position = [child.id for child in parent.children].index(node_id)
    parent.children.insert(position + 1, copied)
    return _validated(candidate), copied.id


def _copy_title(title: str, siblings: list[Node]) -> str:
    taken = {_title_key(sibling.title) for sibling in siblings}
    number = 1
    while True:
        suffix = COPY_SUFFIX if number == 1 else f" (copy {number})"
        proposal = title[: _MAX_TITLE - len(suffix)].rstrip() + suffix
        if _title_key(proposal) not in taken:
            return proposal
        number += 1


# -- removing --------------------------------------------------------------------------------
def remove_node(plan: Plan, node_id: str, *, keep_children: bool = False) -> Plan:
    """Delete a node and its subtree; dependencies on removed nodes are dropped too.

    With ``keep_children`` only the node goes: its children take its place in its parent, in
    their order.
    """
    candidate = plan.model_copy(deep=True)
    node, parent = _non_root(candidate, node_id, "deleted; edit it instead")
    position = [child.id for child in parent.children].index(node_id)
    others = [child for child in parent.children if child.id != node_id]
    if keep_children:
        removed = {node_id}
        for child in node.children:
            _check_title_free(others, child.title, f"Node {child.id!r}, lifted into {parent.id!r},")
        lifted = node.children
    else:
        removed = _subtree_ids(node)
        lifted = []
    parent.children = others[:position] + lifted + others[position:]
    for other, _ in candidate.iter_nodes():
        other.depends_on = [dep for dep in other.depends_on if dep not in removed]
    return _validated(candidate)


# -- moving ----------------------------------------------------------------------------------
def move_node(plan: Plan, node_id: str, new_parent_id: str, index: int | None = None) -> Plan:
    """Make ``node_id`` (with its subtree) a child of ``new_parent_id`` at ``index``.

    ``index`` counts among the new parent's other children (``None``: last; clamped). Moving
    the root, moving a node under itself or its own subtree, a repeated sibling title and a
    move that closes a dependency cycle are refused.
    """
    candidate = plan.model_copy(deep=True)
    node, old_parent = _non_root(candidate, node_id, "moved")
    new_parent, _ = _locate(candidate, new_parent_id)
    if new_parent_id in _subtree_ids(node):
        where = "itself" if new_parent_id == node_id else f"{new_parent_id!r}, inside its subtree"
        raise PlanError(f"Node {node_id!r} cannot be moved under {where}.")
    old_parent.children = [child for child in old_parent.children if child.id != node_id]
    if new_parent is not old_parent:
        _check_title_free(
            new_parent.children, node.title, f"Node {node_id!r}, under {new_parent_id!r},"
        )
    new_parent.children.insert(_clamp(index, len(new_parent.children)), node)
    return _validated(candidate)


def reorder_node(plan: Plan, node_id: str, new_index: int) -> Plan:
    """Move ``node_id`` to position ``new_index`` among its siblings (clamped)."""
    candidate = plan.model_copy(deep=True)
    node, parent = _non_root(candidate, node_id, "reordered; it has no siblings")
    others = [child for child in parent.children if child.id != node_id]
    others.insert(_clamp(new_index, len(others)), node)
    parent.children = others
    return _validated(candidate)


# -- dependencies ----------------------------------------------------------------------------
def add_dependency(plan: Plan, node_id: str, dep_id: str) -> Plan:
    """Make ``node_id`` use the output of ``dep_id``.

    A dependency that would close a cycle raises ``CycleError`` naming the cycle; adding one
    that is already there changes nothing.
    """
    candidate = plan.model_copy(deep=True)
    node, _ = _locate(candidate, node_id)
    if dep_id not in candidate.nodes():
        raise PlanError(
            f"Node {node_id!r} cannot use the output of {dep_id!r}: no node with that id in "
            "the plan."
        )
    if dep_id in node.depends_on:
        return _validated(candidate)
    if dep_id == node_id:
        raise CycleError([node_id])
    graph = plan.validate_graph()
    if nx.has_path(graph, node_id, dep_id):
        # node_id already runs before dep_id; the new edge dep_id -> node_id closes the loop.
        raise CycleError(nx.shortest_path(graph, node_id, dep_id))
    node.depends_on.append(dep_id)
    return _validated(candidate)


def remove_dependency(plan: Plan, node_id: str, dep_id: str) -> Plan:
    """Stop ``node_id`` using the output of ``dep_id``; refused if it does not use it."""
    candidate = plan.model_copy(deep=True)
    node, _ = _locate(candidate, node_id)
    if dep_id not in node.depends_on:
        raise PlanError(f"Node {node_id!r} does not use the output of {dep_id!r}.")
    node.depends_on = [dep for dep in node.depends_on if dep != dep_id]
    return _validated(candidate)
