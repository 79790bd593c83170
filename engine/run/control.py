"""Run control: pinned outputs, breakpoints, step mode and forked reuse, as one run option.

``RunControl`` is what an analyst debugging a plan adds to a run:

- ``pins``: node id -> text. A pinned node calls no model; its output is the text, and its
  dependants' prompts contain it (held fixed to test what is downstream of it).
- ``break_before`` / ``break_after`` / ``step``: the run pauses before (or after) those nodes,
  or before every ready node in step mode. At a pause the coordinator stops starting nodes,
  lets running ones finish, stops the caps' clock and asks ``controller`` what to do.
  Without a controller (or when it answers None: nobody is there to ask) the run ends with
  status ``paused``; resuming it reuses every finished node.
- ``reuse``: node id -> a recorded call of another run, taken as the node's output without
  any lookup or call (a fork takes everything not downstream of the fork point this way).
- ``edits``: edits made before the run started (a resume with an edited instruction), recorded
  in the trace with the run.

Pins are a run option rather than a field of the plan: a plan file stays the plan, and what
the analyst holds fixed while debugging is kept in the session (and recorded per run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from engine.run.call_cache import CachedCall

#: Where a pause happens relative to its node.
PauseWhen = Literal["before", "after"]
#: What the analyst decides at a pause.
PauseAction = Literal["continue", "step", "skip", "cancel"]
PAUSE_ACTIONS: tuple[PauseAction, ...] = ("continue", "step", "skip", "cancel")

#: The run status of a run that ended at a pause nobody answered.
PAUSED = "paused"
SKIPPED_BY_ANALYST = "skipped by the analyst at a breakpoint"
CANCELLED_AT_PAUSE = "cancelled by the user at a breakpoint"


@dataclass(frozen=True)
class Pause:
    """What the run shows at a breakpoint."""

    run_id: str
    node_id: str
    title: str
    when: PauseWhen
    #: Why it paused: "breakpoint" or "step".
    reason: str
    #: The node's inputs: its dependencies' and children's outputs, by node id.
    inputs: dict[str, str]
    #: The rendered prompt, as text (before); the node's output (after).
    prompt: str | None = None
    output: str | None = None
    instruction: str = ""


@dataclass(frozen=True)
class Decision:
    """The analyst's answer to a ``Pause``.

    ``instruction`` and ``prompt`` edit the node before it runs (a new instruction is rendered
    again; an edited prompt replaces the text of the node's last message). ``output`` sets the
    node's output: before it runs, like a pin (no call); after, it replaces what it produced.
    """

    action: PauseAction = "continue"
    instruction: str | None = None
    prompt: str | None = None
    output: str | None = None


class PauseController(Protocol):
    def decide(self, pause: Pause) -> Decision | None:
        """Block until the analyst decides; None: nobody can answer, the run ends paused."""
        ...


@dataclass(frozen=True)
class RunEdit:
    """One change the analyst made to a run: which node, which field, from what to what."""

    node_id: str
    field: str  # "instruction" | "prompt" | "output" | "skip"
    old: str | None
    new: str | None
    #: Where it was made: "pause" (at a breakpoint), "resume", "fork".
    source: str = "pause"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "node_id": self.node_id,
            "field": self.field,
            "old": self.old,
            "new": self.new,
            "source": self.source,
        }


@dataclass
class RunControl:
    """Pins, breakpoints, step mode and forked reuse for one run (see the module docstring)."""

    pins: dict[str, str] = field(default_factory=dict)
    break_before: set[str] = field(default_factory=set)
    break_after: set[str] = field(default_factory=set)
    step: bool = False
    controller: PauseController | None = None
    reuse: dict[str, CachedCall] = field(default_factory=dict)
    edits: list[RunEdit] = field(default_factory=list)
    forked_from: str | None = None
    forked_at_node: str | None = None

    def node_ids(self) -> set[str]:
        """Every node id this control names (checked against the plan before a run)."""
        return set(self.pins) | self.break_before | self.break_after | set(self.reuse)


__all__ = [
    "CANCELLED_AT_PAUSE",
    "PAUSED",
    "PAUSE_ACTIONS",
    "SKIPPED_BY_ANALYST",
    "Decision",
    "Pause",
    "PauseAction",
    "PauseController",
    "PauseWhen",
    "RunControl",
    "RunEdit",
]
