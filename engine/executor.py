"""Runs a plan: dependency order, independent nodes concurrently, within the run's caps.

The coordinating thread owns the ``Scheduler`` and emits every event; worker threads only call
models. Concurrency has two limits: the run's ``max_parallel`` and, per backend resource (one
loaded GGUF file, one endpoint), the backend's ``max_concurrent`` slots. A node whose resource is
busy waits without holding a worker, so nodes on other models go ahead.

Before a call, its key (rendered prompt, model, parameters, seed, sample index) is looked up in
the call cache: a hit reuses the recorded output and no model is called. Only nodes whose
upstream nodes were all reused are looked up, so after an edit exactly the changed nodes and
everything downstream of them run again; nodes named in ``rerun`` count as changed.
Cancelling sets an event the backends watch between tokens, so running calls stop promptly.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import networkx as nx

from engine.backends import Backend, ChatMessage, backend_for
from engine.budget import RunCaps, TokenBudget
from engine.call_cache import CachedCall, CallCache, call_cache_key
from engine.errors import ArborError, CallCancelled
from engine.events import (
    Event,
    Listener,
    ModelCallFinished,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.prompts import node_messages
from engine.scheduler import NodeStatus, Scheduler

# Chat templates add a few tokens per message that plain tokenisation of the text misses.
TEMPLATE_TOKENS_PER_MESSAGE = 8
#: How often running nodes' streamed text is passed on as ``NodeProgress``.
PROGRESS_INTERVAL_S = 0.3
#: How long a cancel waits for running calls to stop before recording them as abandoned.
CANCEL_GRACE_S = 3.0
CANCELLED_BY_USER = "cancelled by the user"


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
    cost_usd: float = 0.0
    #: The run whose recorded call gave this node its output, when nothing was called.
    reused_from: str | None = None


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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def reused(self) -> list[str]:
        """Nodes whose output came from the cache."""
        return [n for n, r in self.nodes.items() if r.reused_from is not None]

    @property
    def executed(self) -> list[str]:
        """Nodes that called a model in this run (whatever the outcome)."""
        return [
            n
            for n, r in self.nodes.items()
            if r.reused_from is None
            and r.status in (NodeStatus.DONE, NodeStatus.FAILED, NodeStatus.CANCELLED)
        ]


@dataclass
class _Prepared:
    """A ready node with everything its call needs, computed once by the coordinator."""

    node: Node
    ref: ModelRef | None = None
    backend: Backend | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    generation: GenerationConfig | None = None
    cache_key: str | None = None
    error: str | None = None  # preparing failed: a bad template, a backend that cannot exist


@dataclass
class _Outcome:
    node_id: str
    started_at: datetime
    call: ModelCallFinished | None
    error: str | None
    budget_exhausted: bool = False
    cancelled: bool = False


BackendFactory = Callable[[ModelRef], Backend]


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ArborError) else f"{type(exc).__name__}: {exc}"


class _Run:
    def __init__(
        self,
        plan: Plan,
        caps: RunCaps,
        listeners: Iterable[Listener],
        backend_factory: BackendFactory,
        run_id: str,
        cancel: threading.Event,
        cache: CallCache | None,
        rerun: Iterable[str],
        resumed_from: str | None,
    ):
        self.plan = plan
        self.caps = caps
        self.listeners = list(listeners)
        self.backend_factory = backend_factory
        self.run_id = run_id
        self.cancel = cancel
        self.cache = cache
        self.rerun = list(rerun)
        self.resumed_from = resumed_from
        self.budget = TokenBudget(caps.total_tokens)
        self.nodes = plan.nodes()
        self.outputs: dict[str, str] = {}
        self.results: dict[str, NodeResult] = {}
        self.warnings: list[str] = []
        self._backends: dict[str, Backend] = {}
        self._prepared: dict[str, _Prepared] = {}
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._partials: dict[str, list[str]] = {}
        self._progress_sent: dict[str, int] = {}
        self._running: dict[str, _Prepared] = {}
        self._slots_in_use: Counter[str] = Counter()

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
        if key not in self._backends:
            self._backends[key] = self.backend_factory(ref)
        return self._backends[key]

    # -- coordinator: preparing ------------------------------------------------------------
    def prepare(self, node: Node) -> _Prepared:
        """Messages, backend and cache key of a node whose inputs are all final."""
        prepared = _Prepared(node)
        try:
            prepared.ref = self.plan.model_for(node)
            prepared.backend = self.backend(prepared.ref)
            prepared.messages = node_messages(self.plan, node, self.outputs, self.nodes)
        except Exception as exc:  # a backend bug must fail this node, not the run
            prepared.error = _error_text(exc)
            return prepared
        generation = self.plan.generation_for(node)
        wanted = min(generation.max_tokens, self.caps.max_tokens_per_node)
        prepared.generation = generation.model_copy(update={"max_tokens": wanted})
        prepared.cache_key = call_cache_key(prepared.messages, prepared.ref, prepared.generation)
        return prepared

    # -- worker side -----------------------------------------------------------------------
    def run_node(self, prepared: _Prepared) -> None:
        try:
            outcome = self._call(prepared)
        except Exception as exc:  # never lose an outcome: the coordinator waits for it
            outcome = _Outcome(prepared.node.id, _now(), None, _error_text(exc))
        self._outcomes.put(outcome)

    def _call(self, prepared: _Prepared) -> _Outcome:
        node, backend, generation = prepared.node, prepared.backend, prepared.generation
        assert backend is not None and generation is not None
        started = _now()
        messages = prepared.messages
        try:
            prompt_text = "\n".join(message["content"] for message in messages)
            prompt_estimate = backend.count_tokens(prompt_text) + TEMPLATE_TOKENS_PER_MESSAGE * (
                len(messages) + 1
            )
        except Exception as exc:
            return _Outcome(node.id, started, None, _error_text(exc))
        granted = self.budget.reserve_call(prompt_estimate, generation.max_tokens)
        if granted is None:
            return _Outcome(node.id, started, None, None, budget_exhausted=True)
        config = generation.model_copy(update={"max_tokens": granted})
        parts = self._partials.setdefault(node.id, [])
        call_started = _now()
        clock = time.perf_counter()

        def failed_call(status: str, error: str, partial: str = "") -> ModelCallFinished:
            return ModelCallFinished(
                run_id=self.run_id,
                node_id=node.id,
                call_id=uuid.uuid4().hex,
                model=backend.label,
                prompt=self._prompt_json(messages),
                output=partial,
                input_tokens=0,
                output_tokens=0,
                latency_s=time.perf_counter() - clock,
                status=status,
                error=error,
                started_at=call_started,
                finished_at=_now(),
                seed=config.seed,
            )

        try:
            completion = backend.complete(
                messages, config, on_token=parts.append, cancel=self.cancel
            )
        except CallCancelled as exc:
            self.budget.settle(prompt_estimate + granted, 0)
            call = failed_call("cancelled", CANCELLED_BY_USER, exc.partial or "".join(parts))
            return _Outcome(node.id, started, call, CANCELLED_BY_USER, cancelled=True)
        except Exception as exc:  # any backend failure fails this node, never the whole run
            self.budget.settle(prompt_estimate + granted, 0)
            error = _error_text(exc)
            return _Outcome(node.id, started, failed_call("error", error), error)
        self.budget.settle(prompt_estimate + granted, completion.usage.total)
        error = None if completion.text.strip() else "the model returned an empty answer"
        # Only a call made with the parameters the key names, that gave an answer, is reusable.
        reusable = error is None and granted == generation.max_tokens
        call = ModelCallFinished(
            run_id=self.run_id,
            node_id=node.id,
            call_id=uuid.uuid4().hex,
            model=completion.model,
            prompt=self._prompt_json(messages),
            output=completion.text,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            latency_s=completion.latency_s,
            status="ok",
            error=None,
            started_at=call_started,
            finished_at=_now(),
            seed=config.seed,
            cache_key=prepared.cache_key if reusable else None,
            cost_usd=backend.cost(completion.usage),
            finish_reason=completion.finish_reason,
        )
        return _Outcome(node.id, started, call, error)

    @staticmethod
    def _prompt_json(messages: list[ChatMessage]) -> str:
        return json.dumps(messages, ensure_ascii=False)

    # -- coordinator side ------------------------------------------------------------------
    def execute(self, session_id: str | None, graph: nx.DiGraph) -> RunResult:
        position = {node_id: index for index, node_id in enumerate(self.nodes)}
        order = list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
        scheduler = Scheduler(graph, order)
        forced: set[str] = set()
        for node_id in self.rerun:
            if node_id not in self.nodes:
                raise ArborError(f"Cannot re-run from {node_id!r}: no such node in the plan.")
            forced |= {node_id} | nx.descendants(graph, node_id)
        self.emit(
            RunStarted(
                run_id=self.run_id,
                session_id=session_id,
                task=self.plan.task,
                plan_json=self.plan.to_json(indent=None),
                caps_json=self.caps.model_dump_json(),
                started_at=_now(),
                resumed_from=self.resumed_from,
                pid=os.getpid(),
            )
        )
        pool = ThreadPoolExecutor(self.caps.max_parallel, thread_name_prefix="arbor-node")
        try:
            stop = self._loop(scheduler, pool, forced)
        except BaseException as exc:
            self.cancel.set()  # let running calls stop; their results are not wanted
            self._finish_run(scheduler, ("failed", f"internal error: {_error_text(exc)}"))
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self._finish_run(scheduler, stop)

    def _loop(
        self, scheduler: Scheduler, pool: ThreadPoolExecutor, forced: set[str]
    ) -> tuple[str, str] | None:
        stop: tuple[str, str] | None = None  # (run status, reason) once the run must stop
        cancel_deadline: float | None = None
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        while not scheduler.finished:
            if stop is None and self.cancel.is_set():
                stop = ("cancelled", CANCELLED_BY_USER)
            if stop is not None:
                self._record_unrun(scheduler, scheduler.skip_pending(stop[1]))
                if stop[0] == "cancelled" and cancel_deadline is None:
                    cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            else:
                self._start_ready(scheduler, pool, forced)
            if not self._running:
                if not scheduler.finished and stop is None and not scheduler.ready():
                    raise RuntimeError("scheduler stalled: nothing running and nothing ready")
                continue
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                self._abandon_running(scheduler)
                continue
            try:
                outcome: _Outcome | None = self._outcomes.get(timeout=PROGRESS_INTERVAL_S)
            except queue.Empty:
                outcome = None
            while outcome is not None:
                stop = self._handle(scheduler, outcome, stop)
                try:
                    outcome = self._outcomes.get_nowait()
                except queue.Empty:
                    outcome = None
            if time.monotonic() >= next_progress:
                self._emit_progress()
                next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        return stop

    def _start_ready(
        self, scheduler: Scheduler, pool: ThreadPoolExecutor, forced: set[str]
    ) -> None:
        """Start what may start; finish cached nodes at once (which may ready more nodes)."""
        while True:
            ready = scheduler.ready()
            fresh = [node_id for node_id in ready if node_id not in self._prepared]
            for node_id in fresh:
                self._prepared[node_id] = self.prepare(self.nodes[node_id])
            # Only a node whose every upstream node was reused can match a recorded call:
            # downstream of a node that ran again, everything runs again (and no lookup is paid).
            hits = self._lookup(
                [n for n in fresh if n not in forced and self._upstream_reused(scheduler, n)]
            )
            progressed = False
            for node_id in ready:
                prepared = self._prepared[node_id]
                if prepared.error is not None:
                    scheduler.start(node_id)
                    self._finish_node(
                        scheduler, _Outcome(node_id, _now(), None, prepared.error)
                    )
                    progressed = True
                    continue
                hit = hits.get(node_id)
                if hit is not None:
                    scheduler.start(node_id)
                    self._reuse(scheduler, prepared, hit)
                    progressed = True
                    continue
                if len(self._running) >= self.caps.max_parallel:
                    continue
                backend = prepared.backend
                assert backend is not None
                slot = backend.resource_key
                if self._slots_in_use[slot] >= max(1, backend.max_concurrent):
                    continue
                self._slots_in_use[slot] += 1
                self._running[node_id] = prepared
                scheduler.start(node_id)
                self.emit(
                    NodeStarted(
                        run_id=self.run_id,
                        node_id=node_id,
                        title=prepared.node.title,
                        model=backend.label,
                        started_at=_now(),
                    )
                )
                pool.submit(self.run_node, prepared)
            if not progressed:
                return

    def _upstream_reused(self, scheduler: Scheduler, node_id: str) -> bool:
        return all(
            self.results[upstream].reused_from is not None
            for upstream in scheduler.graph.predecessors(node_id)
        )

    def _lookup(self, node_ids: list[str]) -> dict[str, CachedCall]:
        if self.cache is None or not node_ids:
            return {}
        keys = {
            self._prepared[n].cache_key: n for n in node_ids if self._prepared[n].cache_key
        }
        if not keys:
            return {}
        try:
            found = self.cache.lookup(list(keys))
        except Exception as exc:  # a cache that cannot answer means calling the model
            warning = f"call cache unavailable, nothing reused: {_error_text(exc)}"
            if warning not in self.warnings:
                self.warnings.append(warning)
            return {}
        return {keys[key]: call for key, call in found.items() if key in keys}

    def _reuse(self, scheduler: Scheduler, prepared: _Prepared, hit: CachedCall) -> None:
        node = prepared.node
        scheduler.finish(node.id)
        self.outputs[node.id] = hit.output
        self.results[node.id] = NodeResult(
            node.id, NodeStatus.DONE, hit.output, reused_from=hit.run_id
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
                finished_at=_now(),
                model=prepared.backend.label if prepared.backend else None,
                reused_from=hit.run_id,
            )
        )

    def _handle(
        self, scheduler: Scheduler, outcome: _Outcome, stop: tuple[str, str] | None
    ) -> tuple[str, str] | None:
        prepared = self._running.pop(outcome.node_id, None)
        if prepared is None:  # abandoned after a cancel; its late result is discarded
            return stop
        assert prepared.backend is not None
        self._slots_in_use[prepared.backend.resource_key] -= 1
        if outcome.budget_exhausted:
            scheduler.requeue(outcome.node_id)
            return stop or ("stopped", self._cap_reason(outcome.node_id))
        self._finish_node(scheduler, outcome)
        return stop

    def _abandon_running(self, scheduler: Scheduler) -> None:
        """Calls that ignored the cancel for ``CANCEL_GRACE_S``: record them and move on."""
        reason = (
            f"{CANCELLED_BY_USER}; the model call did not stop within {CANCEL_GRACE_S:.0f} s "
            "and its result will be discarded"
        )
        for node_id in list(self._running):
            self._running.pop(node_id)
            self._finish_node(
                scheduler, _Outcome(node_id, _now(), None, reason, cancelled=True)
            )

    def _emit_progress(self) -> None:
        for node_id in self._running:
            parts = self._partials.get(node_id)
            if parts and len(parts) != self._progress_sent.get(node_id):
                count = len(parts)
                self._progress_sent[node_id] = count
                self.emit(NodeProgress(self.run_id, node_id, "".join(parts[:count])))

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
        cost = call.cost_usd if call else 0.0
        prepared = self._prepared.get(node.id)
        model = prepared.backend.label if prepared and prepared.backend else None
        blocked: list[str] = []
        if outcome.cancelled:
            scheduler.cancel_running(node.id, outcome.error or CANCELLED_BY_USER)
            status, output = NodeStatus.CANCELLED, ""
        elif outcome.error is None and call is not None:
            scheduler.finish(node.id)
            self.outputs[node.id] = call.output
            status, output = NodeStatus.DONE, call.output
        else:
            blocked = scheduler.fail(node.id, outcome.error or "failed")
            status, output = NodeStatus.FAILED, ""
        result = NodeResult(
            node.id, status, output, outcome.error, tokens_in, tokens_out, cost_usd=cost
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
                model=model,
                cost_usd=cost,
            )
        )
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
            cost_usd=sum(r.cost_usd for r in self.results.values()),
            resumed_from=self.resumed_from,
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
                cost_usd=result.cost_usd,
                reused_nodes=tuple(result.reused),
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
    cache: CallCache | None = None,
    rerun: Iterable[str] = (),
    resumed_from: str | None = None,
) -> RunResult:
    """Run ``plan`` to completion, a cap, a cancel or a failure; never raises for model errors.

    Raises ``PlanError`` before anything runs if the plan is invalid. Node failures are recorded
    in the result (the failed node's dependants are blocked; independent branches go on).
    With ``cache``, calls whose key was recorded before are reused instead of made; ``rerun``
    names nodes that run again (with everything downstream) even so. ``resumed_from`` marks the
    run as the continuation of an interrupted one.
    """
    graph = plan.validate_graph()
    run = _Run(
        plan,
        caps or RunCaps(),
        listeners,
        backend_factory,
        run_id or new_run_id(),
        cancel or threading.Event(),
        cache,
        rerun,
        resumed_from,
    )
    return run.execute(session_id, graph)


__all__ = ["NodeResult", "RunResult", "execute_plan", "new_run_id"]
