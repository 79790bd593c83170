"""Runs a plan: dependency order, independent nodes concurrently, within the run's caps.

The coordinating thread owns the ``Scheduler`` and emits every event; worker threads only call
models. Concurrency has two limits: the run's ``max_parallel`` and, per backend resource (one
loaded GGUF file, one endpoint), the backend's ``max_concurrent`` slots. A node whose resource is
busy waits without holding a worker, so nodes on other models go ahead.

Each node runs its test-time strategy (``engine.run.strategies``) through a ``NodeCalls`` that
spends from the node's allowance: when a node starts it sets aside its share of what the run
has left among the nodes not started yet (``engine.run.allocation``), and gives back what it did not
spend when it ends, so no node passes its cap, no run passes its caps, and unspent budget flows
to later nodes. A time cap halts running calls like a cancel; sampling nodes keep what finished.

Before a call, its key (rendered prompt, model, parameters, seed, sample index) is looked up in
the call cache: a hit reuses the recorded output and no model is called. Only nodes whose
upstream nodes were all reused are looked up, so after an edit exactly the changed nodes and
everything downstream of them run again; nodes named in ``rerun`` count as changed.
Cancelling sets an event the backends watch between tokens, so running calls stop promptly.
"""

from __future__ import annotations

import math
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

from engine.errors import ArborError, CallCancelled, user_message
from engine.models import Backend, ChatMessage, Usage, backend_for
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.prompts import node_messages
from engine.run.allocation import Allocation, NodeAllocation, allocate
from engine.run.budget import Grant, Meter, RunCaps
from engine.run.call_cache import CachedCall, CallCache, call_cache_key
from engine.run.events import (
    BudgetUpdate,
    Event,
    Listener,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from engine.run.node_calls import (
    Caller,
    CallRecord,
    NodeBudgetExhausted,
    NodeCalls,
    rough_prompt_estimate,
)
from engine.run.scheduler import NodeStatus, Scheduler
from engine.run.strategies import StrategyResult, strategy_for

#: How often running nodes' streamed text is passed on as ``NodeProgress``.
PROGRESS_INTERVAL_S = 0.3
#: How long a cancel waits for running calls to stop before recording them as abandoned.
CANCEL_GRACE_S = 3.0
CANCELLED_BY_USER = "cancelled by the user"
TIME_CAP_NODE = "stopped by the run's time cap"


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
    #: What the node's replayed (cached) calls cost when they were first made.
    replayed_tokens: int = 0
    replayed_cost_usd: float = 0.0


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
    #: Wall-clock seconds from start to finish.
    wall_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

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
    """A ready node with everything its calls need, computed once by the coordinator."""

    node: Node
    allocation: NodeAllocation
    ref: ModelRef | None = None
    backend: Backend | None = None
    judge: Caller | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    generation: GenerationConfig | None = None
    #: Key of a single-call node's call, looked up by the coordinator before it starts.
    cache_key: str | None = None
    #: Whether the node's calls may be replayed from recorded ones (strategy nodes look up
    #: each call themselves).
    may_reuse: bool = False
    #: Tokens and dollars set aside for the node when it started.
    block: Grant | None = None
    cost_cap_usd: float | None = None
    error: str | None = None  # preparing failed: a bad template, a backend that cannot exist


@dataclass
class _Outcome:
    node_id: str
    started_at: datetime
    error: str | None
    records: list[CallRecord] = field(default_factory=list)
    result: StrategyResult | None = None
    budget_exhausted: bool = False
    cancelled: bool = False
    #: Tokens and dollars the node was allowed, and what it spent of them.
    token_cap: int | None = None
    cost_cap_usd: float | None = None
    spent_tokens: int = 0
    spent_usd: float = 0.0
    extra_block: Grant | None = None


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
        cache: CallCache | None,
        rerun: Iterable[str],
        resumed_from: str | None,
        order: list[str],
    ):
        self.plan = plan
        self.order = order
        self.caps = caps
        self.listeners = list(listeners)
        self.backend_factory = backend_factory
        self.run_id = run_id
        self.cancel = cancel
        self.cache = cache
        self.rerun = list(rerun)
        self.resumed_from = resumed_from
        self.meter = Meter(caps.total_tokens, caps.total_cost_usd)
        self.allocation: Allocation = allocate(plan, caps, order=order)
        #: Set on a user cancel or when the time cap passes; running calls watch it.
        self.halt = threading.Event()
        self.clock_start = time.monotonic()
        self.deadline = (
            self.clock_start + caps.wall_time_s if caps.wall_time_s is not None else None
        )
        self.time_cap_hit = False
        # Nodes not started yet, for sharing what is left (kept incrementally: see _share).
        self._pending = set(self.allocation.nodes)
        self._pending_weight = sum(a.weight for a in self.allocation.nodes.values())
        self._pending_token_capped = {
            n for n, a in self.allocation.nodes.items() if a.token_cap is not None
        }
        self._pending_cost_capped = {
            n for n, a in self.allocation.nodes.items() if a.cost_cap_usd is not None
        }
        self.nodes = plan.nodes()
        self.outputs: dict[str, str] = {}
        self.results: dict[str, NodeResult] = {}
        self.warnings: list[str] = []
        self._backends: dict[str, Backend] = {}
        self._prepared: dict[str, _Prepared] = {}
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._partials: dict[str, list[str]] = {}
        self._progress_sent: dict[str, str] = {}
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
        allocation = self.allocation.nodes[node.id]
        prepared = _Prepared(node, allocation)
        try:
            prepared.ref = allocation.model
            prepared.backend = self.backend(prepared.ref)
            selector = allocation.strategy.selector
            if allocation.strategy.kind == "best_of_n" and selector.kind == "judge":
                judge_ref = selector.judge_model or prepared.ref
                prepared.judge = Caller(self.backend(judge_ref), judge_ref)
            prepared.messages = node_messages(self.plan, node, self.outputs, self.nodes)
        except Exception as exc:  # a backend bug must fail this node, not the run
            prepared.error = user_message(exc)
            return prepared
        generation = self.plan.generation_for(node)
        prepared.generation = generation.model_copy(update={"max_tokens": allocation.max_tokens})
        if allocation.strategy.kind == "single":
            prepared.cache_key = call_cache_key(
                prepared.messages, prepared.ref, prepared.generation
            )
        return prepared

    # -- worker side -----------------------------------------------------------------------
    def run_node(self, prepared: _Prepared) -> None:
        try:
            outcome = self._run_strategy(prepared)
        except Exception as exc:  # never lose an outcome: the coordinator waits for it
            outcome = _Outcome(prepared.node.id, _now(), user_message(exc))
        self._outcomes.put(outcome)

    def _run_strategy(self, prepared: _Prepared) -> _Outcome:
        node, backend, generation = prepared.node, prepared.backend, prepared.generation
        assert backend is not None and generation is not None and prepared.ref is not None
        assert prepared.block is not None
        started = _now()
        outcome = _Outcome(node.id, started, None, cost_cap_usd=prepared.cost_cap_usd)
        parts = self._partials.setdefault(node.id, [])

        def show(text: str) -> None:
            parts[:] = [text]

        caller = Caller(backend, prepared.ref)
        block = prepared.block.tokens
        try:
            # The base class's rough count: a node whose calls are all replayed never needs
            # its model's tokenizer (which would load a local model for nothing).
            estimate = rough_prompt_estimate(prepared.messages)
        except Exception as exc:
            outcome.error = user_message(exc)
            return outcome
        # A node's share may be too small for even one full call (a parent reading long
        # outputs): it may take that much more from the run, within its manual cap.
        need = estimate + generation.max_tokens
        manual = prepared.allocation.token_cap
        if block < need and (manual is None or block < manual):
            top_up = need - block if manual is None else min(need, manual) - block
            outcome.extra_block = self.meter.reserve_block(top_up, 0.0)
            block += outcome.extra_block.tokens
        outcome.token_cap = block
        meter = Meter(block, prepared.cost_cap_usd)
        calls = NodeCalls(
            caller,
            generation,
            meter,
            halt=self.halt,
            cache=self.cache if prepared.may_reuse and prepared.cache_key is None else None,
            on_text=show,
        )
        strategy = strategy_for(prepared.allocation.strategy, prepared.judge)
        try:
            outcome.result = strategy.run(calls, prepared.messages)
        except NodeBudgetExhausted as exc:
            limited_by_node = manual is not None and block >= manual
            if limited_by_node or any(r.ok for r in calls.records):
                outcome.error = f"node budget of {block} tokens exhausted: {exc}"
            else:
                outcome.budget_exhausted = True
        except CallCancelled as exc:
            outcome.cancelled = True
            outcome.error = TIME_CAP_NODE if self.time_cap_hit else str(exc)
        except Exception as exc:  # any backend failure fails this node, never the whole run
            outcome.error = user_message(exc)
        outcome.records = calls.records
        outcome.spent_tokens, outcome.spent_usd = meter.used, meter.cost_used
        if calls.cache_problem and calls.cache_problem not in self.warnings:
            self.warnings.append(calls.cache_problem)
        result = outcome.result
        if result is not None and outcome.error is None:
            if result.interrupted and not self.time_cap_hit:
                outcome.cancelled, outcome.error = True, CANCELLED_BY_USER
            elif not result.output.strip():
                outcome.error = "the model returned an empty answer"
        return outcome

    # -- coordinator side ------------------------------------------------------------------
    def execute(self, session_id: str | None, graph: nx.DiGraph) -> RunResult:
        scheduler = Scheduler(graph, self.order)
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
            self._finish_run(scheduler, ("failed", f"internal error: {user_message(exc)}"))
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
                self.halt.set()
            if stop is None and self.deadline is not None and time.monotonic() > self.deadline:
                self.time_cap_hit = True
                stop = ("stopped", self._time_reason())
                self.halt.set()
            if stop is not None:
                self._record_unrun(scheduler, scheduler.skip_pending(stop[1]))
                if self.halt.is_set() and cancel_deadline is None:
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

    def _time_reason(self) -> str:
        return (
            f"time cap reached: {time.monotonic() - self.clock_start:.1f} s of "
            f"{self.caps.wall_time_s:g} s allowed"
        )

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
            for node_id in fresh:
                self._prepared[node_id].may_reuse = (
                    self.cache is not None
                    and node_id not in forced
                    and self._upstream_reused(scheduler, node_id)
                )
            hits = self._lookup([n for n in fresh if self._prepared[n].may_reuse])
            progressed = False
            for node_id in ready:
                prepared = self._prepared[node_id]
                if prepared.error is not None:
                    self._leave_pending(node_id)
                    scheduler.start(node_id)
                    self._finish_node(scheduler, _Outcome(node_id, _now(), prepared.error))
                    progressed = True
                    continue
                hit = hits.get(node_id)
                if hit is not None:
                    self._leave_pending(node_id)
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
                self._reserve_share(prepared)
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

    def _reserve_share(self, prepared: _Prepared) -> None:
        """Set aside the node's share of what is left, among the nodes not started yet."""
        node_id = prepared.node.id
        self._leave_pending(node_id)
        mine = prepared.allocation
        tokens = self._share(
            node_id, self.meter.available, mine.token_cap, self._pending_token_capped, "tokens"
        )
        available_cost = self.meter.available_cost
        if available_cost is not None:
            cost: float | None = self._share(
                node_id, available_cost, mine.cost_cap_usd, self._pending_cost_capped, "usd"
            )
        else:
            cost = mine.cost_cap_usd
        prepared.block = self.meter.reserve_block(int(tokens), cost)
        prepared.cost_cap_usd = prepared.block.cost_usd if cost is not None else None

    def _share(
        self, node_id: str, available: float, cap: float | None, capped: set[str], unit: str
    ) -> float:
        """The node's weight share of ``available`` among itself and the pending nodes.

        Without manual caps among the pending nodes this is one division (a 2000-node plan
        must not pay a pass over every node per start); with them the allocation's
        water-filling gives capped nodes' excess to the others.
        """
        if capped:
            pending = self._pending
            if unit == "tokens":
                return self.allocation.node_token_cap(node_id, int(available), pending)
            return self.allocation.node_cost_cap(node_id, available, pending)
        if available <= 0:
            return 0
        weight = self.allocation.nodes[node_id].weight
        share = available * weight / (weight + max(0.0, self._pending_weight))
        share = math.floor(share) if unit == "tokens" else share
        return min(share, cap) if cap is not None else share

    def _leave_pending(self, node_id: str) -> None:
        if node_id in self._pending:
            self._pending.discard(node_id)
            self._pending_weight -= self.allocation.nodes[node_id].weight
            self._pending_token_capped.discard(node_id)
            self._pending_cost_capped.discard(node_id)

    def _upstream_reused(self, scheduler: Scheduler, node_id: str) -> bool:
        return all(
            self.results[upstream].reused_from is not None
            for upstream in scheduler.graph.predecessors(node_id)
        )

    def _lookup(self, node_ids: list[str]) -> dict[str, CachedCall]:
        if self.cache is None or not node_ids:
            return {}
        keys = {self._prepared[n].cache_key: n for n in node_ids if self._prepared[n].cache_key}
        if not keys:
            return {}
        try:
            found = self.cache.lookup(list(keys))
        except Exception as exc:  # a cache that cannot answer means calling the model
            warning = f"call cache unavailable, nothing reused: {user_message(exc)}"
            if warning not in self.warnings:
                self.warnings.append(warning)
            return {}
        return {keys[key]: call for key, call in found.items() if key in keys}

    def _reuse(self, scheduler: Scheduler, prepared: _Prepared, hit: CachedCall) -> None:
        node = prepared.node
        scheduler.finish(node.id)
        self.outputs[node.id] = hit.output
        usage = Usage(hit.input_tokens, hit.output_tokens)
        self.results[node.id] = NodeResult(
            node.id,
            NodeStatus.DONE,
            hit.output,
            reused_from=hit.run_id,
            replayed_tokens=usage.total,
            replayed_cost_usd=prepared.backend.cost(usage) if prepared.backend else 0.0,
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
                strategy=prepared.allocation.strategy.label,
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
        self._settle(prepared, outcome)
        if outcome.budget_exhausted:
            for record in outcome.records:  # calls made before the budget ran out
                self.emit(record.to_event(self.run_id, outcome.node_id))
            scheduler.requeue(outcome.node_id)
            return stop or ("stopped", self._cap_reason(outcome.node_id))
        self._finish_node(scheduler, outcome)
        return stop

    def _settle(self, prepared: _Prepared, outcome: _Outcome) -> None:
        """Give the node's unspent allowance back to the run, for the nodes still to run."""
        block = prepared.block or Grant(0, 0, 0.0)
        extra = outcome.extra_block or Grant(0, 0, 0.0)
        total = Grant(block.tokens + extra.tokens, 0, block.cost_usd + extra.cost_usd)
        self.meter.settle_grant(total, outcome.spent_tokens, outcome.spent_usd)
        prepared.block = None
        self._emit_budget()

    def _abandon_running(self, scheduler: Scheduler) -> None:
        """Calls that ignored the cancel for ``CANCEL_GRACE_S``: record them and move on."""
        reason = (
            f"{CANCELLED_BY_USER}; the model call did not stop within {CANCEL_GRACE_S:.0f} s "
            "and its result will be discarded"
        )
        for node_id in list(self._running):
            prepared = self._running.pop(node_id)
            block = prepared.block or Grant(0, 0, 0.0)
            # What the abandoned call spends is unknown: count the whole allowance as spent.
            self.meter.settle_grant(block, block.tokens, block.cost_usd)
            self._finish_node(scheduler, _Outcome(node_id, _now(), reason, cancelled=True))

    def _emit_progress(self) -> None:
        for node_id in self._running:
            parts = self._partials.get(node_id)
            text = "".join(parts) if parts else ""
            if text and text != self._progress_sent.get(node_id):
                self._progress_sent[node_id] = text
                self.emit(NodeProgress(self.run_id, node_id, text))
        self._emit_budget()

    def _emit_budget(self) -> None:
        self.emit(
            BudgetUpdate(
                run_id=self.run_id,
                tokens_used=self.meter.used,
                tokens_allowed=self.caps.total_tokens,
                cost_used_usd=self.meter.cost_used,
                cost_allowed_usd=self.caps.total_cost_usd,
                elapsed_s=time.monotonic() - self.clock_start,
                time_allowed_s=self.caps.wall_time_s,
            )
        )

    def _cap_reason(self, node_id: str) -> str:
        money = ""
        if self.caps.total_cost_usd is not None:
            money = f" and ${self.meter.cost_used:.4f} of ${self.caps.total_cost_usd:g}"
        return (
            f"token cap reached: {self.meter.used} of {self.caps.total_tokens} tokens used"
            f"{money}, not enough left for node {node_id!r} ({self.nodes[node_id].title})"
        )

    def _finish_node(self, scheduler: Scheduler, outcome: _Outcome) -> None:
        node = self.nodes[outcome.node_id]
        for record in outcome.records:
            self.emit(record.to_event(self.run_id, node.id))
        records = outcome.records
        tokens_in = sum(r.input_tokens for r in records)
        tokens_out = sum(r.output_tokens for r in records)
        cost = sum(r.cost_usd for r in records)
        prepared = self._prepared.get(node.id)
        model = prepared.backend.label if prepared and prepared.backend else None
        strategy = prepared.allocation.strategy.label if prepared else None
        found = outcome.result
        blocked: list[str] = []
        if outcome.cancelled:
            scheduler.cancel_running(node.id, outcome.error or CANCELLED_BY_USER)
            status, output = NodeStatus.CANCELLED, ""
        elif outcome.error is None and found is not None:
            scheduler.finish(node.id)
            self.outputs[node.id] = found.output
            status, output = NodeStatus.DONE, found.output
        else:
            blocked = scheduler.fail(node.id, outcome.error or "failed")
            status, output = NodeStatus.FAILED, ""
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
                reused_from=result.reused_from,
                cost_usd=cost,
                strategy=strategy,
                samples=found.samples if found else None,
                agreement=found.agreement if found else None,
                token_cap=outcome.token_cap,
                cost_cap_usd=outcome.cost_cap_usd,
                note=found.note if found else None,
            )
        )
        self._record_unrun(scheduler, blocked)

    def _record_unrun(self, scheduler: Scheduler, node_ids: list[str]) -> None:
        """Record nodes that never ran (blocked or skipped) and tell the listeners."""
        for node_id in node_ids:
            self._leave_pending(node_id)
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
            wall_s=time.monotonic() - self.clock_start,
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
    position = {node.id: index for index, (node, _) in enumerate(plan.iter_nodes())}
    order = list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
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
        order,
    )
    return run.execute(session_id, graph)


__all__ = ["NodeResult", "RunResult", "execute_plan", "new_run_id"]
