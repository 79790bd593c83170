"""Events a run emits. The trace writer and the UI both consume them; neither drives the run.

All events of one run are emitted from the coordinating thread, in order, so a listener needs
no locking of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    session_id: str | None
    task: str
    plan_json: str
    caps_json: str
    started_at: datetime


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
    status: str  # "ok" | "error"
    error: str | None
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class NodeFinished:
    run_id: str
    node_id: str
    title: str
    status: str  # "done" | "failed" | "blocked" | "skipped"
    output: str
    error: str | None
    input_tokens: int
    output_tokens: int
    started_at: datetime | None
    finished_at: datetime


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str  # "completed" | "stopped" | "failed" | "cancelled"
    stop_reason: str | None
    answer: str | None
    input_tokens: int
    output_tokens: int
    finished_at: datetime


Event = RunStarted | NodeStarted | ModelCallFinished | NodeFinished | RunFinished


class Listener(Protocol):
    def __call__(self, event: Event) -> None: ...
