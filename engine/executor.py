"""Runs a plan: dependency order, independent nodes concurrently, within the run's caps.

The coordinating thread owns the ``Scheduler`` and emits every event; worker threads only call
models. Calls to one local model still queue on that model's lock, so parallelism pays off across
models and remote endpoints.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine.backends import Backend, backend_for
from engine.budget import RunCaps, TokenBudget
from engine.errors import ArborError
from engine.events import (
    Event,
    Listener,
    ModelCallFinished,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from engine.plan import ModelRef, Node, Plan
from engine.prompts import node_messages
from engine.scheduler import NodeStatus, Scheduler

# Chat templates add a few tokens per message that plain tokenisation of the text misses.
TEMPLATE_TOKENS_PER_MESSAGE = 8


def _now() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    return f"run-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class NodeResult:
    node_id: str
    status: NodeStatus
    output: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class _Outcome:
    node_id: str
    started_at: datetime
    call: ModelCallFinished | None
    error: str | None
    budget_exhausted: bool = False


BackendFactory = Callable[[ModelRef], Backend]


class _Run:
    def __init__(
        self,
        plan: Plan,
        caps: RunCaps,
        listeners: Iterable[Listener],
        backend_factory: BackendFactory,
        run_id: str,
        cancel: threading.Event,
    ):
        self.plan = plan
        self.caps = caps
        self.listeners = list(listeners)
        self.backend_factory = backend_factory
        self.run_id = run_id
        self.cancel = cancel
        self.budget = TokenBudget(caps.total_tokens)
        self.nodes = plan.nodes()
        self.outputs: dict[str, str] = {}
        self.results: dict[str, NodeResult] = {}
        self.warnings: list[str] = []
        self._backends: dict[str, Backend] = {}
        self._backends_lock = threading.Lock()

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

    def backend(self, ref: ModelRef) -> Backend:
        key = ref.model_dump_json()
        with self._backends_lock:
            if key not in self._backends:
                self._backends[key] = self.backend_factory(ref)
            return self._backends[key]

    # -- worker side -----------------------------------------------------------------------
    def run_node(self, node: Node, outputs: dict[str, str]) -> _Outcome:
        started = _now()
        ref = self.plan.model_for(node)
        try:
            backend = self.backend(ref)
            messages = node_messages(self.plan, node, outputs)
            prompt_text = "\n".join(message["content"] for message in messages)
            prompt_estimate = backend.count_tokens(prompt_text) + TEMPLATE_TOKENS_PER_MESSAGE * (
                len(messages) + 1
            )
        except ArborError as exc:
            return _Outcome(node.id, started, None, str(exc))
        except Exception as exc:  # a backend bug must fail this node, not the run
            return _Outcome(node.id, started, None, f"{type(exc).__name__}: {exc}")
        generation = self.plan.generation_for(node)
        wanted = min(generation.max_tokens, self.caps.max_tokens_per_node)
        granted = self.budget.reserve_call(prompt_estimate, wanted)
        if granted is None:
            return _Outcome(node.id, started, None, None, budget_exhausted=True)
        call_started = _now()
        prompt_json = json.dumps(messages, ensure_ascii=False)
        try:
            completion = backend.complete(
                messages, generation.model_copy(update={"max_tokens": granted})
            )
        except Exception as exc:  # any backend failure fails this node, never the whole run
            self.budget.settle(prompt_estimate + granted, 0)
            error = str(exc) if isinstance(exc, ArborError) else f"{type(exc).__name__}: {exc}"
            call = ModelCallFinished(
                run_id=self.run_id,
                node_id=node.id,
                call_id=uuid.uuid4().hex,
                model=backend.label,
                prompt=prompt_json,
                output="",
                input_tokens=0,
                output_tokens=0,
                latency_s=(_now() - call_started).total_seconds(),
                status="error",
                error=error,
                started_at=call_started,
                finished_at=_now(),
            )
            return _Outcome(node.id, started, call, error)
        self.budget.settle(prompt_estimate + granted, completion.usage.total)
        call = ModelCallFinished(
            run_id=self.run_id,
            node_id=node.id,
            call_id=uuid.uuid4().hex,
            model=completion.model,
            prompt=prompt_json,
            output=completion.text,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            latency_s=completion.latency_s,
            status="ok",
            error=None,
            started_at=call_started,
            finished_at=_now(),
        )
        error = None if completion.text.strip() else "the model returned an empty answer"
        return _Outcome(node.id, started, call, error)

    # -- coordinator side ------------------------------------------------------------------
    def execute(self, session_id: str | None) -> RunResult:
        order = self.plan.execution_order()
        scheduler = Scheduler(self.plan.execution_graph(), order)
        self.emit(
            RunStarted(
                run_id=self.run_id,
                session_id=session_id,
                task=self.plan.task,
                plan_json=self.plan.to_json(indent=None),
                caps_json=self.caps.model_dump_json(),
                started_at=_now(),
            )
        )
        stop: tuple[str, str] | None = None  # (run status, reason) once the run must stop
        running: dict[Future[_Outcome], str] = {}
        with ThreadPoolExecutor(self.caps.max_parallel, thread_name_prefix="arbor-node") as pool:
            while not scheduler.finished:
                if stop is None and self.cancel.is_set():
                    stop = ("cancelled", "cancelled by the user")
                if stop is not None:
                    self._record_unrun(scheduler, scheduler.skip_pending(stop[1]))
                else:
                    for node_id in scheduler.ready()[: self.caps.max_parallel - len(running)]:
                        running[self._start(scheduler, pool, node_id)] = node_id
                if not running:
                    continue  # everything left was just skipped; the loop condition ends it
                done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    outcome = future.result()
                    if outcome.budget_exhausted:
                        scheduler.requeue(outcome.node_id)
                        stop = stop or ("stopped", self._cap_reason(outcome.node_id))
                    else:
                        self._finish_node(scheduler, outcome)
        return self._finish_run(scheduler, stop)

    def _start(self, scheduler: Scheduler, pool: ThreadPoolExecutor, node_id: str) -> Future:
        scheduler.start(node_id)
        node = self.nodes[node_id]
        self.emit(
            NodeStarted(
                run_id=self.run_id,
                node_id=node_id,
                title=node.title,
                model=self.plan.model_for(node).label,
                started_at=_now(),
            )
        )
        return pool.submit(self.run_node, node, dict(self.outputs))

    def _cap_reason(self, node_id: str) -> str:
        return (
            f"token cap reached: {self.budget.used} of {self.caps.total_tokens} tokens used, "
            f"not enough left for node {node_id!r} ({self.nodes[node_id].title})"
        )

    def _finish_node(self, scheduler: Scheduler, outcome: _Outcome) -> None:
        node = self.nodes[outcome.node_id]
        call = outcome.call
        if call is not None:
            self.emit(call)
        tokens_in = call.input_tokens if call else 0
        tokens_out = call.output_tokens if call else 0
        if outcome.error is None and call is not None:
            scheduler.finish(node.id)
            self.outputs[node.id] = call.output
            result = NodeResult(node.id, NodeStatus.DONE, call.output, None, tokens_in, tokens_out)
        else:
            blocked = scheduler.fail(node.id, outcome.error or "failed")
            result = NodeResult(
                node.id, NodeStatus.FAILED, "", outcome.error, tokens_in, tokens_out
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
                finished_at=_now(),
            )
        )
        if result.status is NodeStatus.FAILED:
            self._record_unrun(scheduler, blocked)

    def _record_unrun(self, scheduler: Scheduler, node_ids: list[str]) -> None:
        """Record nodes that never ran (blocked or skipped) and tell the listeners."""
        for node_id in node_ids:
            status = scheduler.status[node_id]
            reason = scheduler.reasons.get(node_id)
            self.results[node_id] = NodeResult(node_id, status, error=reason)
            self.emit(
                NodeFinished(
                    run_id=self.run_id,
                    node_id=node_id,
                    title=self.nodes[node_id].title,
                    status=status.value,
                    output="",
                    error=reason,
                    input_tokens=0,
                    output_tokens=0,
                    started_at=None,
                    finished_at=_now(),
                )
            )

    def _finish_run(self, scheduler: Scheduler, stop: tuple[str, str] | None) -> RunResult:
        root = self.plan.root.id
        answer = self.outputs.get(root)
        if stop is not None:
            status, reason = stop
        elif scheduler.status[root] is NodeStatus.DONE:
            status, reason = "completed", None
        else:
            failed = [n for n, s in scheduler.status.items() if s is NodeStatus.FAILED]
            status = "failed"
            reason = "; ".join(f"{n}: {scheduler.reasons.get(n)}" for n in failed) or "no answer"
        result = RunResult(
            run_id=self.run_id,
            status=status,
            answer=answer,
            stop_reason=reason,
            nodes=self.results,
            warnings=self.warnings,
            input_tokens=sum(r.input_tokens for r in self.results.values()),
            output_tokens=sum(r.output_tokens for r in self.results.values()),
        )
        self.emit(
            RunFinished(
                run_id=self.run_id,
                status=status,
                stop_reason=reason,
                answer=answer,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                finished_at=_now(),
            )
        )
        return result


def execute_plan(
    plan: Plan,
    caps: RunCaps | None = None,
    *,
    listeners: Iterable[Listener] = (),
    backend_factory: BackendFactory = backend_for,
    run_id: str | None = None,
    session_id: str | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run ``plan`` to completion, a cap, a cancel or a failure; never raises for model errors.

    Raises ``PlanError`` before anything runs if the plan is invalid. Node failures are recorded
    in the result (the failed node's dependants are blocked; independent branches go on).
    """
    plan.validate_graph()
    run = _Run(
        plan,
        caps or RunCaps(),
        listeners,
        backend_factory,
        run_id or new_run_id(),
        cancel or threading.Event(),
    )
    return run.execute(session_id)


__all__ = ["NodeResult", "RunResult", "execute_plan", "new_run_id"]
