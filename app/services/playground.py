"""The playground for a node or a call, as the UI and the CLI both use it.

``open_node(ws, run_id, node_id)`` (or ``open_call`` for one recorded model call) gathers what
the playground starts from: the plan (the run's stored plan, or the caller's current one), the
recorded outputs of that run's nodes (so nothing upstream runs again), the node's prompt and
its effective model, generation settings and strategy as a ``Variant``. ``run_variants`` runs
variants one after another (one model at a time; a loaded model serves one call at a time
anyway), streams each one's text, and records them all as one run of kind ``playground`` in the
trace store. ``apply_variant`` turns a variant's changes into a plan edit
(``engine.plan.editing.update_node``), which the workbench records for undo. ``PlaygroundJobs``
runs variants in the background for the UI, with a progress record a fragment polls.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from app.services.background import BackgroundJobs
from engine.errors import ArborError, PlanError, TraceStoreError, user_message
from engine.models import registry_backend_factory
from engine.models.base import ChatMessage
from engine.plan import GenerationConfig, ModelRef, Plan, editing
from engine.plan.compute_config import StrategyConfig
from engine.run.allocation import allocate
from engine.run.budget import RunCaps
from engine.run.playground import (
    MAX_VARIANTS,
    Variant,
    VariantResult,
    render_prompt,
    run_variant,
    varied_seeds,
)
from storage.traces.playground_runs import (
    PlaygroundCallRow,
    PlaygroundVariantRow,
    record_playground_run,
)
from storage.workspace import Workspace

#: The node id a call outside any plan node (a planner's) runs under.
STAND_IN_NODE = "call"
#: Called with (variant index, text streamed so far).
VariantText = Callable[[int, str], None]


@dataclass
class PlaygroundSource:
    """What a playground starts from: one node of one recorded run."""

    run_id: str
    node_id: str
    plan: Plan
    #: Recorded outputs of the run's finished nodes (node id -> output).
    outputs: dict[str, str]
    #: The node's effective settings in the plan: the first variant.
    base: Variant
    #: The node's output in the run (None if it did not finish).
    recorded_output: str | None = None
    #: The call the playground was opened from, if any (its messages are the base prompt).
    call_id: str | None = None
    session_id: str | None = None
    #: Upstream nodes with no recorded output in the run (their place in the prompt is empty).
    missing: list[str] = field(default_factory=list)
    #: Whether the node is in ``plan`` (a planner call's node is not; nothing can be applied).
    in_plan: bool = True

    def prompt(self, variant: Variant | None = None) -> list[ChatMessage]:
        """The messages ``variant`` (default: the base) sends, upstream outputs from the run."""
        variant = variant or self.base
        if not self.in_plan:
            return list(variant.messages or [])
        return render_prompt(self.plan, self.node_id, self.outputs, variant)


@dataclass
class PlaygroundOutcome:
    """What ``run_variants`` gave: each variant's result and the playground run's id."""

    results: list[VariantResult]
    run_id: str | None
    #: Why the run was not recorded (the results are still good), or None.
    record_problem: str | None = None


# -- opening ---------------------------------------------------------------------------------
def _run_record(ws: Workspace, run_id: str) -> dict[str, Any]:
    record = ws.traces.run(run_id)
    if record is None:
        raise TraceStoreError(
            f"No run {run_id!r} in the trace store {ws.traces.path}; `run.py runs` lists the "
            "recorded runs."
        )
    return record


def _run_plan(record: dict[str, Any], plan: Plan | None) -> Plan:
    if plan is not None:
        return plan
    if not record.get("plan_json"):
        raise PlanError(f"Run {record['run_id']!r} has no stored plan to open in a playground.")
    return Plan.from_json(record["plan_json"], source=f"run {record['run_id']}")


def _caps(record: dict[str, Any]) -> RunCaps:
    try:
        return (
            RunCaps.model_validate_json(record["caps_json"])
            if record.get("caps_json")
            else RunCaps()
        )
    except ValueError:
        return RunCaps()


def base_variant(plan: Plan, node_id: str, caps: RunCaps | None = None) -> Variant:
    """The node's effective model, generation settings and strategy, as a run gives them: its
    own, else what the plan's allocation policy chooses under ``caps``."""
    node = plan.node(node_id)
    model, strategy = plan.model_for(node), node.strategy or plan.default_strategy
    try:
        allocation = allocate(plan, caps or RunCaps()).nodes[node_id]
        model, strategy = allocation.model, allocation.strategy
    except (ArborError, KeyError, ValueError):  # an invalid graph: the node's own settings
        pass
    return Variant(model=model, generation=plan.generation_for(node), strategy=strategy)


def _outputs(ws: Workspace, run_id: str) -> dict[str, str]:
    return {
        row["node_id"]: row["output"]
        for row in ws.traces.node_executions(run_id)
        if row["status"] == "done" and row["output"] is not None
    }


def open_node(
    ws: Workspace,
    run_id: str,
    node_id: str,
    *,
    plan: Plan | None = None,
    session_id: str | None = None,
) -> PlaygroundSource:
    """A playground for ``node_id`` with upstream outputs from run ``run_id``.

    ``plan`` is the plan to render and apply to (the workbench's current one); None takes the
    run's stored plan. ``TraceStoreError`` for an unknown run, ``PlanError`` for a node that is
    not in the plan.
    """
    record = _run_record(ws, run_id)
    plan = _run_plan(record, plan)
    if node_id not in plan.nodes():
        known = ", ".join(list(plan.nodes())[:20])
        raise PlanError(f"No node {node_id!r} in the plan of run {run_id!r}; its nodes: {known}.")
    outputs = _outputs(ws, run_id)
    upstream = plan.node(node_id)
    wanted = [*upstream.depends_on, *(child.id for child in upstream.children)]
    return PlaygroundSource(
        run_id=run_id,
        node_id=node_id,
        plan=plan,
        outputs=outputs,
        base=base_variant(plan, node_id, _caps(record)),
        recorded_output=outputs.get(node_id),
        session_id=session_id or record.get("session_id"),
        missing=[nid for nid in wanted if nid not in outputs],
    )


def _stand_in(task: str) -> Plan:
    """A one-node plan for a call outside any plan node (a planner's call)."""
    return Plan.model_validate({"task": task, "root": {"id": STAND_IN_NODE, "title": "call"}})


def _role(value: object) -> Literal["system", "user", "assistant"]:
    return value if value in ("system", "assistant") else "user"  # type: ignore[return-value]


def open_call(
    ws: Workspace,
    run_id: str,
    call_id: str,
    *,
    plan: Plan | None = None,
    session_id: str | None = None,
) -> PlaygroundSource:
    """A playground for one recorded call: its exact messages, its node's settings (or the
    plan's defaults for a call outside the plan, such as a planner's), its seed."""
    record = _run_record(ws, run_id)
    call = next((c for c in ws.traces.model_calls(run_id) if c["call_id"] == call_id), None)
    if call is None:
        raise TraceStoreError(f"No call {call_id!r} in run {run_id!r}.")
    try:
        messages = json.loads(call["prompt"] or "[]")
    except json.JSONDecodeError as exc:
        raise TraceStoreError(f"Call {call_id!r} has no readable prompt: {exc}") from exc
    if not isinstance(messages, list) or not messages:
        raise TraceStoreError(f"Call {call_id!r} has no recorded prompt to play with.")
    recorded = [
        ChatMessage(role=_role(m.get("role")), content=str(m.get("content") or ""))
        for m in messages
        if isinstance(m, dict)
    ]
    try:
        plan = _run_plan(record, plan)
    except ArborError:
        plan = _stand_in(record.get("task") or "")
    node_id = call["node_id"]
    variant_of = re.fullmatch(r"(.+)@v\d+", node_id)  # a call of an earlier playground run
    if variant_of and variant_of.group(1) in plan.nodes():
        node_id = variant_of.group(1)
    in_plan = node_id in plan.nodes() and call.get("role") in (None, "answer", "sample")
    if in_plan:
        base = base_variant(plan, node_id, _caps(record))
    else:
        base = Variant(model=plan.default_model, generation=plan.default_generation,
                       strategy=StrategyConfig(kind="single", samples=1))  # fmt: skip
    seed = call.get("seed")
    base.generation = base.generation.model_copy(
        update={"seed": int(seed) if seed is not None else base.generation.seed}
    )
    if base.strategy.kind != "single":  # one call is replayed as one call
        base.strategy = StrategyConfig(kind="single", samples=1)
    base.messages = recorded
    outputs = _outputs(ws, run_id)
    return PlaygroundSource(
        run_id=run_id,
        node_id=node_id,
        plan=plan,
        outputs=outputs,
        base=base,
        recorded_output=call.get("output"),
        call_id=call_id,
        session_id=session_id or record.get("session_id"),
        in_plan=in_plan,
    )


# -- variants --------------------------------------------------------------------------------
def resolve_model(ws: Workspace, name_or_path: str) -> ModelRef:
    """A model named on the command line: a registry entry's name, ``bundled``, or a GGUF path."""
    from engine.models.registry import Registry

    text = name_or_path.strip()
    if text in ("", "bundled"):
        return ModelRef()
    registry = Registry.in_data_dir(ws.root)
    if text in registry.names():
        return registry.get(text).ref
    path = Path(text).expanduser()
    if path.is_file():
        return ModelRef(kind="local", path=str(path.absolute()))
    raise ArborError(
        f"--model {name_or_path}: neither a model in the registry ({', '.join(registry.names())})"
        " nor a GGUF file."
    )


def variants_from(
    base: Variant,
    count: int = 1,
    *,
    model: ModelRef | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    instruction: str | None = None,
    strategy: StrategyConfig | None = None,
) -> list[Variant]:
    """``count`` variants of ``base`` with the given changes; several get distinct seeds (the
    spread of one setting). ``ValueError`` for a count out of 1..MAX_VARIANTS or a setting out
    of its bounds."""
    if not 1 <= count <= MAX_VARIANTS:
        raise ValueError(f"--variants must be between 1 and {MAX_VARIANTS}, not {count}.")
    changes: dict[str, Any] = {}
    if temperature is not None:
        changes["temperature"] = temperature
    if max_tokens is not None:
        changes["max_tokens"] = max_tokens
    generation = GenerationConfig.model_validate({**base.generation.model_dump(), **changes})
    seeds: list[int | None] = [generation.seed]
    if count > 1:
        seeds = list(varied_seeds(base.generation.seed, count))
    return [
        Variant(
            model=model or base.model,
            generation=generation.model_copy(update={"seed": seed}),
            strategy=strategy or base.strategy,
            instruction=instruction if instruction is not None else base.instruction,
            messages=None if instruction is not None else base.messages,
        )
        for seed in seeds
    ]


def _rows(
    result: VariantResult, source: PlaygroundSource, started: datetime
) -> PlaygroundVariantRow:
    calls = [
        PlaygroundCallRow(
            call_id=record.call_id,
            role=record.role,
            sample_index=record.sample_index,
            model=record.model,
            messages=[{"role": m["role"], "content": m["content"]} for m in record.messages],
            output=record.output,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            latency_s=record.latency_s,
            status=record.status,
            error=record.error,
            started_at=record.started_at,
            finished_at=record.finished_at,
            seed=record.seed,
            cache_key=record.cache_key,
            cost_usd=record.cost_usd,
            finish_reason=record.finish_reason,
            score=record.score,
            vote=record.vote,
            selected=record.selected,
        )
        for record in result.records
    ]
    status = "done" if result.ok else "cancelled" if result.cancelled else "failed"
    title = f"{source.plan.node(source.node_id).title if source.in_plan else source.node_id}"
    return PlaygroundVariantRow(
        index=result.index,
        title=f"{title} · variant {result.index + 1}",
        model=result.variant.model.label,
        status=status,
        output=result.output,
        error=result.error,
        started_at=started,
        finished_at=datetime.now(UTC),
        strategy=f"playground: {result.variant.strategy.label}",
        settings=result.variant.settings(),
        suspect=result.suspect,
        calls=calls,
    )


def run_variants(
    ws: Workspace,
    source: PlaygroundSource,
    variants: Sequence[Variant],
    *,
    on_text: VariantText | None = None,
    on_result: Callable[[VariantResult], None] | None = None,
    cancel: threading.Event | None = None,
    session_id: str | None = None,
) -> PlaygroundOutcome:
    """Run ``variants`` one after another and record them as one ``playground`` run.

    Each variant's streamed text goes to ``on_text(index, text)``, its result to ``on_result``
    as soon as it is done. A cancel stops the running variant and skips the rest. A trace store
    that cannot be written costs nothing but the record (``record_problem`` says why).
    """
    if not variants:
        raise ValueError("Nothing to run: add at least one variant.")
    if len(variants) > MAX_VARIANTS:
        raise ValueError(f"At most {MAX_VARIANTS} variants at once, not {len(variants)}.")
    factory, _problem = registry_backend_factory(ws.root)
    started_at = datetime.now(UTC)
    results: list[VariantResult] = []
    rows: list[PlaygroundVariantRow] = []
    plan, target = source.plan, source.node_id
    if not source.in_plan:  # a call outside the plan: its recorded messages on a stand-in node
        plan, target = _stand_in(plan.task), STAND_IN_NODE
    for index, variant in enumerate(variants):
        if cancel is not None and cancel.is_set():
            break
        began = datetime.now(UTC)

        def stream(text: str, index: int = index) -> None:
            if on_text is not None:
                on_text(index, text)

        result = run_variant(
            plan, target, source.outputs, variant, index, factory,
            on_text=stream, cancel=cancel,
        )  # fmt: skip
        results.append(result)
        rows.append(_rows(result, source, began))
        if on_result is not None:
            on_result(result)
    outcome = PlaygroundOutcome(results, None)
    try:
        outcome.run_id = record_playground_run(
            ws.traces,
            source_run_id=source.run_id,
            node_id=source.node_id,
            task=source.plan.task,
            variants=rows,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            session_id=session_id or source.session_id,
            plan_json=source.plan.to_json(),
        )
    except TraceStoreError as exc:
        outcome.record_problem = user_message(exc)
    return outcome


# -- applying --------------------------------------------------------------------------------
def variant_changes(source: PlaygroundSource, variant: Variant) -> dict[str, Any]:
    """The node fields ``variant`` changes, as ``editing.update_node`` takes them (only what
    differs from the node's effective settings; a prompt edited by hand is not a node field)."""
    node = source.plan.node(source.node_id)
    base = source.base
    changes: dict[str, Any] = {}
    if variant.instruction is not None and variant.instruction != node.instruction:
        changes["instruction"] = variant.instruction
    if variant.model != base.model:
        changes["model"] = variant.model
    if variant.generation != base.generation:
        changes["generation"] = variant.generation
    if variant.strategy != base.strategy:
        changes["strategy"] = variant.strategy
    return changes


def apply_variant(source: PlaygroundSource, variant: Variant, plan: Plan | None = None) -> Plan:
    """``plan`` (default: the source's) with ``variant``'s changes made to the node.

    ``PlanError`` when the node is not in the plan or the variant changes nothing a node
    holds (a hand-edited prompt has to go into the instruction to be kept).
    """
    plan = plan or source.plan
    if not source.in_plan:
        raise PlanError(
            f"Call {source.call_id} is not a node's own call; there is no node to apply it to."
        )
    changes = variant_changes(source, variant)
    if not changes:
        hint = (
            " Its prompt was edited by hand: write the change into the instruction to keep it."
            if variant.messages is not None and source.call_id is None
            else ""
        )
        raise PlanError(f"The variant changes nothing in node {source.node_id!r}.{hint}")
    return editing.update_node(plan, source.node_id, **changes)


# -- background jobs for the UI --------------------------------------------------------------
@dataclass
class PlaygroundJob:
    """Progress of one background playground run, read by the page through ``snapshot()``."""

    job_id: str
    count: int
    texts: dict[int, str] = field(default_factory=dict)
    results: dict[int, VariantResult] = field(default_factory=dict)
    run_id: str | None = None
    record_problem: str | None = None
    error: str | None = None
    finished: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_text(self, index: int, text: str) -> None:
        with self.lock:
            self.texts[index] = text

    def on_result(self, result: VariantResult) -> None:
        with self.lock:
            self.results[result.index] = result

    @property
    def done(self) -> bool:
        with self.lock:
            return self.finished

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job_id": self.job_id,
                "count": self.count,
                "texts": dict(self.texts),
                "results": dict(self.results),
                "run_id": self.run_id,
                "record_problem": self.record_problem,
                "error": self.error,
                "finished": self.finished,
            }


class PlaygroundJobs(BackgroundJobs[PlaygroundJob]):
    """Runs playground variants in the background, one playground at a time (one worker: the
    machine runs one model call at a time anyway)."""

    def __init__(self, workers: int = 1):
        super().__init__(workers, "arbor-playground")

    def start(
        self,
        ws: Workspace,
        source: PlaygroundSource,
        variants: Sequence[Variant],
        *,
        session_id: str | None = None,
    ) -> PlaygroundJob:
        variants = list(variants)
        job = PlaygroundJob(job_id=uuid.uuid4().hex, count=len(variants))

        def work() -> None:
            outcome = run_variants(
                ws, source, variants, on_text=job.on_text, on_result=job.on_result,
                cancel=job.cancel, session_id=session_id,
            )  # fmt: skip
            with job.lock:
                job.run_id, job.record_problem = outcome.run_id, outcome.record_problem

        return self._submit(job, work)


__all__ = [
    "PlaygroundJob",
    "PlaygroundJobs",
    "PlaygroundOutcome",
    "PlaygroundSource",
    "apply_variant",
    "base_variant",
    "open_call",
    "open_node",
    "resolve_model",
    "run_variants",
    "variant_changes",
    "variants_from",
]
