"""Events a run emits. The trace writer and the UI both consume them; neither drives the run.

All events of one run are emitted from the coordinating thread, in order, so a listener needs
no locking of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

#: Run statuses whose root finished, so the run has an answer: "suspect" is a finished run with
#: a warning (some node's output failed ``engine.output_check``), never a failure.
ANSWERED_STATUSES: frozenset[str] = frozenset({"completed", "suspect"})


def is_answered(status: str | None) -> bool:
    """Whether a run with this status finished with an answer ("completed" or "suspect")."""
    return status in ANSWERED_STATUSES


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    session_id: str | None
    task: str
    plan_json: str
    caps_json: str
    started_at: datetime
    #: The interrupted run this one resumes (its finished calls are reused), if any.
    resumed_from: str | None = None
    #: Process running the plan; a run left "running" by a dead process was interrupted.
    pid: int | None = None
    #: The run this one was forked from, and the node the fork starts at (run control).
    forked_from: str | None = None
    forked_at_node: str | None = None


@dataclass(frozen=True)
class NodeStarted:
    run_id: str
    node_id: str
    title: str
    model: str
    started_at: datetime


@dataclass(frozen=True)
class ModelCallFinished:
    run_id: str
    node_id: str
    call_id: str
    model: str
    prompt: str  # the rendered messages, as JSON
    output: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    status: str  # "ok" | "error" | "cancelled"
    error: str | None
    started_at: datetime
    finished_at: datetime
    sample_index: int = 0
    seed: int | None = None
    #: Identity of the call (rendered prompt, model, parameters, seed, sample index); a later run
    #: with the same key reuses this call's output instead of calling the model.
    cache_key: str | None = None
    cost_usd: float = 0.0
    finish_reason: str | None = None  # "stop" | "length" | None
    #: What the call was for: answer (a single call) | sample | judge | critique | revise.
    role: str = "answer"
    #: The selector's or judge's score of this sample (best-of-N), if any.
    score: float | None = None
    #: The normalised answer this sample voted for (self-consistency), if any.
    vote: str | None = None
    #: Whether this sample became the node's output (sampling strategies).
    selected: bool | None = None
    #: Run whose recorded call was replayed instead of calling the model (tokens are then 0).
    reused_from: str | None = None


@dataclass(frozen=True)
class NodeProgress:
    """Text a running node has streamed so far; emitted a few times a second, never traced."""

    run_id: str
    node_id: str
    text: str


@dataclass(frozen=True)
class NodeFinished:
    run_id: str
    node_id: str
    title: str
    status: str  # "done" | "failed" | "blocked" | "skipped" | "cancelled"
    output: str
    error: str | None
    input_tokens: int
    output_tokens: int
    started_at: datetime | None
    finished_at: datetime
    model: str | None = None
    #: Run whose cached calls gave this node its output (no model was called), if any.
    reused_from: str | None = None
    cost_usd: float = 0.0
    #: Strategy label, e.g. "self-consistency vote ×5".
    strategy: str | None = None
    #: Samples drawn by a sampling strategy.
    samples: int | None = None
    #: Leader's share of the votes among the samples (1.0 = all agree).
    agreement: float | None = None
    #: Tokens and dollars the node was allowed when it started.
    token_cap: int | None = None
    cost_cap_usd: float | None = None
    #: Why sampling or refining stopped where it did, budget notes.
    note: str | None = None
    #: Why the output does not look like an answer (an echo of the prompt, a loop, cut off at
    #: the token limit, the wrong language; ``engine.output_check``); None when it looks fine.
    suspect: str | None = None
    #: The output is the analyst's pinned (or edited) text; no model was called for it.
    pinned: bool = False


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    #: "completed" | "suspect" | "stopped" | "failed" | "cancelled". "suspect": the root finished
    #: (the answer is there) but some node's output failed the output check; ``stop_reason``
    #: then names them. Treat it as finished, with a warning.
    status: str
    stop_reason: str | None
    answer: str | None
    input_tokens: int
    output_tokens: int
    finished_at: datetime
    cost_usd: float = 0.0
    reused_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetUpdate:
    """Spent against allowed, for the live meter; emitted as nodes finish, never traced."""

    run_id: str
    tokens_used: int
    tokens_allowed: int
    cost_used_usd: float
    cost_allowed_usd: float | None
    elapsed_s: float
    time_allowed_s: float | None


@dataclass(frozen=True)
class RunPaused:
    """The run stopped at a breakpoint and waits for the analyst (``engine.run.control``)."""

    run_id: str
    node_id: str
    title: str
    when: str  # "before" | "after"
    reason: str  # "breakpoint" | "step"
    #: The node's inputs (its dependencies' and children's outputs) by node id.
    inputs: dict[str, str]
    prompt: str | None
    output: str | None
    paused_at: datetime


@dataclass(frozen=True)
class RunContinued:
    """The analyst answered a pause; the run goes on (``action``: continue, step, skip)."""

    run_id: str
    node_id: str
    action: str


@dataclass(frozen=True)
class RunEdited:
    """The analyst changed a node during (or for) this run; ``edits_json`` is every edit of
    the run so far (a JSON list of {node_id, field, old, new, source}), ``plan_json`` the plan
    the run now executes."""

    run_id: str
    node_id: str
    field: str
    edits_json: str
    plan_json: str


Event = (
    RunStarted
    | NodeStarted
    | ModelCallFinished
    | NodeProgress
    | NodeFinished
    | BudgetUpdate
    | RunFinished
    | RunPaused
    | RunContinued
    | RunEdited
)


class Listener(Protocol):
    def __call__(self, event: Event) -> None: ...
