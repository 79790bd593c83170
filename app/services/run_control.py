"""Run control workflows the Workbench and ``run.py`` share: run with pins and breakpoints,
answer a pause, resume a paused run with edits, fork a past run from a node.

- ``parse_assignment`` reads ``NODE=TEXT`` (``NODE=@file.txt`` reads the file) as the command
  line's ``--pin`` / ``--set-output`` / ``--set-instruction`` give it.
- ``PauseGate`` is the interactive controller: the run's thread waits in ``decide`` until the
  UI (or a terminal) answers, or until the gate is detached (the run then ends ``paused`` and
  is resumed from the store). ``live_gate(run_id)`` finds the gate of a run paused in this
  process, so a reloaded page can answer it.
- ``resume_with_edits`` continues a paused (or stopped) run with edited instructions or
  outputs; ``fork`` starts a new run from a node of a past run, reusing everything not
  downstream of it from that run's records, and says what changed.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from engine.errors import PlanError, TraceStoreError
from engine.plan import Plan
from engine.plan.core import NODE_ID_PATTERN
from engine.run.budget import RunCaps
from engine.run.call_cache import CachedCall
from engine.run.control import Decision, Pause, PauseController, RunControl, RunEdit
from engine.run.events import Listener
from engine.run.executor import RunResult
from storage.workspace import Workspace

#: Exit status of ``run.py run`` / ``resume`` / ``fork`` when the run stopped at a breakpoint.
EXIT_PAUSED = 3


# -- NODE=TEXT -----------------------------------------------------------------------------
def parse_assignment(text: str, flag: str = "--pin") -> tuple[str, str]:
    """``NODE=TEXT`` as (node id, text); ``NODE=@path`` reads the text from the file.

    Raises ``PlanError`` (one line, naming ``flag``) for a missing ``=``, a node id that is not
    one, or a file that cannot be read. The text may be empty and may contain ``=``.
    """
    node_id, sep, value = text.partition("=")
    if not sep:
        raise PlanError(f"{flag} {text!r}: expected NODE=TEXT (or NODE=@file.txt).")
    node_id = node_id.strip()
    if not NODE_ID_PATTERN.fullmatch(node_id):
        raise PlanError(
            f"{flag} {text!r}: {node_id!r} is not a node id (1-64 letters, digits, '_', '.', '-')."
        )
    if value.startswith("@") and len(value) > 1:
        path = Path(value[1:])
        try:
            value = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise PlanError(
                f"{flag} {node_id}=@{path}: cannot read the file ({exc.strerror})."
            ) from None
    return node_id, value


def parse_assignments(items: Iterable[str] | None, flag: str) -> dict[str, str]:
    """Every ``NODE=TEXT`` of a repeatable flag; a node named twice keeps the last text."""
    return dict(parse_assignment(item, flag) for item in items or ())


def node_changes(
    workspace: Workspace,
    set_model: Mapping[str, str] | None = None,
    set_strategy: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """``fork``'s ``changes`` from ``NODE=NAME`` models (a registry entry, ``bundled`` or a GGUF
    file, as the playground takes them) and ``NODE=SPEC`` strategies (``single``, ``bo4``,
    ``sc5``, ``refine2``); a bad name or spec raises ``PlanError`` in one line."""
    from pydantic import ValidationError

    from app.services.playground import resolve_model
    from engine.errors import ArborError
    from engine.plan.compute_config import strategy_from_spec

    changes: dict[str, dict[str, Any]] = {}
    for node_id, name in (set_model or {}).items():
        try:
            changes.setdefault(node_id, {})["model"] = resolve_model(workspace, name)
        except ArborError as exc:
            detail = str(exc).split(": ", 1)[-1]
            raise PlanError(f"--set-model {node_id}={name}: {detail}") from exc
    for node_id, spec in (set_strategy or {}).items():
        try:
            strategy = strategy_from_spec(spec)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise PlanError(f"--set-strategy {node_id}={spec}: {where} {problem['msg']}") from exc
        except ValueError as exc:
            raise PlanError(f"--set-strategy {node_id}={spec}: {exc}") from exc
        changes.setdefault(node_id, {})["strategy"] = strategy
    return changes


def check_nodes(plan: Plan, node_ids: Iterable[str], what: str) -> None:
    """``PlanError`` naming the first id that is not a node of ``plan``."""
    known = plan.nodes()
    for node_id in node_ids:
        if node_id not in known:
            raise PlanError(
                f"{what}: no node {node_id!r} in the plan; its nodes are "
                f"{', '.join(sorted(known))}."
            )


# -- the interactive controller ------------------------------------------------------------
class PauseGate:
    """A ``PauseController`` answered from another thread (the UI) or a terminal.

    ``decide`` publishes the pause and waits; ``answer`` hands it a decision; ``detach`` (the
    page went away, or the app shuts down) makes it answer None, so the run ends ``paused``
    and can be resumed from the store.
    """

    def __init__(self, run_id: str | None = None, *, wait_s: float | None = None):
        self.run_id = run_id
        self.wait_s = wait_s
        self._cond = threading.Condition()
        self._pending: Pause | None = None
        self._decision: Decision | None = None
        self._detached = False

    @property
    def pending(self) -> Pause | None:
        with self._cond:
            return self._pending

    def decide(self, pause: Pause) -> Decision | None:
        with self._cond:
            if self._detached:
                return None
            self._pending, self._decision = pause, None
            _LIVE[pause.run_id] = self
            try:
                answered = self._cond.wait_for(
                    lambda: self._decision is not None or self._detached, timeout=self.wait_s
                )
                return self._decision if answered and not self._detached else None
            finally:
                self._pending = None
                _LIVE.pop(pause.run_id, None)

    def answer(self, decision: Decision) -> bool:
        """Hand the waiting run ``decision``; False when nothing waits any more."""
        with self._cond:
            if self._pending is None:
                return False
            self._decision = decision
            self._cond.notify_all()
            return True

    def detach(self) -> None:
        with self._cond:
            self._detached = True
            self._cond.notify_all()


#: Gates of runs paused in this process, by run id (a reloaded page finds its run's gate).
_LIVE: dict[str, PauseGate] = {}


def live_gate(run_id: str) -> PauseGate | None:
    return _LIVE.get(run_id)


class TerminalController:
    """Asks at a terminal: c(ontinue), s(tep), k (skip), q (cancel); EOF ends the run paused."""

    def __init__(self, ask: Callable[[str], str] = input, out=sys.stderr):
        self.ask, self.out = ask, out

    def decide(self, pause: Pause) -> Decision | None:
        print(f"paused {pause.when} {pause.node_id}: {pause.title}", file=self.out)
        for node_id, text in pause.inputs.items():
            print(f"  input {node_id}: {text[:200]}", file=self.out)
        shown = pause.prompt if pause.when == "before" else pause.output
        print(f"  {'prompt' if pause.when == 'before' else 'output'}:\n{shown}", file=self.out)
        actions = {"c": "continue", "s": "step", "k": "skip", "q": "cancel"}
        while True:
            try:
                reply = self.ask("[c]ontinue, [s]tep, s[k]ip, [q]uit? ").strip().lower()[:1]
            except EOFError:
                return None
            if reply in actions:
                return Decision(actions[reply])  # type: ignore[arg-type]


# -- running -------------------------------------------------------------------------------
def run_with_control(
    workspace: Workspace,
    plan: Plan,
    caps: RunCaps | None = None,
    *,
    pins: Mapping[str, str] | None = None,
    break_before: Iterable[str] = (),
    break_after: Iterable[str] = (),
    step: bool = False,
    controller: PauseController | None = None,
    session_id: str | None = None,
    listeners: Iterable[Listener] = (),
    run_id: str | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
    rerun: Iterable[str] = (),
) -> RunResult:
    """Run ``plan`` with pins and breakpoints; unknown node ids are refused before it runs."""
    control = RunControl(
        pins=dict(pins or {}),
        break_before=set(break_before),
        break_after=set(break_after),
        step=step,
        controller=controller,
    )
    check_nodes(plan, sorted(control.node_ids()), "run control")
    return workspace.run_plan(
        plan,
        caps,
        session_id=session_id,
        listeners=listeners,
        run_id=run_id,
        cancel=cancel,
        use_cache=use_cache,
        rerun=rerun,
        control=control,
    )


def _stored_plan(workspace: Workspace, run_id: str) -> tuple[dict[str, Any], Plan]:
    record = workspace.traces.run(run_id)
    if record is None:
        raise TraceStoreError(
            f"No run {run_id!r} in the trace store {workspace.traces.path}; "
            "`run.py runs` lists the recorded runs."
        )
    if not record.get("plan_json"):
        raise PlanError(f"Run {run_id!r} has no stored plan.")
    return record, Plan.from_json(record["plan_json"], source=f"run {run_id}")


def _edited_plan(
    plan: Plan, instructions: Mapping[str, str], changes: Mapping[str, Mapping[str, Any]], source
) -> tuple[Plan, list[RunEdit]]:
    from engine.plan.editing import update_node

    edits: list[RunEdit] = []
    check_nodes(plan, instructions, "--set-instruction")
    check_nodes(plan, changes, "node changes")
    for node_id, text in instructions.items():
        old = plan.node(node_id).instruction
        plan = update_node(plan, node_id, instruction=text)
        edits.append(RunEdit(node_id, "instruction", old, text, source))
    for node_id, fields in changes.items():
        plan = update_node(plan, node_id, **fields)
        for name, value in fields.items():
            edits.append(RunEdit(node_id, name, None, str(value), source))
    return plan, edits


def resume_with_edits(
    workspace: Workspace,
    run_id: str,
    *,
    set_output: Mapping[str, str] | None = None,
    set_instruction: Mapping[str, str] | None = None,
    break_before: Iterable[str] = (),
    break_after: Iterable[str] = (),
    step: bool = False,
    controller: PauseController | None = None,
    listeners: Iterable[Listener] = (),
    cancel: threading.Event | None = None,
    new_run_id: str | None = None,
) -> RunResult:
    """Continue run ``run_id`` as a new run: finished calls reused, its pins kept, the given
    outputs pinned and instructions edited (each edit recorded with the new run)."""
    _, plan = _stored_plan(workspace, run_id)
    outputs = dict(set_output or {})
    check_nodes(plan, outputs, "--set-output")
    plan, edits = _edited_plan(plan, dict(set_instruction or {}), {}, "resume")
    edits += [RunEdit(n, "output", None, text, "resume") for n, text in outputs.items()]
    control = RunControl(
        pins=outputs,
        break_before=set(break_before),
        break_after=set(break_after),
        step=step,
        controller=controller,
        edits=edits,
    )
    check_nodes(plan, sorted(control.node_ids()), "run control")
    return workspace.resume_run(
        run_id,
        listeners=listeners,
        cancel=cancel,
        new_run_id=new_run_id,
        plan=plan,
        control=control,
    )


@dataclass
class ForkReport:
    """What a fork did, against its source run."""

    result: RunResult
    source_run_id: str
    from_node: str
    #: Nodes taken from the source run's records, and nodes run anew.
    reused: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    #: Model calls the fork made (replayed calls not counted), by node.
    calls_by_node: dict[str, int] = field(default_factory=dict)
    source_answer: str | None = None

    @property
    def calls(self) -> int:
        return sum(self.calls_by_node.values())

    @property
    def answer_changed(self) -> bool:
        return (self.result.answer or "").strip() != (self.source_answer or "").strip()

    def summary(self) -> str:
        changed = "changed" if self.answer_changed else "unchanged"
        return (
            f"forked {self.source_run_id} at {self.from_node}: {len(self.reused)} nodes reused, "
            f"{len(self.rerun)} run anew, {self.calls} model call(s) made, answer {changed}"
        )


def fork(
    workspace: Workspace,
    source_run_id: str,
    from_node: str,
    *,
    set_output: Mapping[str, str] | None = None,
    set_instruction: Mapping[str, str] | None = None,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
    break_before: Iterable[str] = (),
    break_after: Iterable[str] = (),
    controller: PauseController | None = None,
    listeners: Iterable[Listener] = (),
    cancel: threading.Event | None = None,
    run_id: str | None = None,
) -> ForkReport:
    """A new run of the source run's plan (edited): every node not downstream of
    ``from_node`` is taken from the source run's records without a call (``reused_from`` =
    the source run); ``from_node`` and its downstream run anew. ``changes`` maps node id to
    plan fields (instruction, model, strategy, generation ...); ``set_output`` pins outputs."""
    record, plan = _stored_plan(workspace, source_run_id)
    if record.get("origin"):
        raise TraceStoreError(
            f"Run {source_run_id!r} is imported and read-only; fork a run recorded here."
        )
    check_nodes(plan, [from_node], "--from")
    outputs = dict(set_output or {})
    check_nodes(plan, outputs, "--set-output")
    plan, edits = _edited_plan(plan, dict(set_instruction or {}), dict(changes or {}), "fork")
    edits += [RunEdit(n, "output", None, text, "fork") for n, text in outputs.items()]
    graph = plan.validate_graph()
    anew = {from_node, *nx.descendants(graph, from_node)}
    for node_id in [*(set_instruction or {}), *(changes or {})]:
        anew |= {node_id, *nx.descendants(graph, node_id)}  # an edited node cannot be reused
    reuse: dict[str, CachedCall] = {}
    pins = dict(outputs)
    for row in workspace.traces.node_executions(source_run_id):
        node_id = row["node_id"]
        if node_id in anew or node_id not in graph or row["status"] != "done":
            continue
        if row.get("pinned"):
            pins.setdefault(node_id, row["output"] or "")
            continue
        reuse[node_id] = CachedCall(
            call_id="",
            run_id=source_run_id,
            output=row["output"] or "",
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
        )
    control = RunControl(
        pins=pins,
        break_before=set(break_before),
        break_after=set(break_after),
        controller=controller,
        reuse=reuse,
        edits=edits,
        forked_from=source_run_id,
        forked_at_node=from_node,
    )
    caps = RunCaps.model_validate_json(record["caps_json"]) if record.get("caps_json") else None
    result = workspace.run_plan(
        plan,
        caps,
        session_id=record.get("session_id"),
        listeners=listeners,
        run_id=run_id,
        cancel=cancel,
        use_cache=False,  # anew means anew: the fork point and downstream call their models
        control=control,
    )
    return ForkReport(
        result=result,
        source_run_id=source_run_id,
        from_node=from_node,
        reused=result.reused,
        rerun=[n for n in result.executed],
        calls_by_node=calls_by_node(workspace, result.run_id),
        source_answer=record.get("answer"),
    )


def calls_by_node(workspace: Workspace, run_id: str) -> dict[str, int]:
    """Model calls a run made (replayed ones not counted), by node."""
    counts = Counter(
        row["node_id"] for row in workspace.traces.model_calls(run_id) if not row["reused_from"]
    )
    return dict(counts)


__all__ = [
    "EXIT_PAUSED",
    "ForkReport",
    "PauseGate",
    "TerminalController",
    "calls_by_node",
    "check_nodes",
    "fork",
    "live_gate",
    "parse_assignment",
    "parse_assignments",
    "resume_with_edits",
    "run_with_control",
]
