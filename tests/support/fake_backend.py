"""An in-process fake model, for pure-logic tests only (ordering, parallelism, caps, failures).

Every node of a plan gets its own model reference naming the node, so the fake knows which node
it serves without parsing prompts. Model behaviour itself is tested against the real GGUF.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CallCancelled
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.call_cache import CachedCall
from engine.run.events import ModelCallFinished

FAKE_URL = "http://fake.invalid/v1"


@dataclass
class Behaviour:
    """What the fake does for one node."""

    sleep_s: float = 0.0
    output: str | None = None  # None: "output of <node id>"
    output_tokens: int = 10
    error: BaseException | None = None
    #: Pieces streamed to ``on_token`` one per ``sleep_s / len(stream)`` (cancel checked between).
    stream: tuple[str, ...] = ()
    #: Calls of backends sharing a resource share ``max_concurrent`` slots (default: own slot).
    resource: str | None = None
    max_concurrent: int = 1


@dataclass
class Recorder:
    """What the fake saw: call order, overlap, granted output limits."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    max_active: int = 0
    calls: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_tokens: dict[str, int] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)

    def overlapped(self, a: str, b: str) -> bool:
        (a0, a1), (b0, b1) = self.intervals[a], self.intervals[b]
        return a0 < b1 and b0 < a1


class FakeBackend(Backend):
    def __init__(self, node_id: str, behaviour: Behaviour, recorder: Recorder):
        self.node_id = node_id
        self.behaviour = behaviour
        self.recorder = recorder
        self.label = f"fake:{node_id}"
        self.max_concurrent = behaviour.max_concurrent

    @property
    def resource_key(self) -> str:
        return self.behaviour.resource or self.label

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        rec = self.recorder
        prompt = "\n".join(m["content"] for m in messages)
        with rec.lock:
            rec.active += 1
            rec.max_active = max(rec.max_active, rec.active)
            rec.calls.append(self.node_id)
            rec.max_tokens[self.node_id] = config.max_tokens
            rec.prompts[self.node_id] = prompt
        start = time.perf_counter()
        streamed: list[str] = []
        try:
            pieces = self.behaviour.stream
            if pieces:
                for piece in pieces:
                    if cancel is not None and cancel.wait(self.behaviour.sleep_s / len(pieces)):
                        raise CallCancelled("fake call cancelled", "".join(streamed))
                    streamed.append(piece)
                    if on_token is not None:
                        on_token(piece)
            elif self.behaviour.sleep_s:
                time.sleep(self.behaviour.sleep_s)
            if self.behaviour.error is not None:
                raise self.behaviour.error
        finally:
            with rec.lock:
                rec.active -= 1
                rec.intervals[self.node_id] = (start, time.perf_counter())
        text = self.behaviour.output
        if pieces:
            text = "".join(pieces)
        if text is None:
            text = f"output of {self.node_id}"
        output_tokens = min(config.max_tokens, self.behaviour.output_tokens)
        usage = Usage(self.count_tokens(prompt), output_tokens)
        return Completion(text, usage, time.perf_counter() - start, self.label, "stop")


def fake_models(plan: Plan) -> Plan:
    """A copy of ``plan`` whose every node names its own fake model."""

    def convert(node: Node) -> Node:
        return node.model_copy(
            update={
                "model": ModelRef(kind="remote", base_url=FAKE_URL, model=node.id),
                "children": [convert(child) for child in node.children],
            }
        )

    return plan.model_copy(update={"root": convert(plan.root)})


def fake_factory(behaviours: dict[str, Behaviour] | None = None, recorder: Recorder | None = None):
    """A ``backend_factory`` for ``execute_plan``; returns (factory, recorder)."""
    behaviours = behaviours or {}
    recorder = recorder or Recorder()

    def factory(ref: ModelRef) -> Backend:
        assert ref.kind == "remote" and ref.base_url == FAKE_URL, f"not a fake model: {ref}"
        return FakeBackend(ref.model or "?", behaviours.get(ref.model or "", Behaviour()), recorder)

    return factory, recorder


def tree(spec: dict[str, Any], *, task: str = "test task") -> Plan:
    """Build a plan from a nested dict: {"id": ..., "children": [...], "depends_on": [...]}."""

    def build(item: dict[str, Any]) -> Node:
        return Node(
            id=item["id"],
            title=item.get("title", f"step {item['id']}"),
            instruction=item.get("instruction", f"do {item['id']}"),
            depends_on=item.get("depends_on", []),
            children=[build(child) for child in item.get("children", [])],
        )

    return Plan(task=task, root=build(spec))


class ScriptedPlanner(Backend):
    """Answers each call with the next scripted text and records what it was asked.

    For tests of repair, retry and tree surgery around planner output, not of model quality.
    """

    label = "scripted"
    #: It answers in JSON like an instruction-tuned model, so "auto" gives it the JSON planner.
    declared_kind = "instruct"

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.requests: list[tuple[list[ChatMessage], GenerationConfig, Any]] = []

    def complete(self, messages, config, *, json_schema=None, **_: Any) -> Completion:
        self.requests.append((messages, config, json_schema))
        if not self.texts:
            raise AssertionError("the planner was called more often than scripted")
        return Completion(self.texts.pop(0), Usage(10, 10), 0.01, self.label, "stop")

    @property
    def prompts(self) -> list[str]:
        """Each request's messages joined into one text."""
        return ["\n".join(m["content"] for m in messages) for messages, _, _ in self.requests]


def subtask(
    title: str,
    deps: Any = (),
    instruction: str | None = None,
    difficulty: Any = None,
    reason: Any = None,
) -> dict[str, Any]:
    """One item of planner output, as the schema asks for it."""
    item: dict[str, Any] = {
        "title": title,
        "instruction": instruction if instruction is not None else f"Do {title} now.",
        "depends_on": list(deps) if isinstance(deps, tuple | list) else deps,
    }
    if difficulty is not None:
        item["difficulty"] = difficulty
    if reason is not None:
        item["reason"] = reason
    return item


def planner_json(*subs: dict[str, Any]) -> str:
    import json

    return json.dumps({"subtasks": list(subs)})


class MemoryCache:
    """An in-memory call cache and run listener, standing in for the trace store in logic tests."""

    def __init__(self) -> None:
        self.calls: dict[str, CachedCall] = {}
        self.lookups = 0

    def __call__(self, event: object) -> None:
        if isinstance(event, ModelCallFinished) and event.status == "ok" and event.cache_key:
            self.calls[event.cache_key] = CachedCall(
                event.call_id,
                event.run_id,
                event.output,
                event.input_tokens,
                event.output_tokens,
                event.finish_reason,
            )

    def lookup(self, keys: Sequence[str]) -> dict[str, CachedCall]:
        self.lookups += 1
        return {key: self.calls[key] for key in keys if key in self.calls}
