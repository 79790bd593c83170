"""Named errors: every failure a user can cause or meet has a class and a message saying what to do.

The UI shows ``str(error)``; ``run.py`` prints it and exits non-zero. Catch ``ArborError`` to
handle all of them.
"""

from __future__ import annotations


class ArborError(Exception):
    """Base class of every error Arbor raises on purpose."""


class PlanError(ArborError):
    """The plan is malformed: a bad id, a dangling dependency, a file that is not a plan."""


class CycleError(PlanError):
    """The plan's dependencies form a cycle; ``cycle`` lists the node ids around it."""

    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]]) if cycle else "?"
        super().__init__(f"The plan has a dependency cycle: {path}. Remove one of these edges.")


class ModelUnavailable(ArborError):
    """A model cannot be used: missing file, unreachable endpoint, missing API key."""


class ModelCallFailed(ArborError):
    """A model was reachable but the call failed (bad request, server error after retries)."""


class CallCancelled(ArborError):
    """A model call was stopped because its run was cancelled; ``partial`` is what came back."""

    def __init__(self, message: str, partial: str = ""):
        self.partial = partial
        super().__init__(message)


class DecomposeError(ArborError):
    """The planner model's output could not be turned into a plan."""


class BudgetExceeded(ArborError):
    """A token cap leaves no room for the next call."""


class SessionError(ArborError):
    """A session could not be loaded or saved: missing id, corrupt or foreign file."""


class TraceStoreError(ArborError):
    """The trace store could not be opened or written."""


class RegistryError(ArborError):
    """The model registry refused a change or its file is corrupt (the file is left as it is)."""
