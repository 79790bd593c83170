"""What changed between two plans, node by node (for revision lists and review before saving).

Nodes are matched by id. A node's *changed* fields are its own fields (title, instruction,
depends_on, model, ...) plus ``parent`` when it moved to another parent and ``position`` when
its order among the siblings it kept changed; a node added or removed around it does not count
as moving it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.plan.core import Node, Plan

NODE_FIELDS = tuple(name for name in Node.model_fields if name not in ("id", "children"))
DEFAULT_FIELDS = ("default_model", "default_generation")


@dataclass
class PlanDiff:
    """Node ids added and removed (in tree order), changed fields per node, plan-level changes."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    task_changed: bool = False
    defaults_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.changed or self.task_changed or self.defaults_changed
        )

    def summary(self) -> str:
        """One line, e.g. ``"2 added, 1 removed, 3 changed; task changed"``."""
        counts = [
            f"{len(ids)} {word}"
            for ids, word in (
                (self.added, "added"),
                (self.removed, "removed"),
                (self.changed, "changed"),
            )
            if ids
        ]
        notes = [", ".join(counts)] if counts else []
        if self.task_changed:
            notes.append("task changed")
        notes.extend(f"{name.replace('_', ' ')} changed" for name in self.defaults_changed)
        return "; ".join(notes) or "no changes"


def _parents(plan: Plan) -> dict[str, str | None]:
    return {node.id: parent.id if parent else None for node, parent in plan.iter_nodes()}


def _moved_among_siblings(old: Plan, new: Plan) -> set[str]:
    """Nodes that kept their parent but changed order among the siblings that stayed.

    Within each parent, the longest run of siblings that kept their relative order stays put
    and the rest count as moved, so moving one node up flags that node alone.
    """
    old_children = {node.id: [c.id for c in node.children] for node, _ in old.iter_nodes()}
    moved: set[str] = set()
    for node, _ in new.iter_nodes():
        before = old_children.get(node.id)
        if not before:
            continue
        after = [child.id for child in node.children]
        stayed = set(before) & set(after)
        old_order = [s for s in before if s in stayed]
        new_order = [s for s in after if s in stayed]
        if old_order != new_order:
            moved |= stayed - _longest_common_subsequence(old_order, new_order)
    return moved


def _longest_common_subsequence(a: list[str], b: list[str]) -> set[str]:
    lengths = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            lengths[i][j] = (
                lengths[i + 1][j + 1] + 1
                if a[i] == b[j]
                else max(lengths[i + 1][j], lengths[i][j + 1])
            )
    common: set[str] = set()
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            common.add(a[i])
            i, j = i + 1, j + 1
        elif lengths[i + 1][j] >= lengths[i][j + 1]:
            i += 1
        else:
            j += 1
    return common


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """Compare ``old`` with ``new``; nodes are matched by id."""
    old_nodes, new_nodes = old.nodes(), new.nodes()
    old_parents, new_parents = _parents(old), _parents(new)
    diff = PlanDiff(
        added=[node.id for node, _ in new.iter_nodes() if node.id not in old_nodes],
        removed=[node.id for node, _ in old.iter_nodes() if node.id not in new_nodes],
        task_changed=old.task != new.task,
        defaults_changed=[
            name for name in DEFAULT_FIELDS if getattr(old, name) != getattr(new, name)
        ],
    )
    moved = _moved_among_siblings(old, new)
    for node_id, new_node in new_nodes.items():
        old_node = old_nodes.get(node_id)
        if old_node is None:
            continue
        fields = [
            name for name in NODE_FIELDS if getattr(old_node, name) != getattr(new_node, name)
        ]
        if old_parents[node_id] != new_parents[node_id]:
            fields.append("parent")
        elif node_id in moved:
            fields.append("position")
        if fields:
            diff.changed[node_id] = fields
    return diff
