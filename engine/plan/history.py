"""Undo and redo over whole plans.

Edits are pure functions returning new plans, so history is a stack of plans rather than of
inverse operations: undo gives back exactly the plan from before an edit. Plans are copied on
the way in and out, so a caller that mutates a plan it got cannot rewrite history.
"""

from __future__ import annotations

from engine.errors import PlanError
from engine.plan.core import Plan


class PlanHistory:
    """The current plan plus up to ``limit`` edits to undo and the undone edits to redo."""

    def __init__(self, plan: Plan, limit: int = 200):
        if limit < 1:
            raise ValueError(f"history limit must be at least 1, not {limit}")
        self.limit = limit
        self._current = plan.model_copy(deep=True)
        self._undo: list[tuple[str, Plan]] = []  # (label, plan before the edit), oldest first
        self._redo: list[tuple[str, Plan]] = []  # (label, plan after the edit), next redo last

    @property
    def current(self) -> Plan:
        return self._current.model_copy(deep=True)

    def apply(self, new_plan: Plan, label: str) -> Plan:
        """Make ``new_plan`` current, recording the step as ``label``; clears the redo stack.

        A plan equal to the current one records nothing (an edit that changed nothing is not
        worth an undo step). Returns the new current plan.
        """
        if new_plan == self._current:
            return self.current
        self._undo.append((label, self._current))
        del self._undo[: -self.limit]
        self._redo.clear()
        self._current = new_plan.model_copy(deep=True)
        return self.current

    def undo(self) -> Plan:
        """Go back one edit and return the plan from before it."""
        if not self._undo:
            raise PlanError("Nothing to undo.")
        label, before = self._undo.pop()
        self._redo.append((label, self._current))
        self._current = before
        return self.current

    def redo(self) -> Plan:
        """Re-apply the last undone edit and return the plan it produced."""
        if not self._redo:
            raise PlanError("Nothing to redo.")
        label, after = self._redo.pop()
        self._undo.append((label, self._current))
        self._current = after
        return self.current

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_label(self) -> str | None:
        """What ``undo`` would take back, or ``None``."""
        return self._undo[-1][0] if self._undo else None

    @property
    def redo_label(self) -> str | None:
        """What ``redo`` would apply again, or ``None``."""
        return self._redo[-1][0] if self._redo else None
