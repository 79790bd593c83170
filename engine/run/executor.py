"""Runs a plan: dependency order, independent nodes concurrently, within the run's caps.

The coordinating thread owns the ``Scheduler`` and emits every event; worker threads only call
models. Concurrency has two limits: the run's ``max_parallel`` and, per backend resource (one
loaded GGUF file, one endpoint), the backend's ``max_concurrent`` slots. A node whose resource is
busy waits without holding a worker, so nodes on other models go ahead.

Each node runs its test-time strategy (``engine.run.strategies``) through a ``NodeCalls`` that
spends from the node's allowance: when a node starts it sets aside its share of what the run
has left among the nodes not started yet (``engine.run.allowances``), and gives back what it did
not spend when it ends, so no node passes its cap, no run passes its caps, and unspent budget
flows to later nodes. A time cap halts running calls like a cancel; sampling nodes keep what
finished.

Before a call, its key (rendered prompt, model, parameters, seed, sample index) is looked up in
the call cache: a hit reuses the recorded output and no model is called. Only nodes whose
upstream nodes were all reused are looked up, so after an edit exactly the changed nodes and
everything downstream of them run again; nodes named in ``rerun`` count as changed.
Cancelling sets an event the backends watch between tokens, so running calls stop promptly.

Run control (``engine.run.control``): a pinned node finishes at once with the analyst's text
(no call); a node taken from a forked run's records finishes as a reused one; at a breakpoint
(or in step mode) the coordinator stops starting nodes, waits for the running ones, stops the
caps' clock and asks the controller what to do; without an answer the run ends ``paused``.

This module is the coordinator's loop; a node's preparation and run are ``engine.run
.node_runner``'s, the events and results ``engine.run.recording``'s.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import networkx as nx

from engine.errors import ArborError, user_message
from engine.models import BackendFactory, backend_for
from engine.plan import Plan
from engine.run.allocation import Allocation, allocate
from engine.run.allowances import (
    NO_GRANT,
    PendingShares,
    deadline,
    past_deadline,
    settlement,
    time_cap_reason,
    token_cap_reason,
)
from engine.run.budget import Meter, RunCaps
from engine.run.call_cache import CachedCall, CallCache, call_cache_key
from engine.run.control import (
    CANCELLED_AT_PAUSE,
    PAUSED,
    SKIPPED_BY_ANALYST,
    Decision,
    Pause,
    PauseWhen,
    RunControl,
    RunEdit,
)
from engine.run.events import Listener
from engine.run.node_runner import (
    CANCELLED_BY_USER,
    TIME_CAP_NODE,
    NodeRunner,
    Outcome,
    Prepared,
    now,
)
from engine.run.recording import NodeResult, Recorder, RunResult
from engine.run.scheduler import NodeStatus, Scheduler

#: How often running nodes' streamed text is passed on as ``NodeProgress``.
PROGRESS_INTERVAL_S = 0.3
#: How long a cancel waits for running calls to stop before recording them as abandoned.
CANCEL_GRACE_S = 3.0
#: (run status, reason) once the run must stop.
Stop = tuple[str, str]


def suspect_summary(suspects: dict[str, str]) -> str:
    """ "2 suspect nodes: s1 echoes the prompt (...); root cut off at the token limit"."""
    count = len(suspects)
    listed = "; ".join(f"{node_id} {reason}" for node_id, reason in suspects.items())
    return f"{count} suspect node{'s' if count != 1 else ''}: {listed}"


def new_run_id() -> str:
    return f"run-{now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class _Run:
    """The coordinating thread's state: it owns the ``Scheduler`` and emits every event."""

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
        control: RunControl | None = None,
    ):
        self.plan = plan
        self.control = control or RunControl()
        self.pins = dict(self.control.pins)
        self.step = self.control.step
        self.edits: list[RunEdit] = list(self.control.edits)
        #: Breakpoints waiting to be shown, (node id, before|after), and nodes let past theirs.
        self._pauses: list[tuple[str, PauseWhen]] = []
        self._released: set[str] = set()
        self._prompt_overrides: dict[str, str] = {}
        self._paused_node: str | None = None
        self.order = order
        self.caps = caps
        self.cancel = cancel
        self.cache = cache
        self.rerun = list(rerun)
        self.resumed_from = resumed_from
        self.meter = Meter(caps.total_tokens, caps.total_cost_usd)
        self.allocation: Allocation = allocate(plan, caps, order=order)
        self.shares = PendingShares(self.allocation)
        self.clock_start = time.monotonic()
        self.deadline = deadline(self.clock_start, caps.wall_time_s)
        self.nodes = plan.nodes()
        self.outputs: dict[str, str] = {}
        self.recorder = Recorder(run_id, listeners, caps)
        self.runner = NodeRunner(
            plan,
            self.allocation,
            backend_factory,
            self.meter,
            cache,
            self.recorder.warnings,
            deadline=self.deadline,
        )
        self.runner.outputs = self.outputs
        self._prepared: dict[str, Prepared] = {}
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._running: dict[str, Prepared] = {}
        self._slots_in_use: Counter[str] = Counter()

    def execute(self, session_id: str | None, graph: nx.DiGraph) -> RunResult:
        scheduler = Scheduler(graph, self.order)
        forced: set[str] = set()
        for node_id in self.rerun:
            if node_id not in self.nodes:
                raise ArborError(f"Cannot re-run from {node_id!r}: no such node in the plan.")
            forced |= {node_id} | nx.descendants(graph, node_id)
        unknown = sorted(self.control.node_ids() - set(self.nodes))
        if unknown:
            raise ArborError(
                f"No node {unknown[0]!r} in the plan (pins, breakpoints and forks name node ids; "
                f"the plan has {', '.join(self.order)})."
            )
        plan_json = self.plan.to_json(indent=None)
        self.recorder.run_started(
            session_id,
            self.plan.task,
            plan_json,
            self.resumed_from,
            self.control.forked_from,
            self.control.forked_at_node,
        )
        for index, edit in enumerate(self.edits):  # made before the run (resume, fork)
            self.recorder.edited(edit, self.edits[: index + 1], plan_json)
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
    ) -> Stop | None:
        stop: Stop | None = None
        cancel_deadline: float | None = None
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        while not scheduler.finished or (stop is None and self._pauses):
            if stop is None and self.cancel.is_set():
                stop = ("cancelled", CANCELLED_BY_USER)
                self.runner.stop_calls(time_cap=False)
            if stop is None and past_deadline(time.monotonic(), self.deadline):
                self.runner.stop_calls(time_cap=True)
                elapsed = time.monotonic() - self.clock_start
                stop = ("stopped", time_cap_reason(elapsed, self.caps.wall_time_s))
            if stop is not None:
                self._record_unrun(scheduler, scheduler.skip_pending(stop[1]))
                if self.runner.halt.is_set() and cancel_deadline is None:
                    cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            else:
                self._start_ready(scheduler, pool, forced)
            if stop is None and self._pauses and not self._running:
                stop = self._pause(scheduler)
                continue
            if not self._running:
                if not scheduler.finished and stop is None and not scheduler.ready():
                    raise RuntimeError("scheduler stalled: nothing running and nothing ready")
                continue
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                self._abandon_running(scheduler)
                continue
            try:
                outcome: Outcome | None = self._outcomes.get(timeout=PROGRESS_INTERVAL_S)
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

    # -- starting nodes --------------------------------------------------------------------
    def _start_ready(
        self, scheduler: Scheduler, pool: ThreadPoolExecutor, forced: set[str]
    ) -> None:
        """Start what may start; finish cached nodes at once (which may ready more nodes)."""
        while True:
            if self._pauses:  # a breakpoint waits: start nothing more
                return
            ready = scheduler.ready()
            fresh = [node_id for node_id in ready if node_id not in self._prepared]
            for node_id in fresh:
                self._prepared[node_id] = self.runner.prepare(self.nodes[node_id], self.outputs)
                if node_id in self._prompt_overrides:
                    self._override_prompt(self._prepared[node_id])
            # Only a node whose every upstream node was reused can match a recorded call:
            # downstream of a node that ran again, everything runs again (and no lookup is paid).
            for node_id in fresh:
                self._prepared[node_id].may_reuse = (
                    self.cache is not None
                    and node_id not in forced
                    and self._upstream_reused(scheduler, node_id)
                )
            hits = self.runner.lookup(
                [self._prepared[n] for n in fresh if self._prepared[n].may_reuse]
            )
            progressed = False
            for node_id in ready:
                if self._pauses:
                    return
                prepared = self._prepared[node_id]
                if node_id in self.pins:
                    self.shares.leave(node_id)
                    scheduler.start(node_id)
                    self._pin(scheduler, prepared, self.pins[node_id], "pinned by the analyst")
                    progressed = True
                    continue
                forked = self.control.reuse.get(node_id)
                if forked is not None and node_id not in forced:
                    self.shares.leave(node_id)
                    scheduler.start(node_id)
                    self._reuse(scheduler, prepared, forked)
                    progressed = True
                    continue
                if node_id not in self._released and (
                    self.step or node_id in self.control.break_before
                ):
                    self._pauses.append((node_id, "before"))
                    return
                if prepared.error is not None:
                    self.shares.leave(node_id)
                    scheduler.start(node_id)
                    self._finish_node(scheduler, Outcome(node_id, now(), prepared.error))
                    progressed = True
                    continue
                hit = hits.get(node_id)
                if hit is not None:
                    self.shares.leave(node_id)
                    scheduler.start(node_id)
                    self._reuse(scheduler, prepared, hit)
                    progressed = True
                    continue
                if len(self._running) < self.caps.max_parallel and self._take_slot(prepared):
                    self._running[node_id] = prepared
                    self._reserve_allowance(prepared)
                    scheduler.start(node_id)
                    assert prepared.backend is not None
                    self.recorder.node_started(prepared.node, prepared.backend.label)
                    pool.submit(self._work, prepared)
            if not progressed:
                return

    def _take_slot(self, prepared: Prepared) -> bool:
        """Take one of the backend resource's slots; False when they are all in use."""
        backend = prepared.backend
        assert backend is not None
        slot = backend.resource_key
        if self._slots_in_use[slot] >= max(1, backend.max_concurrent):
            return False
        self._slots_in_use[slot] += 1
        return True

    def _reserve_allowance(self, prepared: Prepared) -> None:
        """Set aside the node's share of what is left, among the nodes not started yet."""
        tokens, cost = self.shares.start(
            prepared.node.id, self.meter.available, self.meter.available_cost
        )
        prepared.block = self.meter.reserve_block(tokens, cost)
        prepared.cost_cap_usd = prepared.block.cost_usd if cost is not None else None

    def _work(self, prepared: Prepared) -> None:
        """Worker thread: run the node and hand its outcome to the coordinator."""
        self._outcomes.put(self.runner.run(prepared))

    def _upstream_reused(self, scheduler: Scheduler, node_id: str) -> bool:
        # A pinned upstream output is as fixed as a reused one: the key holds its text.
        results = self.recorder.results
        return all(
            results[upstream].reused_from is not None or results[upstream].pinned
            for upstream in scheduler.graph.predecessors(node_id)
        )

    # -- finishing nodes -------------------------------------------------------------------
    def _handle(self, scheduler: Scheduler, outcome: Outcome, stop: Stop | None) -> Stop | None:
        prepared = self._running.pop(outcome.node_id, None)
        if prepared is None:  # abandoned after a cancel; its late result is discarded
            return stop
        assert prepared.backend is not None
        self._slots_in_use[prepared.backend.resource_key] -= 1
        # Give the node's unspent allowance back to the run, for the nodes still to run.
        grant = settlement(prepared.block, outcome.extra_block)
        self.meter.settle_grant(grant, outcome.spent_tokens, outcome.spent_usd)
        prepared.block = None
        self._emit_budget()
        if outcome.budget_exhausted:
            self.recorder.calls(outcome)  # calls made before the budget ran out
            scheduler.requeue(outcome.node_id)
            if stop is not None:
                return stop
            node_id = outcome.node_id
            meter, caps = self.meter, self.caps
            reason = token_cap_reason(
                meter.used,
                caps.total_tokens,
                meter.cost_used,
                caps.total_cost_usd,
                node_id,
                self.nodes[node_id].title,
            )
            return ("stopped", reason)
        self._finish_node(scheduler, outcome)
        return stop

    def _abandon_running(self, scheduler: Scheduler) -> None:
        """Calls that ignored the cancel for ``CANCEL_GRACE_S``: record them and move on."""
        reason = (
            f"{CANCELLED_BY_USER}; the model call did not stop within {CANCEL_GRACE_S:.0f} s "
            "and its result will be discarded"
        )
        for node_id in list(self._running):
            prepared = self._running.pop(node_id)
            block = prepared.block or NO_GRANT
            # What the abandoned call spends is unknown: count the whole allowance as spent.
            self.meter.settle_grant(block, block.tokens, block.cost_usd)
            self._finish_node(scheduler, Outcome(node_id, now(), reason, cancelled=True))

    def _reuse(self, scheduler: Scheduler, prepared: Prepared, hit: CachedCall) -> None:
        scheduler.finish(prepared.node.id)
        self.outputs[prepared.node.id] = hit.output
        suspect = self.runner.suspect(prepared, hit.output, finish_reason=hit.finish_reason)
        self.recorder.reused(prepared, hit, suspect)
        self._break_after(prepared.node.id)

    def _pin(self, scheduler: Scheduler, prepared: Prepared, output: str, note: str) -> None:
        """Finish a started node with the analyst's text: no call, dependants read it."""
        scheduler.finish(prepared.node.id)
        self.outputs[prepared.node.id] = output
        label = prepared.backend.label if prepared.backend else None
        self.recorder.pinned(prepared.node, output, label, note)

    def _break_after(self, node_id: str) -> None:
        if node_id in self.control.break_after and node_id not in self._released:
            self._pauses.append((node_id, "after"))

    # -- breakpoints -------------------------------------------------------------------------
    def _override_prompt(self, prepared: Prepared) -> None:
        """Replace the text of the node's last message with the analyst's edited prompt."""
        text = self._prompt_overrides[prepared.node.id]
        if not prepared.messages:
            return
        messages = [dict(m) for m in prepared.messages]
        messages[-1]["content"] = text
        prepared.messages = messages  # type: ignore[assignment]
        if prepared.cache_key is not None and prepared.ref and prepared.generation:
            prepared.cache_key = call_cache_key(messages, prepared.ref, prepared.generation)

    def _inputs(self, node_id: str) -> dict[str, str]:
        node = self.nodes[node_id]
        upstream = [*node.depends_on, *(child.id for child in node.children)]
        return {n: self.outputs[n] for n in upstream if n in self.outputs}

    def _pause(self, scheduler: Scheduler) -> Stop | None:
        """Show the first waiting breakpoint, with the clock stopped; apply the decision."""
        node_id, when = self._pauses.pop(0)
        node = self.nodes[node_id]
        prepared = self._prepared.get(node_id)
        prompt = None
        if when == "before" and prepared is not None and prepared.messages:
            prompt = str(prepared.messages[-1].get("content") or "")
        stepping = when == "before" and node_id not in self.control.break_before
        reason = "step" if stepping else "breakpoint"
        pause = Pause(
            run_id=self.recorder.run_id,
            node_id=node_id,
            title=node.title,
            when=when,
            reason=reason,
            inputs=self._inputs(node_id),
            prompt=prompt,
            output=self.outputs.get(node_id) if when == "after" else None,
            instruction=node.instruction,
        )
        self.recorder.paused(pause)
        paused_at = time.monotonic()
        controller = self.control.controller
        decision = controller.decide(pause) if controller is not None else None
        # The caps' clock stands still while the analyst looks: shift the start and deadline.
        paused_s = time.monotonic() - paused_at
        self.clock_start += paused_s
        if self.deadline is not None:
            self.deadline += paused_s
            self.runner.deadline = self.deadline
        if decision is None:
            self._paused_node = node_id
            self._pauses.clear()
            return (PAUSED, f"paused {when} node {node_id!r} ({reason}); resume to continue")
        if decision.action == "cancel":
            self._pauses.clear()
            return ("cancelled", CANCELLED_AT_PAUSE)
        self.recorder.continued(node_id, decision.action)
        self._released.add(node_id)
        self.step = decision.action == "step"
        if when == "before":
            self._apply_before(scheduler, node_id, decision)
        elif decision.output is not None and decision.output != self.outputs.get(node_id):
            self._edit(RunEdit(node_id, "output", self.outputs.get(node_id), decision.output))
            self.outputs[node_id] = decision.output
            self.recorder.pinned(node, decision.output, None, "output edited at a breakpoint")
        return None

    def _apply_before(self, scheduler: Scheduler, node_id: str, decision: Decision) -> None:
        node = self.nodes[node_id]
        if decision.action == "skip":
            self.shares.leave(node_id)
            scheduler.start(node_id)
            scheduler.finish(node_id)  # dependants go on without its output
            self.outputs[node_id] = ""
            self._edit(RunEdit(node_id, "skip", None, None))
            self.recorder.unrun(node_id, node.title, NodeStatus.SKIPPED, SKIPPED_BY_ANALYST)
            return
        if decision.instruction is not None and decision.instruction != node.instruction:
            from engine.plan.editing import update_node

            self.plan = update_node(self.plan, node_id, instruction=decision.instruction)
            self.nodes = self.plan.nodes()
            self.runner.plan, self.runner.nodes = self.plan, self.nodes
            self._edit(RunEdit(node_id, "instruction", node.instruction, decision.instruction))
            self._prepared.pop(node_id, None)  # rendered again, looked up again
        if decision.prompt is not None:
            prepared = self._prepared.get(node_id)
            old = str(prepared.messages[-1].get("content") or "") if prepared else None
            if prepared is None or decision.prompt != old:
                self._prompt_overrides[node_id] = decision.prompt
                self._edit(RunEdit(node_id, "prompt", old, decision.prompt))
                self._prepared.pop(node_id, None)
        if decision.output is not None:
            self.pins[node_id] = decision.output
            self._edit(RunEdit(node_id, "output", None, decision.output))

    def _edit(self, edit: RunEdit) -> None:
        self.edits.append(edit)
        self.recorder.edited(edit, self.edits, self.plan.to_json(indent=None))

    def _finish_node(self, scheduler: Scheduler, outcome: Outcome) -> None:
        node = self.nodes[outcome.node_id]
        self.recorder.calls(outcome)
        found = outcome.result
        blocked: list[str] = []
        if outcome.cancelled:
            scheduler.cancel_running(node.id, outcome.error or CANCELLED_BY_USER)
            status = NodeStatus.CANCELLED
        elif outcome.error is None and found is not None:
            scheduler.finish(node.id)
            self.outputs[node.id] = found.output
            status = NodeStatus.DONE
            self._break_after(node.id)
        else:
            blocked = scheduler.fail(node.id, outcome.error or "failed")
            status = NodeStatus.FAILED
        self.recorder.node_finished(node, status, outcome, self._prepared.get(node.id))
        self._record_unrun(scheduler, blocked)

    def _record_unrun(self, scheduler: Scheduler, node_ids: list[str]) -> None:
        """Record nodes that never ran (blocked or skipped) and tell the listeners."""
        for node_id in node_ids:
            self.shares.leave(node_id)
            self.recorder.unrun(
                node_id,
                self.nodes[node_id].title,
                scheduler.status[node_id],
                scheduler.reasons.get(node_id),
            )

    # -- progress and the end ----------------------------------------------------------------
    def _emit_progress(self) -> None:
        partials = self.runner.partials
        for node_id in self._running:
            parts = partials.get(node_id)
            self.recorder.progress(node_id, "".join(parts) if parts else "")
        self._emit_budget()

    def _emit_budget(self) -> None:
        self.recorder.budget(self.meter, time.monotonic() - self.clock_start)

    def _finish_run(self, scheduler: Scheduler, stop: Stop | None) -> RunResult:
        root = self.plan.root.id
        reason: str | None
        if stop is not None:
            status, reason = stop
        elif scheduler.status[root] is NodeStatus.DONE:
            # The answer is there; nodes whose output failed the output check make it a
            # "suspect" run (finished, with a warning) rather than a plainly completed one.
            results = self.recorder.results
            suspects: dict[str, str] = {}
            for node_id in self.order:
                found = results.get(node_id)
                if found is not None and found.suspect:
                    suspects[node_id] = found.suspect
            status = "suspect" if suspects else "completed"
            reason = suspect_summary(suspects) if suspects else None
        else:
            failed = [n for n, s in scheduler.status.items() if s is NodeStatus.FAILED]
            status = "failed"
            reason = "; ".join(f"{n}: {scheduler.reasons.get(n)}" for n in failed) or "no answer"
        return self.recorder.run_finished(
            status,
            reason,
            self.outputs.get(root),
            self.resumed_from,
            time.monotonic() - self.clock_start,
            self._paused_node,
            self.edits,
        )


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
    control: RunControl | None = None,
) -> RunResult:
    """Run ``plan`` to completion, a cap, a cancel or a failure; never raises for model errors.

    Raises ``PlanError`` before anything runs if the plan is invalid. Node failures are recorded
    in the result (the failed node's dependants are blocked; independent branches go on).
    With ``cache``, calls whose key was recorded before are reused instead of made; ``rerun``
    names nodes that run again (with everything downstream) even so. ``resumed_from`` marks the
    run as the continuation of an interrupted one. ``control`` adds pins, breakpoints, step
    mode and a fork's reused nodes (``engine.run.control``).
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
        control,
    )
    return run.execute(session_id, graph)


__all__ = [
    "CANCELLED_BY_USER",
    "TIME_CAP_NODE",
    "NodeResult",
    "RunResult",
    "execute_plan",
    "new_run_id",
    "suspect_summary",
]
