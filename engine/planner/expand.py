"""Split one node with the planner: expand it, or re-plan everything below it.

The planner sees the overall task, the node's ancestors (so it knows what the step is part of)
and its siblings (so it does not redo their work), and answers with the same bounded schema as a
whole-task decomposition (``engine.planner.decompose``). The rest of the plan is never touched: the
node keeps its model, generation settings, difficulty and dependencies. When the model's answer
is unusable after the retry, the plan comes back unchanged with the reason (``fallback``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.language import detect_language
from engine.models import Backend, ChatMessage, backend_for
from engine.models.base import TokenCallback
from engine.plan import NODE_ID_PATTERN, ModelRef, Node, Plan
from engine.planner.base_planner import (
    DEFAULT_SAMPLES,
    StepCandidate,
    rank_candidates,
    sampled_candidates,
)
from engine.planner.control import PlannerControl, Progress
from engine.planner.decompose import (
    PLANNER_TEMPERATURES,
    DecomposeResult,
    PlanCandidate,
    PlannerStyle,
    UnusablePlan,
    call_planner,
    clip_task,
    comparable,
    copies_example,
    copy_stops,
    make_nodes,
    parse_subtasks,
    planner_style,
    steps_to_nodes,
    worked_example_turns,
    worked_examples,
)
from engine.prompts import fill

#: Instructions shown to the planner as context are cut to this many characters.
CONTEXT_CHARS = 300


@dataclass
class ExpandResult(DecomposeResult):
    """The plan after an expand or re-plan, and the story of how it was made.

    ``fallback`` here means the planner's output was unusable and ``plan`` is the input plan,
    unchanged; ``notes`` also lists dependency edges dropped by a re-plan.
    """

    #: Ids of the nodes the planner added, in order.
    new_ids: list[str] = field(default_factory=list)


# -- ids and tree surgery shared with engine.planner.alternatives ----------------------------


def child_ids(taken: set[str], parent_id: str, count: int) -> list[str]:
    """``count`` readable ids for new children of ``parent_id`` (``taken`` is updated).

    Children of the root are ``s1, s2, ...`` as in a fresh decomposition; deeper ones extend
    their parent's id (``s2.1``, ``s2.1.3``) so the tree can be read from the ids alone.
    """
    prefix = "s" if parent_id == "root" else f"{parent_id}."
    fresh: list[str] = []
    index = 1
    while len(fresh) < count:
        candidate = f"{prefix}{index}"
        if not NODE_ID_PATTERN.fullmatch(candidate):  # too deep for a readable id
            candidate = f"n{index}"
        if candidate not in taken:
            taken.add(candidate)
            fresh.append(candidate)
        index += 1
    return fresh


def subtree_ids(node: Node) -> set[str]:
    ids = {node.id}
    for child in node.children:
        ids |= subtree_ids(child)
    return ids


def replace_children(plan: Plan, node_id: str, children: Sequence[Node]) -> tuple[Plan, list[str]]:
    """A copy of ``plan`` where ``node_id``'s children are ``children``; validated.

    Nodes elsewhere that depended on a removed descendant lose that edge (reported in the
    notes) rather than leaving a dangling reference.
    """
    new_plan = plan.model_copy(deep=True)
    target = new_plan.node(node_id)
    removed = subtree_ids(target) - {node_id}
    titles = {nid: node.title for nid, node in plan.nodes().items()}
    target.children = [child.model_copy(deep=True) for child in children]
    added = set().union(*(subtree_ids(child) for child in target.children))
    notes: list[str] = []
    for node, _ in new_plan.iter_nodes():
        if node.id in added:
            continue  # the new nodes' edges were made for them
        # An edge to a removed node is dropped even when a new node reuses its id: the new
        # node is a different step.
        dropped = [dep for dep in node.depends_on if dep in removed]
        if dropped:
            node.depends_on = [dep for dep in node.depends_on if dep not in dropped]
            names = ", ".join(repr(titles[dep]) for dep in dropped)
            notes.append(f"{node.title!r} no longer depends on {names}: it was replaced")
    new_plan.validate_graph()
    return new_plan, notes


# -- the planner call -------------------------------------------------------------------------


def _clip(text: str, limit: int = CONTEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " [...]"


def expand_context(plan: Plan, node_id: str, *, include_children: bool) -> str:
    """What the planner is told about where the node sits: ancestors, siblings, children."""
    lines: list[str] = []
    ancestors = [a for a in plan.ancestors(node_id) if a.id != plan.root.id]
    if ancestors:
        lines.append("This step is part of:")
        lines += [f"- {a.title}: {_clip(a.instruction)}" for a in ancestors]
    parent = plan.parent_of(node_id)
    siblings = [s for s in (parent.children if parent else []) if s.id != node_id]
    if siblings:
        lines.append("Other steps beside this one (done separately):")
        lines += [f"- {s.title}" for s in siblings]
    node = plan.node(node_id)
    if include_children and node.children:
        lines.append("Sub-steps it already has (add different ones):")
        lines += [f"- {c.title}" for c in node.children]
    return "\n".join(lines)


def expand_messages(
    plan: Plan, node_id: str, *, include_children: bool = True
) -> list[ChatMessage]:
    """The planner's rules and worked examples, then the request to split ``node_id``."""
    node = plan.node(node_id)
    task, _ = clip_task(plan.task)
    messages = worked_example_turns()
    context = expand_context(plan, node_id, include_children=include_children)
    instruction = node.instruction if node.id != plan.root.id else task
    messages.append(
        {
            "role": "user",
            "content": fill(
                "expand_user",
                task=task,
                context=f"\n{context}\n" if context else "",
                title=node.title,
                instruction=_clip(instruction or node.title, 1200),
            ),
        }
    )
    return messages


def node_task_text(plan: Plan, node_id: str) -> str:
    """What splitting ``node_id`` is about, as one task line for a base model's prompt.

    The node's instruction with its parent's title for context ("Pricing (Launch plan for a
    vegan bakery)"), so a step like "Pricing" is not planned in a vacuum.
    """
    node = plan.node(node_id)
    if node.id == plan.root.id:
        return clip_task(plan.task)[0]
    text = _clip(node.instruction or node.title, 200)
    if not comparable_start(text, node.title):
        text = f"{node.title}: {text}"
    parent = plan.parent_of(node_id)
    context = plan.task if parent is None or parent.id == plan.root.id else parent.title
    if comparable(context)[:40] in comparable(text):  # the instruction already says it
        return text
    return f"{text} ({_clip(context, 120)})"


def comparable_start(text: str, title: str) -> bool:
    return text.casefold().startswith(title.casefold().rstrip(" ."))


def _split_base(
    plan: Plan,
    node_id: str,
    backend: Backend,
    *,
    seed: int | None,
    replace: bool,
    existing_titles: Sequence[str],
    restated: Sequence[str],
    taken: set[str],
    control: PlannerControl,
) -> ExpandResult:
    node = plan.node(node_id)
    task = node_task_text(plan, node_id)
    language = detect_language(plan.task)
    control.stage(f"sampling {DEFAULT_SAMPLES} candidate splits of {node_id}")
    candidates, calls = sampled_candidates(
        backend,
        task,
        language,
        None,
        samples=DEFAULT_SAMPLES,
        seed=seed,
        restated=[*restated, *existing_titles],
    )
    control.stage("scoring the candidates")
    best = rank_candidates(candidates, task, language)
    result = ExpandResult(plan=plan, calls=calls, style="base", language=language)
    result.candidates = [_as_plan_candidate(c) for c in candidates]
    verb = "re-plan" if replace else "split"
    if best is None:
        reasons = "; ".join(f"{c.source}: {c.problem}" for c in candidates)
        result.notes.append(
            f"The model could not {verb} {node.title!r} ({reasons}). The plan is unchanged."
        )
        result.fallback = True
        return result
    chosen = candidates[best]
    new_children = steps_to_nodes(chosen, child_ids(set(taken), node_id, len(chosen.steps)))
    children = new_children if replace else [*node.children, *new_children]
    new_plan, edge_notes = replace_children(plan, node_id, children)
    result.plan, result.chosen, result.new_ids = new_plan, best, [c.id for c in new_children]
    result.notes = [
        f"chose {chosen.source} (score {chosen.total:.2f}) of "
        f"{sum(1 for c in candidates if c.problem is None)} usable candidate(s)",
        *chosen.notes,
        *edge_notes,
    ]
    return result


def _as_plan_candidate(candidate: StepCandidate) -> PlanCandidate:
    return PlanCandidate(
        source=candidate.source,
        plan=None,
        scores=candidate.scores,
        total=candidate.total,
        notes=candidate.notes,
        problem=candidate.problem,
        text=candidate.text,
        call_index=candidate.call_index,
    )


def _split(
    plan: Plan,
    node_id: str,
    model: ModelRef | None,
    *,
    backend: Backend | None,
    seed: int | None,
    temperatures: Sequence[float],
    replace: bool,
    style: PlannerStyle = "auto",
    control: PlannerControl | None = None,
) -> ExpandResult:
    node = plan.node(node_id)  # PlanError for an unknown id, before any model call
    control = control or PlannerControl()
    control.stage("choosing a planner")
    model = model or plan.default_model
    backend = control.wrap(backend or backend_for(model))
    parent = plan.parent_of(node_id)
    siblings = [s.title for s in (parent.children if parent else []) if s.id != node_id]
    kept_children = [] if replace else [c.title for c in node.children]
    restated = [node.title, node.instruction] + [
        a.title for a in plan.ancestors(node_id) if a.id != plan.root.id
    ]
    examples = worked_examples()
    taken = set(plan.nodes()) - (subtree_ids(node) - {node_id} if replace else set())
    if planner_style(model, style, backend) == "base":
        return _split_base(
            plan,
            node_id,
            backend,
            seed=seed,
            replace=replace,
            existing_titles=siblings + kept_children,
            restated=[r for r in restated if r],
            taken=taken,
            control=control,
        )

    def parse(text: str) -> tuple[list[Node], list[str]]:
        subtasks, repairs = parse_subtasks(
            text,
            plan.task,
            restated=[r for r in restated if r],
            existing_titles=siblings + kept_children,
        )
        if copies_example(subtasks, examples):
            raise UnusablePlan("the model copied the prompt's worked example")
        return make_nodes(subtasks, child_ids(set(taken), node_id, len(subtasks))), repairs

    verb = "re-plan" if replace else "split"
    _, task_notes = clip_task(plan.task)
    control.stage(f"asking the model to {verb} {node_id} (JSON)")
    outcome = call_planner(
        backend,
        expand_messages(plan, node_id, include_children=not replace),
        parse,
        seed=seed,
        temperatures=temperatures,
        stop=copy_stops(examples),
        control=control,
    )
    if outcome.value is None:
        return ExpandResult(
            plan=plan,
            notes=[
                *task_notes,
                f"The model could not {verb} {node.title!r} ({'; '.join(outcome.failures)}). "
                "The plan is unchanged.",
            ],
            fallback=True,
            calls=outcome.calls,
        )
    new_children = outcome.value
    children = new_children if replace else [*node.children, *new_children]
    new_plan, edge_notes = replace_children(plan, node_id, children)
    return ExpandResult(
        plan=new_plan,
        notes=task_notes + outcome.notes + edge_notes,
        calls=outcome.calls,
        new_ids=[child.id for child in new_children],
    )


def expand_node(
    plan: Plan,
    node_id: str,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    seed: int | None = 7,
    temperatures: Sequence[float] = PLANNER_TEMPERATURES,
    style: PlannerStyle = "auto",
    cancel: threading.Event | None = None,
    on_progress: Progress | None = None,
    on_text: TokenCallback | None = None,
) -> ExpandResult:
    """Split ``node_id`` into 2-6 new children, added after any it already has.

    ``model`` defaults to the plan's default model. Raises ``PlanError`` for an unknown node and
    ``ArborError`` when the model is unavailable; unusable model output gives ``fallback``.
    ``cancel``, ``on_progress`` and ``on_text`` as in ``decompose`` (``PlannerCancelled``).
    """
    return _split(
        plan,
        node_id,
        model,
        backend=backend,
        seed=seed,
        temperatures=temperatures,
        replace=False,
        style=style,
        control=PlannerControl(cancel, on_progress, on_text),
    )


def replan_subtree(
    plan: Plan,
    node_id: str,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    seed: int | None = None,
    temperatures: Sequence[float] = PLANNER_TEMPERATURES,
    style: PlannerStyle = "auto",
    cancel: threading.Event | None = None,
    on_progress: Progress | None = None,
    on_text: TokenCallback | None = None,
) -> ExpandResult:
    """Replace everything below ``node_id`` with a fresh split; the rest of the plan is kept.

    ``seed`` defaults to None (a new sample each time): re-planning with the seed that made the
    current split would give the same split back.
    """
    return _split(
        plan,
        node_id,
        model,
        backend=backend,
        seed=seed,
        temperatures=temperatures,
        replace=True,
        style=style,
        control=PlannerControl(cancel, on_progress, on_text),
    )
