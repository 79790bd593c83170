"""Several plans for one task (or one subtree), and a merge of the subtasks the analyst picks.

A weak planner's first split is one sample of many; showing k side by side lets the analyst
choose, or take the best steps of each. Samples differ by seed and run warmer than a single
decomposition. A merge copies the picked subtrees under one node of a base plan with fresh ids,
keeps the dependencies that still make sense and reports the ones it had to drop.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from engine.errors import PlanError
from engine.models import Backend, backend_for
from engine.models.base import TokenCallback
from engine.plan import ModelRef, Node, Plan, single_node_plan
from engine.planner.base_planner import DEFAULT_SAMPLES
from engine.planner.control import PlannerControl, Progress
from engine.planner.decompose import (
    DecomposeResult,
    PlannerStyle,
    comparable,
    decompose,
    planner_style,
)
from engine.planner.expand import (
    ExpandResult,
    child_ids,
    replace_children,
    replan_subtree,
    subtree_ids,
)

MAX_ALTERNATIVES = 6
#: Warmer than a single decomposition (0.7, then 1.0) so the samples differ.
ALTERNATIVE_TEMPERATURES = (0.9, 1.1)
#: Samples use seeds this far apart, so sample i's retry never reuses sample i+1's seed.
SEED_STRIDE = 1000

#: Hears each alternative as soon as it is ready: its 1-based number and the result.
AlternativeReady = Callable[[int, "DecomposeResult | ExpandResult"], None]


def _signature(plan: Plan, node_id: str) -> tuple[str, ...]:
    return tuple(comparable(c.title) for c in plan.node(node_id).children)


def sample_alternatives(
    task: str,
    k: int,
    model: ModelRef | None = None,
    *,
    backend: Backend | None = None,
    plan: Plan | None = None,
    node_id: str | None = None,
    seed: int | None = None,
    style: PlannerStyle = "auto",
    cancel: threading.Event | None = None,
    on_progress: Progress | None = None,
    on_text: TokenCallback | None = None,
    on_result: AlternativeReady | None = None,
) -> list[DecomposeResult | ExpandResult]:
    """``k`` plans for ``task``, or, with ``plan`` and ``node_id``, k re-plans of that subtree.

    Each result has ``plan``, ``notes`` and ``fallback`` (an unusable sample comes back as the
    fallback, so the list always has k entries). A sample whose steps repeat an earlier one's is
    noted. ``seed`` makes the set reproducible; None draws a fresh one. ``on_result`` hears
    each alternative as soon as it is ready; ``cancel``, ``on_progress`` and ``on_text`` as in
    ``decompose`` (``PlannerCancelled``).
    """
    if not 1 <= k <= MAX_ALTERNATIVES:
        raise PlanError(f"Ask for 1 to {MAX_ALTERNATIVES} alternatives, not {k}.")
    if node_id is not None and plan is None:
        raise PlanError("Sampling alternatives for a subtree needs the plan it belongs to.")
    model = model or (plan.default_model if plan is not None else ModelRef())
    backend = backend or backend_for(model)
    control = PlannerControl(cancel, on_progress, on_text)
    base_seed = seed if seed is not None else random.randrange(1 << 30)
    if node_id is None and planner_style(model, style, backend) == "base":
        return _base_alternatives(task, k, model, backend, base_seed, control, on_result)
    results: list[DecomposeResult | ExpandResult] = []
    seen: dict[tuple[str, ...], int] = {}
    # Each sample reports its own stages under "alternative i of k".
    for index in range(k):
        prefix = f"alternative {index + 1} of {k}"
        control.stage(prefix)

        def stage(text: str, prefix: str = prefix) -> None:
            control.stage(f"{prefix}: {text}")

        sample_seed = base_seed + SEED_STRIDE * index
        result: DecomposeResult | ExpandResult
        if node_id is not None and plan is not None:
            result = replan_subtree(
                plan,
                node_id,
                model,
                backend=backend,
                seed=sample_seed,
                temperatures=ALTERNATIVE_TEMPERATURES,
                style=style,
                cancel=cancel,
                on_progress=stage,
                on_text=on_text,
            )
            signature = _signature(result.plan, node_id)
            if result.fallback:  # say what failed: this alternative, not a re-plan
                result.notes = [
                    note.replace("could not re-plan", f"could not sample {prefix} for").replace(
                        " The plan is unchanged.", ""
                    )
                    for note in result.notes
                ]
        else:
            result = decompose(
                task,
                model,
                backend=backend,
                seed=sample_seed,
                temperatures=ALTERNATIVE_TEMPERATURES,
                style=style,
                cancel=cancel,
                on_progress=stage,
                on_text=on_text,
            )
            signature = _signature(result.plan, result.plan.root.id)
        if not result.fallback and signature in seen:
            result.notes.append(f"the same steps as alternative {seen[signature] + 1}")
        seen.setdefault(signature, index)
        results.append(result)
        if on_result is not None:
            on_result(index + 1, result)
    return results


def _base_alternatives(
    task: str,
    k: int,
    model: ModelRef,
    backend: Backend,
    seed: int,
    control: PlannerControl,
    on_result: AlternativeReady | None,
) -> list[DecomposeResult | ExpandResult]:
    """The k best distinct candidates of one sampled decomposition (one batched call).

    Sampling k separate decompositions would give the same winner k times (the pattern's
    skeleton usually scores best); the runners-up of one call are the alternatives.
    """
    result = decompose(
        task,
        model,
        backend=backend,
        seed=seed,
        style="base",
        samples=max(DEFAULT_SAMPLES, k + 1),
        cancel=control.cancel,
        on_progress=control.on_progress,
        on_text=control.on_text,
    )
    if result.clarification is not None or result.fallback:
        same = [result, *(replace(result, calls=[]) for _ in range(k - 1))]
        for number, each in enumerate(same, start=1):
            if on_result is not None:
                on_result(number, each)
        return same
    ranked = sorted(
        (i for i, c in enumerate(result.candidates) if c.plan is not None),
        key=lambda i: -result.candidates[i].total,
    )
    results: list[DecomposeResult | ExpandResult] = []
    seen: set[tuple[str, ...]] = set()
    for index in ranked:
        candidate = result.candidates[index]
        assert candidate.plan is not None
        signature = _signature(candidate.plan, candidate.plan.root.id)
        if signature in seen:
            continue
        seen.add(signature)
        results.append(
            replace(
                result,
                plan=candidate.plan,
                chosen=index,
                calls=result.calls if not results else [],
                notes=[f"{candidate.source}, score {candidate.total:.2f}", *candidate.notes],
            )
        )
        if on_result is not None:
            on_result(len(results), results[-1])
        if len(results) == k:
            break
    while len(results) < k:
        fallback = replace(result, plan=single_node_plan(task, model), fallback=True, calls=[])
        fallback.notes = ["no further distinct candidate plan; here is a one-node plan to edit"]
        results.append(fallback)
        if on_result is not None:
            on_result(len(results), fallback)
    return results


def merge_alternatives(
    base: Plan, picks: Sequence[tuple[Plan, str]], *, under: str | None = None
) -> tuple[Plan, list[str]]:
    """``base`` with the children of ``under`` (default: the root) replaced by the picked nodes.

    ``picks`` are ``(source plan, node id)`` pairs, in the order they should appear; each picked
    node comes with its subtree. Dependencies between picks from the same source plan are kept
    (remapped to the new ids), dependencies on nodes of ``base`` outside the replaced subtree are
    kept, and all others are dropped and reported. Repeated titles get a number.
    """
    if not picks:
        raise PlanError("Tick at least one subtask to merge.")
    under = under or base.root.id
    target = base.node(under)
    replaced = subtree_ids(target) - {under}
    outside = set(base.nodes()) - replaced
    taken = set(outside)
    id_map: dict[tuple[int, str], str] = {}
    copies: list[tuple[int, Node, dict[str, str]]] = []  # (source key, copy, old title by old id)

    def renumber(node: Node, new_id: str, source: int) -> Node:
        id_map[(source, node.id)] = new_id
        fresh = child_ids(taken, new_id, len(node.children))
        return node.model_copy(
            update={
                "id": new_id,
                "children": [
                    renumber(child, child_id, source)
                    for child, child_id in zip(node.children, fresh, strict=True)
                ],
            }
        )

    top_ids = child_ids(taken, under, len(picks))
    used_titles: dict[str, int] = {}
    for (source_plan, node_id), new_id in zip(picks, top_ids, strict=True):
        source = id(source_plan)
        node = renumber(source_plan.node(node_id).model_copy(deep=True), new_id, source)
        key = comparable(node.title)
        used_titles[key] = used_titles.get(key, 0) + 1
        if used_titles[key] > 1:
            node.title = f"{node.title} ({used_titles[key]})"
        titles = {nid: n.title for nid, n in source_plan.nodes().items()}
        copies.append((source, node, titles))

    notes: list[str] = []
    for source, top, titles in copies:
        stack = [top]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            kept: list[str] = []
            for dep in node.depends_on:
                if (source, dep) in id_map:
                    kept.append(id_map[(source, dep)])
                elif dep in outside and dep != under:
                    kept.append(dep)
                else:
                    notes.append(
                        f"{node.title!r} no longer depends on {titles.get(dep, dep)!r}: "
                        "that step was not picked"
                    )
            node.depends_on = kept
    merged, edge_notes = replace_children(base, under, [node for _, node, _ in copies])
    return merged, notes + edge_notes
