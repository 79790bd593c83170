"""Planner actions, traced: decompose, expand, re-plan, rate and alternatives, each recorded as
a run in the trace store (``runs.kind``), the way the UI and the CLI both call them.

The planner (``engine.planner``) returns its results and the ``Completion`` of every call but
not the messages it sent. So each action here runs the planner on a ``RecordingBackend`` that
wraps the real one and notes every call's messages, settings and start time; the result and
those notes are turned into plain rows (``storage.traces.planner_runs``), since storage does
not know the planner. A trace store that cannot be written never costs the plan: the result
comes back with a note saying it was not recorded.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import ArborError, PlannerCancelled, TraceStoreError, user_message
from engine.models import Backend, ChatMessage, Completion, backend_for
from engine.models.base import TokenCallback
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.planner.alternatives import sample_alternatives
from engine.planner.base_planner import Progress
from engine.planner.decompose import DecomposeResult, decompose
from engine.planner.difficulty import rate_difficulty
from engine.planner.expand import ExpandResult, expand_node, replan_subtree
from storage.traces import TraceStore
from storage.traces.planner_runs import PlannerCall, PlannerRunData, record_planner_run

#: Called with the run id once the action is recorded.
Recorded = Callable[[str], None]


@dataclass
class RecordedCall:
    """What the recording backend saw of one call."""

    messages: list[ChatMessage]
    config: GenerationConfig
    json_schema: dict[str, Any] | None
    started_at: datetime
    completion: Completion | None = None
    error: str | None = None


class RecordingBackend(Backend):
    """A backend that answers through ``inner`` and keeps every call's messages and timing.

    Everything else (label, prices, slots, token counts, any method a newer backend adds) is
    the inner backend's. ``on_call`` hears "planner call N" before each call, which is the
    progress the UI shows when the planner itself reports none.
    """

    def __init__(self, inner: Backend, on_call: Progress | None = None):
        self.inner = inner
        self.label = inner.label
        # Settings the interface declares with class-level defaults (prices, slots, kind...)
        # are the inner backend's, whatever it sets.
        for name, value in vars(Backend).items():
            if not name.startswith("_") and not callable(value) and not isinstance(value, property):
                setattr(self, name, getattr(inner, name, value))
        self.recorded: list[RecordedCall] = []
        self._on_call = on_call
        self._lock = threading.Lock()

    @property
    def resource_key(self) -> str:
        return self.inner.resource_key

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        entry = RecordedCall(list(messages), config, json_schema, datetime.now(UTC))
        with self._lock:
            self.recorded.append(entry)
            number = len(self.recorded)
        if self._on_call is not None:
            self._on_call(f"planner call {number}")
        try:
            # Only the options given are passed on: simple backends take no on_token / cancel.
            options: dict[str, Any] = {"json_schema": json_schema}
            if on_token is not None:
                options["on_token"] = on_token
            if cancel is not None:
                options["cancel"] = cancel
            completion = self.inner.complete(messages, config, **options)
        except Exception as exc:
            entry.error = str(exc)
            raise
        entry.completion = completion
        return completion

    def complete_samples(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        seeds: list[int | None],
        *,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        """The inner backend's samples (batched where it can), one recorded call per seed."""
        started = datetime.now(UTC)
        if self._on_call is not None:
            self._on_call(f"sampling {len(seeds)} answers")
        entries = [
            RecordedCall(list(messages), config.model_copy(update={"seed": seed}), None, started)
            for seed in seeds
        ]
        with self._lock:
            self.recorded.extend(entries)
        try:
            completions = self.inner.complete_samples(messages, config, seeds, cancel=cancel)
        except Exception as exc:
            for entry in entries:
                entry.error = str(exc)
            raise
        for entry, completion in zip(entries, completions, strict=False):
            entry.completion = completion
        return completions

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def check(self) -> str:
        return self.inner.check()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: a method a newer backend offers.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def lookup(self, completion: Completion) -> RecordedCall | None:
        for entry in self.recorded:
            if entry.completion is completion:
                return entry
        return None


# -- results -> rows ----------------------------------------------------------------------


def outline(plan: Plan, node_id: str | None = None) -> str:
    """The plan (or the subtree under ``node_id``) as numbered lines, children indented."""
    lines: list[str] = []

    def walk(node: Node, prefix: str, depth: int) -> None:
        for number, child in enumerate(node.children, start=1):
            label = f"{prefix}{number}"
            deps = f" (uses {', '.join(child.depends_on)})" if child.depends_on else ""
            lines.append(f"{'  ' * depth}{label}. {child.title}{deps}")
            walk(child, f"{label}.", depth + 1)

    start = plan.node(node_id) if node_id is not None else plan.root
    walk(start, "", 0)
    return "\n".join(lines) or start.title


def _messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _call_row(
    completion: Completion,
    backend: RecordingBackend,
    role: str,
    *,
    score: float | None = None,
    selected: bool | None = None,
    detail: dict[str, Any] | None = None,
    output: str | None = None,
    tokens: bool = True,
) -> PlannerCall:
    seen = backend.lookup(completion)
    return PlannerCall(
        role=role,
        output=completion.text if output is None else output,
        messages=_messages(seen.messages) if seen is not None else None,
        model=completion.model or backend.label,
        input_tokens=completion.usage.input_tokens if tokens else 0,
        output_tokens=completion.usage.output_tokens if tokens else 0,
        latency_s=completion.latency_s if tokens else 0.0,
        finish_reason=completion.finish_reason,
        started_at=seen.started_at if seen is not None else None,
        seed=seen.config.seed if seen is not None else None,
        cost_usd=backend.cost(completion.usage) if tokens else 0.0,
        score=score,
        selected=selected,
        detail=detail,
    )


def result_calls(
    result: DecomposeResult, backend: RecordingBackend, *, extra: dict[str, Any] | None = None
) -> list[PlannerCall]:
    """One row per planner call and per candidate plan of ``result``.

    A candidate is a ``candidate`` row (its call's tokens, prompt and timing; a second
    candidate of the same call, or one made without a call, has no tokens of its own). A call
    no candidate came from is an ``attempt`` of the JSON planner (the last one, when usable,
    selected) or, next to candidates, a ``planner`` call (pattern choice, repair...).
    """
    extra = extra or {}
    by_call: dict[int, list[int]] = {}
    for index, candidate in enumerate(result.candidates):
        if candidate.call_index is not None:
            by_call.setdefault(candidate.call_index, []).append(index)

    def candidate_row(index: int, first_of_call: bool) -> PlannerCall:
        candidate = result.candidates[index]
        detail = {
            **extra,
            "candidate": index,
            "source": candidate.source,
            "scores": dict(candidate.scores),
            "total": candidate.total,
            "problem": candidate.problem,
            "notes": list(candidate.notes),
            "call_index": candidate.call_index,
            "usable": candidate.plan is not None,
        }
        chosen = result.chosen == index
        if candidate.call_index is not None and 0 <= candidate.call_index < len(result.calls):
            return _call_row(
                result.calls[candidate.call_index],
                backend,
                "candidate",
                score=candidate.total,
                selected=chosen,
                detail=detail,
                output=candidate.text or None,
                tokens=first_of_call,
            )
        return PlannerCall(
            role="candidate",
            output=candidate.text,
            model=backend.label,
            score=candidate.total,
            selected=chosen,
            detail=detail,
            made_by_call=False,
        )

    rows: list[PlannerCall] = []
    placed: set[int] = set()
    last = len(result.calls) - 1
    for call_index, completion in enumerate(result.calls):
        indices = by_call.get(call_index, [])
        if indices:
            for position, index in enumerate(indices):
                rows.append(candidate_row(index, position == 0))
                placed.add(index)
        elif result.candidates:
            rows.append(
                _call_row(completion, backend, "planner", detail={**extra, "call": call_index})
            )
        else:
            usable = call_index == last and not result.fallback
            rows.append(
                _call_row(
                    completion,
                    backend,
                    "attempt",
                    selected=usable,
                    detail={**extra, "attempt": call_index + 1, "notes": list(result.notes)}
                    if usable
                    else {**extra, "attempt": call_index + 1},
                )
            )
    for index in range(len(result.candidates)):
        if index not in placed:
            rows.append(candidate_row(index, False))
    return rows


def _status(result: DecomposeResult) -> str:
    if result.clarification is not None:
        return "needs_detail"
    return "fallback" if result.fallback else "completed"


def _stop_reason(result: DecomposeResult) -> str | None:
    if result.clarification is not None:
        return result.clarification.message
    if result.fallback and result.notes:
        return result.notes[-1]
    return None


def _describe(kind: str, result: DecomposeResult) -> str:
    parts = [result.style]
    if result.pattern:
        parts.append(f"pattern {result.pattern}")
    if result.language:
        parts.append(f"language {result.language}")
    return f"{kind} ({', '.join(parts)})"


# -- recording ----------------------------------------------------------------------------


def _record(
    store: TraceStore,
    kind: str,
    task: str,
    backend: RecordingBackend,
    data: PlannerRunData,
    started_at: datetime,
    session_id: str | None,
    on_recorded: Recorded | None,
) -> str | None:
    """Write the run; None (and no exception) when the store cannot take it."""
    try:
        run_id = record_planner_run(
            store, kind, task, backend.label, data, started_at, datetime.now(UTC), session_id
        )
    except TraceStoreError:
        return None
    if on_recorded is not None:
        on_recorded(run_id)
    return run_id


def _failed_data(
    backend: RecordingBackend, exc: BaseException, node_id: str | None
) -> PlannerRunData:
    calls = [
        PlannerCall(
            role="planner",
            messages=_messages(entry.messages),
            model=backend.label,
            status="error" if entry.completion is None else "ok",
            error=entry.error,
            started_at=entry.started_at,
            output=entry.completion.text if entry.completion is not None else "",
        )
        for entry in backend.recorded
    ]
    reason = user_message(exc) if isinstance(exc, ArborError) else str(exc)
    # A cancelled action is no failure: the analyst stopped it and nothing was applied.
    status = "cancelled" if isinstance(exc, PlannerCancelled) else "failed"
    return PlannerRunData(status=status, calls=calls, stop_reason=reason, node_id=node_id)


def _not_recorded_note(store: TraceStore) -> str:
    return (
        f"This planner action was not recorded: the trace store {store.path} could not be written."
    )


def _accepts(function: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _backend(
    model: ModelRef, backend: Backend | None, on_progress: Progress | None
) -> RecordingBackend:
    return RecordingBackend(backend or backend_for(model), on_progress)


def decompose_traced(
    task: str,
    model: ModelRef | None = None,
    *,
    store: TraceStore,
    session_id: str | None = None,
    on_progress: Progress | None = None,
    on_recorded: Recorded | None = None,
    backend: Backend | None = None,
    seed: int | None = 7,
    **planner_options: Any,
) -> DecomposeResult:
    """``engine.planner.decompose.decompose``, recorded as a ``decompose`` run.

    ``on_progress`` hears the planner's stages when the planner reports them (its own
    ``on_progress``), else "planner call N" before each model call. ``planner_options``
    (``style``, ``samples``, ``cancel``, ``on_text``, ...) go to the planner as they are, here
    and in the functions below. Raises what ``decompose`` raises (the failed attempt is
    recorded first); a cancelled action (``PlannerCancelled``) is recorded as "cancelled".
    """
    model = model or ModelRef()
    planner_reports = _accepts(decompose, "on_progress")
    recording = _backend(model, backend, None if planner_reports else on_progress)
    kwargs: dict[str, Any] = {**planner_options, "backend": recording, "seed": seed}
    if planner_reports and on_progress is not None:
        kwargs["on_progress"] = on_progress
    started = datetime.now(UTC)
    try:
        result = decompose(task, model, **kwargs)
    except (ArborError, ValueError) as exc:
        if task.strip():
            data = _failed_data(recording, exc, None)
            _record(store, "decompose", task, recording, data, started, session_id, on_recorded)
        raise
    if on_progress is not None:
        on_progress("recording the planner run")
    data = PlannerRunData(
        status=_status(result),
        calls=result_calls(result, recording),
        answer=None if result.fallback else outline(result.plan),
        plan_json=result.plan.to_json(indent=None),
        notes=result.notes,
        stop_reason=_stop_reason(result),
        title=_describe("decompose", result),
    )
    if _record(store, "decompose", task, recording, data, started, session_id, on_recorded) is None:
        result.notes.append(_not_recorded_note(store))
    return result


def split_traced(
    plan: Plan,
    node_id: str,
    model: ModelRef | None = None,
    *,
    replace: bool = False,
    store: TraceStore,
    session_id: str | None = None,
    on_progress: Progress | None = None,
    on_recorded: Recorded | None = None,
    backend: Backend | None = None,
    **planner_options: Any,
) -> ExpandResult:
    """``expand_node`` (or ``replan_subtree`` with ``replace``), recorded as an ``expand`` or
    ``replan`` run on ``node_id``."""
    kind = "replan" if replace else "expand"
    model = model or plan.default_model
    split = replan_subtree if replace else expand_node
    planner_reports = _accepts(split, "on_progress")
    recording = _backend(model, backend, None if planner_reports else on_progress)
    if planner_reports and on_progress is not None:
        planner_options["on_progress"] = on_progress
    started = datetime.now(UTC)
    try:
        result = split(plan, node_id, model, backend=recording, **planner_options)
    except ArborError as exc:
        data = _failed_data(recording, exc, node_id)
        _record(store, kind, plan.task, recording, data, started, session_id, on_recorded)
        raise
    data = PlannerRunData(
        status=_status(result),
        calls=result_calls(result, recording, extra={"new_ids": list(result.new_ids)}),
        answer=None if result.fallback else outline(result.plan, node_id),
        plan_json=result.plan.to_json(indent=None),
        notes=result.notes,
        stop_reason=_stop_reason(result),
        node_id=node_id,
        title=_describe(kind, result) + f" of {node_id}",
    )
    if _record(store, kind, plan.task, recording, data, started, session_id, on_recorded) is None:
        result.notes.append(_not_recorded_note(store))
    return result


def expand_traced(
    plan: Plan, node_id: str, model: ModelRef | None = None, **options: Any
) -> ExpandResult:
    """``engine.planner.expand.expand_node``, recorded (see ``split_traced``)."""
    return split_traced(plan, node_id, model, replace=False, **options)


def replan_traced(
    plan: Plan, node_id: str, model: ModelRef | None = None, **options: Any
) -> ExpandResult:
    """``engine.planner.expand.replan_subtree``, recorded (see ``split_traced``)."""
    return split_traced(plan, node_id, model, replace=True, **options)


def rate_traced(
    plan: Plan,
    model: ModelRef | None = None,
    *,
    only_missing: bool = True,
    store: TraceStore,
    session_id: str | None = None,
    on_progress: Progress | None = None,
    on_recorded: Recorded | None = None,
    backend: Backend | None = None,
    **planner_options: Any,
) -> tuple[Plan, list[str]]:
    """``rate_difficulty``, recorded as a ``rate`` run: one ``rate`` row per call (the rater
    returns no ``Completion``s, so the calls are the ones the recording backend saw)."""
    model = model or plan.default_model
    planner_reports = _accepts(rate_difficulty, "on_progress")
    recording = _backend(model, backend, None if planner_reports else on_progress)
    if planner_reports and on_progress is not None:
        planner_options["on_progress"] = on_progress
    started = datetime.now(UTC)
    try:
        rated, notes = rate_difficulty(
            plan, model, backend=recording, only_missing=only_missing, **planner_options
        )
    except ArborError as exc:
        data = _failed_data(recording, exc, None)
        _record(store, "rate", plan.task, recording, data, started, session_id, on_recorded)
        raise
    calls = [
        _call_row(entry.completion, recording, "rate", detail={"batch": number})
        for number, entry in enumerate(recording.recorded, start=1)
        if entry.completion is not None
    ]
    ratings = [
        f"{node.id}: {node.difficulty}"
        + (f" ({node.difficulty_reason})" if node.difficulty_reason else "")
        for node, _ in rated.iter_nodes()
        if node.difficulty is not None
    ]
    data = PlannerRunData(
        status="completed",
        calls=calls,
        answer="\n".join(ratings) or None,
        plan_json=rated.to_json(indent=None),
        notes=notes,
        title="rate difficulty",
    )
    if _record(store, "rate", plan.task, recording, data, started, session_id, on_recorded) is None:
        notes.append(_not_recorded_note(store))
    return rated, notes


def alternatives_traced(
    task: str,
    k: int,
    model: ModelRef | None = None,
    *,
    plan: Plan | None = None,
    node_id: str | None = None,
    seed: int | None = None,
    store: TraceStore,
    session_id: str | None = None,
    on_progress: Progress | None = None,
    on_recorded: Recorded | None = None,
    backend: Backend | None = None,
    **planner_options: Any,
) -> list[DecomposeResult | ExpandResult]:
    """``sample_alternatives``, recorded as one ``alternatives`` run: every sample's calls and
    candidates, marked with ``detail.alternative`` (1-based); ``selected`` marks what each
    sample's planner chose (the analyst picks among the samples later)."""
    model = model or (plan.default_model if plan is not None else ModelRef())
    planner_reports = _accepts(sample_alternatives, "on_progress")
    recording = _backend(model, backend, None if planner_reports else on_progress)
    if planner_reports and on_progress is not None:
        planner_options["on_progress"] = on_progress
    started = datetime.now(UTC)
    try:
        results = sample_alternatives(
            task,
            k,
            model,
            backend=recording,
            plan=plan,
            node_id=node_id,
            seed=seed,
            **planner_options,
        )
    except ArborError as exc:
        data = _failed_data(recording, exc, node_id)
        _record(store, "alternatives", task, recording, data, started, session_id, on_recorded)
        raise
    calls: list[PlannerCall] = []
    summaries: list[str] = []
    for number, result in enumerate(results, start=1):
        calls.extend(result_calls(result, recording, extra={"alternative": number}))
        shown = "unusable" if result.fallback else outline(result.plan, node_id).replace("\n", "; ")
        summaries.append(f"Alternative {number}: {shown}")
    usable = sum(not r.fallback for r in results)
    data = PlannerRunData(
        status="completed" if usable else "fallback",
        calls=calls,
        answer="\n".join(summaries),
        notes=[f"{usable} of {len(results)} alternatives usable"],
        node_id=node_id,
        title=f"alternatives ×{k}" + (f" of {node_id}" if node_id else ""),
    )
    if (
        _record(store, "alternatives", task, recording, data, started, session_id, on_recorded)
        is None
        and results
    ):
        results[0].notes.append(_not_recorded_note(store))
    return results


__all__ = [
    "RecordingBackend",
    "alternatives_traced",
    "decompose_traced",
    "expand_traced",
    "outline",
    "rate_traced",
    "replan_traced",
    "result_calls",
    "split_traced",
]
