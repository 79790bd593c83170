"""Named errors: every failure a user can cause or meet has a class and a message saying what to do.

The UI shows ``user_message(error)``; the command line prints it and exits non-zero. Catch
``ArborError`` to handle all of them. Every ``ArborError`` lives in this file::

    ArborError
    ├── PlanError                  a malformed plan, plan file or edit
    │   ├── CycleError             dependencies form a cycle (``cycle`` names it)
    │   └── TemplateProblem        an instruction template cannot be checked or rendered
    ├── ModelUnavailable           a model cannot be used: file, endpoint, key
    ├── ModelCallFailed            a reachable model's call failed after retries
    ├── CallCancelled              a call stopped because its run was cancelled
    ├── PlannerCancelled           a planner action (decompose, expand...) was cancelled
    ├── NodeBudgetExhausted        a node's allowance cannot grant the next call
    ├── CheckError                 an analyst's regex, JSON schema or expression is unusable
    ├── DatasetError               a dataset file cannot be used
    ├── EvaluationError            an evaluation cannot start
    ├── OutcomeTableError          an outcome table file is corrupt, foreign or inconsistent
    │   └── MissingOutcome         no row for an assignment a search asked about
    ├── PoolError                  an execution pool (Ray) cannot run
    ├── RegistryError              the model registry refused a change or is corrupt
    ├── SessionError               a session cannot be loaded or saved
    │   └── BundleError            an .arbor file cannot be exported or imported
    │       └── BundleWriteError   ... because the file cannot be written (also an OSError)
    └── TraceStoreError            the trace store cannot be opened, read or written
        ├── QueryRefused           the SQL console does not run this statement
        └── ExportWriteError       a run's export file cannot be written (also an OSError)
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


class TemplateProblem(PlanError):
    """A node's instruction template cannot be checked or rendered; the message says why."""

    def __init__(self, message: str, *, node_id: str, line: int | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.line = line


class ModelUnavailable(ArborError):
    """A model cannot be used: missing file, unreachable endpoint, missing API key."""


class ModelCallFailed(ArborError):
    """A model was reachable but the call failed (bad request, server error after retries)."""


class CallCancelled(ArborError):
    """A model call was stopped because its run was cancelled; ``partial`` is what came back."""

    def __init__(self, message: str, partial: str = ""):
        self.partial = partial
        super().__init__(message)


class PlannerCancelled(ArborError):
    """A planner action was cancelled by the analyst; nothing it made was applied."""


class NodeBudgetExhausted(ArborError):
    """The node's allowance (or the run's) cannot grant the next call its minimum output."""


class CheckError(ArborError):
    """A check the analyst wrote cannot be used: a bad regex, JSON schema or expression."""


class DatasetError(ArborError):
    """A dataset file cannot be used; the message names the file and the line."""


class EvaluationError(ArborError):
    """An evaluation cannot start: no configurations, repeated names, unknown example ids."""


class OutcomeTableError(ArborError):
    """An outcome table file is corrupt, foreign, from a newer Arbor, or inconsistent."""


class MissingOutcome(OutcomeTableError, KeyError):
    """The table has no row for an assignment (or example) a search asked about."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "missing outcome"


class PoolError(ArborError):
    """An execution pool cannot run: Ray is not installed, or its cluster cannot be reached."""


class RegistryError(ArborError):
    """The model registry refused a change or its file is corrupt (the file is left as it is)."""


class SessionError(ArborError):
    """A session could not be loaded or saved: missing id, corrupt or foreign file."""


class BundleError(SessionError):
    """A session file cannot be exported or imported; the message says what is wrong."""


class BundleWriteError(BundleError, OSError):
    """The bundle could not be written (a full disk, a quota): one line naming the file. Still
    an ``OSError``, as callers caught before."""


class TraceStoreError(ArborError):
    """The trace store could not be opened or written."""


class QueryRefused(TraceStoreError):
    """The console does not run this statement; the message says why."""


class ExportWriteError(TraceStoreError, OSError):
    """A run's export file could not be written (a full disk, a quota): one line naming the
    file. Still an ``OSError``, as callers caught before."""


def validation_problems(exc: Exception) -> str | None:
    """A pydantic ``ValidationError`` as one sentence ("field: problem; ..."), without input
    values (they may be secrets) or pydantic's web links; None for any other exception."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    problems = []
    for error in errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems) + "."


def user_message(exc: BaseException) -> str:
    """The one line a user sees for ``exc``: an Arbor error's own message; for anything else,
    its type and message (an unexpected error still names what happened, without a traceback).
    """
    text = str(exc) if isinstance(exc, ArborError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) if "\n" in text else text
