"""Which nodes may run now: a pure state machine over the plan's execution graph.

No IO, no clock, no threads: the executor tells it what started and finished and asks what is
ready. That keeps ordering, failure propagation and stopping testable without any model.
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


TERMINAL = {NodeStatus.DONE, NodeStatus.FAILED, NodeStatus.BLOCKED, NodeStatus.SKIPPED}


class Scheduler:
    """Tracks node states; ``graph`` edges ``a -> b`` mean a must be done before b starts."""

    def __init__(self, graph: nx.DiGraph, order: list[str]):
        self.graph = graph
        self.order = order
        self.status: dict[str, NodeStatus] = {node: NodeStatus.PENDING for node in order}
        self.reasons: dict[str, str] = {}

    def ready(self) -> list[str]:
        """Pending nodes whose predecessors are all done, in plan order."""
        return [
            node
            for node in self.order
            if self.status[node] is NodeStatus.PENDING
            and all(self.status[p] is NodeStatus.DONE for p in self.graph.predecessors(node))
        ]

    def start(self, node: str) -> None:
        if self.status[node] is not NodeStatus.PENDING:
            raise ValueError(f"node {node!r} is {self.status[node]}, not pending")
        self.status[node] = NodeStatus.RUNNING

    def finish(self, node: str) -> None:
        self._require_running(node)
        self.status[node] = NodeStatus.DONE

    def fail(self, node: str, reason: str) -> list[str]:
        """Mark ``node`` failed and every node downstream blocked; returns the blocked ids."""
        self._require_running(node)
        self.status[node] = NodeStatus.FAILED
        self.reasons[node] = reason
        blocked = []
        downstream_of_failure = nx.descendants(self.graph, node)
        for downstream in self.order:
            if downstream in downstream_of_failure and (
                self.status[downstream] is NodeStatus.PENDING
            ):
                self.status[downstream] = NodeStatus.BLOCKED
                self.reasons[downstream] = f"blocked: upstream node {node!r} failed"
                blocked.append(downstream)
        return blocked

    def requeue(self, node: str) -> None:
        """Put a running node back to pending (it was not started after all)."""
        self._require_running(node)
        self.status[node] = NodeStatus.PENDING

    def skip_pending(self, reason: str) -> list[str]:
        """Stop starting work: every pending node becomes skipped; returns their ids."""
        skipped = [node for node in self.order if self.status[node] is NodeStatus.PENDING]
        for node in skipped:
            self.status[node] = NodeStatus.SKIPPED
            self.reasons[node] = reason
        return skipped

    @property
    def running(self) -> list[str]:
        return [node for node in self.order if self.status[node] is NodeStatus.RUNNING]

    @property
    def finished(self) -> bool:
        return all(status in TERMINAL for status in self.status.values())

    def _require_running(self, node: str) -> None:
        if self.status[node] is not NodeStatus.RUNNING:
            raise ValueError(f"node {node!r} is {self.status[node]}, not running")
