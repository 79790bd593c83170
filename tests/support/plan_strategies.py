"""Hypothesis strategies shared by the editing, history and import/export tests.

``valid_plans`` builds random valid plans (unicode text, dependencies, difficulty, model and
generation overrides); ``draw_edit`` draws one random edit of a given plan, with arguments that
are usually valid and sometimes not (unknown ids, blank or repeated titles, cycles).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from engine import editing
from engine.plan import GenerationConfig, ModelRef, Node, Plan

ids = st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True)
text = st.text(max_size=30)
titles = st.sampled_from(["Research", "research ", "Ünïcödé 🌳", "Write", "x" * 200]) | st.text(
    min_size=1, max_size=30
).filter(lambda s: s.strip())
generations = st.builds(
    GenerationConfig,
    temperature=st.floats(0.0, 2.0, allow_nan=False),
    top_p=st.floats(0.01, 1.0, allow_nan=False),
    max_tokens=st.integers(1, 8192),
    seed=st.none() | st.integers(-(2**63), 2**63 - 1),
)
models = st.one_of(
    st.builds(ModelRef, kind=st.just("local"), path=st.none() | text),
    st.builds(
        ModelRef,
        kind=st.just("remote"),
        base_url=st.none() | text,
        model=st.none() | text,
        api_key_env=st.none() | st.from_regex(r"[A-Z_]{1,12}", fullmatch=True),
    ),
)


@st.composite
def valid_plans(draw, min_nodes: int = 1, max_nodes: int = 8) -> Plan:
    """Random valid plans: every extra edge points from a later-created node to an earlier one.

    A child is created after its parent and depends only on nodes created after it, so every
    edge of the execution graph goes from a higher creation index to a lower one: no cycles.
    """
    node_ids = draw(st.lists(ids, min_size=min_nodes, max_size=max_nodes, unique=True))
    count = len(node_ids)
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, count)]
    deps = [
        draw(st.lists(st.integers(i + 1, count - 1), max_size=2, unique=True))
        if i < count - 1
        else []
        for i in range(count)
    ]
    fields = [
        {
            "title": draw(titles),
            "instruction": draw(text),
            "model": draw(st.none() | models),
            "generation": draw(st.none() | generations),
            "difficulty": draw(st.none() | st.integers(1, 5)),
            "difficulty_reason": draw(st.none() | text),
        }
        for _ in range(count)
    ]

    def build(index: int) -> Node:
        return Node(
            id=node_ids[index],
            depends_on=[node_ids[d] for d in deps[index]],
            children=[build(c) for c in range(count) if parents[c] == index],
            **fields[index],
        )

    return Plan(
        task=draw(text),
        root=build(0),
        default_model=draw(models),
        default_generation=draw(generations),
    )


Edit = Callable[[], "Plan | tuple[Plan, str]"]

EDITS = (
    "update",
    "add_child",
    "add_sibling",
    "remove",
    "move",
    "reorder",
    "duplicate",
    "add_dependency",
    "remove_dependency",
)


def draw_edit(data: st.DataObject, plan: Plan) -> tuple[str, Edit]:
    """One random edit of ``plan`` as (label, thunk); the label starts with the edit's kind and
    the thunk may raise ``PlanError``."""
    known = list(plan.nodes())
    node_id = st.sampled_from([*known, "ghost"])  # an unknown id now and then
    pick = data.draw
    kind = pick(st.sampled_from(EDITS), label="edit")
    if kind == "update":
        node = pick(node_id)
        changes = pick(
            st.fixed_dictionaries(
                {},
                optional={
                    "title": titles | st.just("  "),
                    "instruction": text,
                    "depends_on": st.lists(st.sampled_from([*known, "ghost"]), max_size=3),
                    "model": st.none() | models,
                    "generation": st.none() | generations,
                    "difficulty": st.none() | st.integers(0, 6),
                    "difficulty_reason": st.none() | text,
                },
            )
        )
        return f"update {node} {sorted(changes)}", lambda: editing.update_node(
            plan, node, **changes
        )
    if kind in ("add_child", "add_sibling"):
        node, title, instruction = pick(node_id), pick(titles | st.just(" ")), pick(text)
        if kind == "add_child":
            index = pick(st.none() | st.integers(-2, 6))
            return f"add_child {node}", lambda: editing.add_child(
                plan, node, title, instruction, index=index
            )
        return f"add_sibling {node}", lambda: editing.add_sibling(plan, node, title, instruction)
    if kind == "remove":
        node, keep = pick(node_id), pick(st.booleans())
        return f"remove {node}", lambda: editing.remove_node(plan, node, keep_children=keep)
    if kind == "move":
        node, target, index = pick(node_id), pick(node_id), pick(st.none() | st.integers(-1, 6))
        return f"move {node} under {target}", lambda: editing.move_node(plan, node, target, index)
    if kind == "reorder":
        node, index = pick(node_id), pick(st.integers(-2, 8))
        return f"reorder {node}", lambda: editing.reorder_node(plan, node, index)
    if kind == "duplicate":
        node = pick(node_id)
        return f"duplicate {node}", lambda: editing.duplicate_node(plan, node)
    node = pick(node_id)
    if kind == "remove_dependency" and node in known:
        used = plan.node(node).depends_on  # mostly an edge that is there
        dep = pick(st.sampled_from(used) if used else node_id)
    else:
        dep = pick(node_id)
    if kind == "add_dependency":
        return f"add_dependency {node} <- {dep}", lambda: editing.add_dependency(plan, node, dep)
    return f"remove_dependency {node} <- {dep}", lambda: editing.remove_dependency(plan, node, dep)
