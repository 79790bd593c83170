"""Which nodes may run now: a pure state machine over the plan's execution graph.

No IO, no clock, no threads: the executor tells it what started and finished and asks what is
ready. That keeps ordering, failure propagation and stopping testable without any model.

Bookkeeping is incremental (a count of unfinished predecessors per node and a ready set), so a
step costs time proportional to the node's edges, not to the plan: a 1000-node plan is
scheduled in linear time.
"""

from __future__ import annotations

from enum import StrEnum

import networkx as nx


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # an upstream node failed
    SKIPPED = "skipped"  # the run stopped (cap, cancel) before it started
    CANCELLED = "cancelled"  # it was running when the run was cancelled


TERMINAL = {
    NodeStatus.DONE,
    NodeStatus.FAILED,
    NodeStatus.BLOCKED,
    NodeStatus.SKIPPED,
    NodeStatus.CANCELLED,
}


class Scheduler:
    """Tracks node states; ``graph`` edges ``a -> b`` mean a must be done before b starts."""

    def __init__(self, graph: nx.DiGraph, order: list[str]):
        self.graph = graph
        self.order = order
        self.position = {node: index for index, node in enumerate(order)}
        self.status: dict[str, NodeStatus] = {node: NodeStatus.PENDING for node in order}
        self.reasons: dict[str, str] = {}
        self._unfinished_predecessors = {node: graph.in_degree(node) for node in order}
        self._ready = {node for node, count in self._unfinished_predecessors.items() if not count}
        self._running: set[str] = set()
        self._terminal = 0

    def ready(self) -> list[str]:
        """Pending nodes whose predecessors are all done, in plan order."""
        return sorted(self._ready, key=self.position.__getitem__)

    def start(self, node: str) -> None:
        if self.status[node] is not NodeStatus.PENDING:
            raise ValueError(f"node {node!r} is {self.status[node]}, not pending")
        if node not in self._ready:
            raise ValueError(f"node {node!r} still waits for an upstream node")
        self.status[node] = NodeStatus.RUNNING
        self._ready.discard(node)
        self._running.add(node)

    def finish(self, node: str) -> None:
        self._end(node, NodeStatus.DONE)
        for successor in self.graph.successors(node):
            self._unfinished_predecessors[successor] -= 1
            if (
                not self._unfinished_predecessors[successor]
                and self.status[successor] is NodeStatus.PENDING
            ):
                self._ready.add(successor)

    def fail(self, node: str, reason: str) -> list[str]:
        """Mark ``node`` failed and every node downstream blocked; returns the blocked ids."""
        self._end(node, NodeStatus.FAILED)
        self.reasons[node] = reason
        downstream_of_failure = nx.descendants(self.graph, node)
        blocked = sorted(
            (
                downstream
                for downstream in downstream_of_failure
                if self.status[downstream] is NodeStatus.PENDING
            ),
            key=self.position.__getitem__,
        )
        for downstream in blocked:
            self._set_terminal(downstream, NodeStatus.BLOCKED)
            self.reasons[downstream] = f"blocked: upstream node {node!r} failed ({reason})"
        return blocked

    def cancel_running(self, node: str, reason: str) -> None:
        """A running node was stopped by a cancel."""
        self._end(node, NodeStatus.CANCELLED)
        self.reasons[node] = reason

    def requeue(self, node: str) -> None:
        """Put a running node back to pending (it was not started after all)."""
        self._require_running(node)
        self.status[node] = NodeStatus.PENDING
        self._running.discard(node)
        self._ready.add(node)

    def skip_pending(self, reason: str) -> list[str]:
        """Stop starting work: every pending node becomes skipped; returns their ids."""
        skipped = [node for node in self.order if self.status[node] is NodeStatus.PENDING]
        for node in skipped:
            self._set_terminal(node, NodeStatus.SKIPPED)
            self.reasons[node] = reason
        return skipped

    @property
    def running(self) -> list[str]:
        return sorted(self._running, key=self.position.__getitem__)

    @property
    def finished(self) -> bool:
        return self._terminal == len(self.order)

    def _end(self, node: str, status: NodeStatus) -> None:
        self._require_running(node)
        self._running.discard(node)
        self._set_terminal(node, status)

    def _set_terminal(self, node: str, status: NodeStatus) -> None:
        self.status[node] = status
        self._ready.discard(node)
        self._terminal += 1

    def _require_running(self, node: str) -> None:
        if self.status[node] is not NodeStatus.RUNNING:
            raise ValueError(f"node {node!r} is {self.status[node]}, not running")
