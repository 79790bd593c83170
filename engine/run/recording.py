"""What a run tells its listeners and returns: events, node results and the run's result.

``Recorder`` is used by the coordinating thread only. It emits every event (a failing listener
becomes a warning in the result, never a failed run) and builds each node's ``NodeResult`` and,
at the end, the ``RunResult``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.models import Usage
from engine.plan import Node
from engine.run.budget import Meter, RunCaps
from engine.run.call_cache import CachedCall
from engine.run.control import Pause, RunEdit
from engine.run.events import (
    BudgetUpdate,
    Event,
    Listener,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunContinued,
    RunEdited,
    RunFinished,
    RunPaused,
    RunStarted,
    is_answered,
)
from engine.run.node_runner import Outcome, Prepared, now
from engine.run.scheduler import NodeStatus


@dataclass
class NodeResult:
    node_id: str
    status: NodeStatus
    output: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: The run whose recorded call gave this node its output, when nothing was called.
    reused_from: str | None = None
    #: What the node's replayed (cached) calls cost when they were first made.
    replayed_tokens: int = 0
    replayed_cost_usd: float = 0.0
    #: Why the output does not look like an answer (``engine.output_check``), if so.
    suspect: str | None = None
    #: The output is the analyst's pinned (or edited) text: no model was called for it.
    pinned: bool = False


@dataclass
class RunResult:
    run_id: str
    status: str
    answer: str | None
    stop_reason: str | None
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    #: Problems that did not stop the run, e.g. a listener that could not write a trace.
    warnings: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    resumed_from: str | None = None
    #: Wall-clock seconds from start to finish (time spent paused at breakpoints excluded).
    wall_s: float = 0.0
    #: The node a "paused" run stopped at, and the edits the analyst made during the run.
    paused_node: str | None = None
    edits: list[RunEdit] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def answered(self) -> bool:
        """The root finished: "completed", or "suspect" (an answer, with a warning)."""
        return is_answered(self.status)

    @property
    def suspects(self) -> dict[str, str]:
        """Nodes whose output failed the output check, with the reason."""
        return {n: r.suspect for n, r in self.nodes.items() if r.suspect}

    @property
    def attempt_tokens(self) -> int:
        """Tokens this answer cost, counting replayed calls at what they cost when made."""
        return self.total_tokens + sum(r.replayed_tokens for r in self.nodes.values())

    @property
    def attempt_cost_usd(self) -> float:
        """Dollars this answer cost, counting replayed calls at what they cost when made."""
        return self.cost_usd + sum(r.replayed_cost_usd for r in self.nodes.values())

    @property
    def replayed(self) -> bool:
        """Every node's output came from recorded calls: no model was called."""
        return bool(self.nodes) and all(r.reused_from for r in self.nodes.values())

    @property
    def reused(self) -> list[str]:
        """Nodes whose output came from the cache."""
        return [n for n, r in self.nodes.items() if r.reused_from is not None]

    @property
    def pinned(self) -> list[str]:
        """Nodes whose output the analyst gave (pinned or edited): no model was called."""
        return [n for n, r in self.nodes.items() if r.pinned]

    @property
    def executed(self) -> list[str]:
        """Nodes that called a model in this run (whatever the outcome)."""
        return [
            n
            for n, r in self.nodes.items()
            if r.reused_from is None
            and not r.pinned
            and r.status in (NodeStatus.DONE, NodeStatus.FAILED, NodeStatus.CANCELLED)
        ]


class Recorder:
    """Emits a run's events and keeps its node results and warnings."""

    def __init__(self, run_id: str, listeners: Iterable[Listener], caps: RunCaps):
        self.run_id = run_id
        self.listeners = list(listeners)
        self.caps = caps
        self.results: dict[str, NodeResult] = {}
        self.warnings: list[str] = []
        self._progress_sent: dict[str, str] = {}

    def emit(self, event: Event) -> None:
        """Tell every listener. A failing listener (say, a trace store that stays locked) is
        reported in the result's ``warnings``; it does not stop the run or the other listeners.
        """
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:
                warning = f"{type(exc).__name__} in {type(listener).__name__}: {exc}"
                if warning not in self.warnings:
                    self.warnings.append(warning)

    def run_started(
        self,
        session_id: str | None,
        task: str,
        plan_json: str,
        resumed_from: str | None,
        forked_from: str | None = None,
        forked_at_node: str | None = None,
    ) -> None:
        self.emit(
            RunStarted(
                run_id=self.run_id,
                session_id=session_id,
                task=task,
                plan_json=plan_json,
                caps_json=self.caps.model_dump_json(),
                started_at=now(),
                resumed_from=resumed_from,
                pid=os.getpid(),
                forked_from=forked_from,
                forked_at_node=forked_at_node,
            )
        )

    def pinned(self, node: Node, output: str, model: str | None, note: str) -> None:
        """A node whose output the analyst gave: nothing was called."""
        self.results[node.id] = NodeResult(node.id, NodeStatus.DONE, output, pinned=True)
        self.emit(
            NodeFinished(
                run_id=self.run_id,
                node_id=node.id,
                title=node.title,
                status=NodeStatus.DONE.value,
                output=output,
                error=None,
                input_tokens=0,
                output_tokens=0,
                started_at=None,
                finished_at=now(),
                model=model,
                note=note,
                pinned=True,
            )
        )

    def paused(self, pause: Pause) -> None:
        self.emit(
            RunPaused(
                run_id=self.run_id,
                node_id=pause.node_id,
                title=pause.title,
                when=pause.when,
                reason=pause.reason,
                inputs=dict(pause.inputs),
                prompt=pause.prompt,
                output=pause.output,
                paused_at=now(),
            )
        )

    def continued(self, node_id: str, action: str) -> None:
        self.emit(RunContinued(self.run_id, node_id, action))

    def edited(self, edit: RunEdit, edits: list[RunEdit], plan_json: str) -> None:
        """Record one edit; the event carries every edit of the run so far."""
        self.emit(
            RunEdited(
                run_id=self.run_id,
                node_id=edit.node_id,
                field=edit.field,
                edits_json=json.dumps([e.as_dict() for e in edits], ensure_ascii=False),
                plan_json=plan_json,
            )
        )

    def node_started(self, node: Node, model: str) -> None:
        self.emit(
            NodeStarted(
                run_id=self.run_id,
                node_id=node.id,
                title=node.title,
                model=model,
                started_at=now(),
            )
        )

    def progress(self, node_id: str, text: str) -> None:
        """Pass on a running node's streamed text, unless it was passed on already."""
        if text and text != self._progress_sent.get(node_id):
            self._progress_sent[node_id] = text
            self.emit(NodeProgress(self.run_id, node_id, text))

    def budget(self, meter: Meter, elapsed_s: float) -> None:
        self.emit(
            BudgetUpdate(
                run_id=self.run_id,
                tokens_used=meter.used,
                tokens_allowed=self.caps.total_tokens,
                cost_used_usd=meter.cost_used,
                cost_allowed_usd=self.caps.total_cost_usd,
                elapsed_s=elapsed_s,
                time_allowed_s=self.caps.wall_time_s,
            )
        )

    def calls(self, outcome: Outcome) -> None:
        """The node's calls, one event each (also those made before a budget ran out)."""
        for record in outcome.records:
            self.emit(record.to_event(self.run_id, outcome.node_id))

    def reused(self, prepared: Prepared, hit: CachedCall, suspect: str | None = None) -> None:
        """A node whose output is a recorded call's: nothing was called."""
        node = prepared.node
        usage = Usage(hit.input_tokens, hit.output_tokens)
        self.results[node.id] = NodeResult(
            node.id,
            NodeStatus.DONE,
            hit.output,
            reused_from=hit.run_id,
            replayed_tokens=usage.total,
            replayed_cost_usd=prepared.backend.cost(usage) if prepared.backend else 0.0,
            suspect=suspect,
        )
        self.emit(
            NodeFinished(
                run_id=self.run_id,
                node_id=node.id,
                title=node.title,
                status=NodeStatus.DONE.value,
                output=hit.output,
                error=None,
                input_tokens=0,
                output_tokens=0,
                started_at=None,
                finished_at=now(),
                model=prepared.backend.label if prepared.backend else None,
                reused_from=hit.run_id,
                strategy=prepared.allocation.strategy.label,
                suspect=suspect,
            )
        )

    def node_finished(
        self, node: Node, status: NodeStatus, outcome: Outcome, prepared: Prepared | None
    ) -> None:
        """A node that ran (or failed before it could), once its status is decided."""
        records = outcome.records
        tokens_in = sum(r.input_tokens for r in records)
        tokens_out = sum(r.output_tokens for r in records)
        cost = sum(r.cost_usd for r in records)
        found = outcome.result
        output = found.output if status is NodeStatus.DONE and found is not None else ""
        replayed = [r for r in records if r.reused_from]
        reused_from = replayed[0].reused_from if records and len(replayed) == len(records) else None
        result = NodeResult(
            node.id,
            status,
            output,
            outcome.error,
            tokens_in,
            tokens_out,
            cost_usd=cost,
            reused_from=reused_from if status is NodeStatus.DONE else None,
            replayed_tokens=sum(r.replayed_tokens for r in replayed),
            replayed_cost_usd=sum(r.replayed_cost_usd for r in replayed),
            suspect=outcome.suspect if status is NodeStatus.DONE else None,
        )
        self.results[node.id] = result
        self.emit(
            NodeFinished(
                run_id=self.run_id,
                node_id=node.id,
                title=node.title,
                status=result.status.value,
                output=result.output,
                error=result.error,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                started_at=outcome.started_at,
                finished_at=now(),
                model=prepared.backend.label if prepared and prepared.backend else None,
                reused_from=result.reused_from,
                cost_usd=cost,
                strategy=prepared.allocation.strategy.label if prepared else None,
                samples=found.samples if found else None,
                agreement=found.agreement if found else None,
                token_cap=outcome.token_cap,
                cost_cap_usd=outcome.cost_cap_usd,
                note=found.note if found else None,
                suspect=result.suspect,
            )
        )

    def unrun(self, node_id: str, title: str, status: NodeStatus, reason: str | None) -> None:
        """A node that never ran (blocked or skipped)."""
        self.results[node_id] = NodeResult(node_id, status, error=reason)
        self.emit(
            NodeFinished(
                run_id=self.run_id,
                node_id=node_id,
                title=title,
                status=status.value,
                output="",
                error=reason,
                input_tokens=0,
                output_tokens=0,
                started_at=None,
                finished_at=now(),
            )
        )

    def run_finished(
        self,
        status: str,
        reason: str | None,
        answer: str | None,
        resumed_from: str | None,
        wall_s: float,
        paused_node: str | None = None,
        edits: Iterable[RunEdit] = (),
    ) -> RunResult:
        results = self.results
        result = RunResult(
            run_id=self.run_id,
            status=status,
            answer=answer,
            stop_reason=reason,
            nodes=results,
            warnings=self.warnings,
            input_tokens=sum(r.input_tokens for r in results.values()),
            output_tokens=sum(r.output_tokens for r in results.values()),
            cost_usd=sum(r.cost_usd for r in results.values()),
            resumed_from=resumed_from,
            wall_s=wall_s,
            paused_node=paused_node,
            edits=list(edits),
        )
        self.emit(
            RunFinished(
                run_id=self.run_id,
                status=status,
                stop_reason=reason,
                answer=answer,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                finished_at=now(),
                cost_usd=result.cost_usd,
                reused_nodes=tuple(result.reused),
            )
        )
        return result


__all__ = ["NodeResult", "Recorder", "RunResult"]
