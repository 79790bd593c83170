"""The plan: a typed tree of nodes with extra dependency edges, validated as a DAG.

A node's *children* form the tree (a parent synthesises its children's outputs); its
``depends_on`` list adds edges to other nodes whose outputs it needs. Execution order is the
topological order of the combined graph, where an edge ``a -> b`` means "a runs before b".
networkx answers the graph questions (cycles, order, ancestors); pydantic owns the data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError, field_validator

from engine.errors import CycleError, PlanError
from engine.plan.compute_config import AllocationPolicy, NodeBudget, StrategyConfig
from engine.plan.model_settings import GenerationConfig, ModelRef

if TYPE_CHECKING:
    import networkx as nx

NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PLAN_FORMAT = "arbor-plan"
#: A node's instruction is a prompt, not a document: longer ones are refused (or, for the
#: one-node plan made from a long task, cut with a note).
MAX_INSTRUCTION_CHARS = 20_000
PLAN_FORMAT_VERSION = 1


class Node(BaseModel):
    """One subtask. Leaves answer their instruction; parents synthesise their children."""

    id: str
    title: str = Field(min_length=1, max_length=200)
    instruction: str = Field("", max_length=MAX_INSTRUCTION_CHARS)
    children: list[Node] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    model: ModelRef | None = Field(None, description="None inherits the plan's default model.")
    generation: GenerationConfig | None = Field(None, description="None inherits the default.")
    difficulty: int | None = Field(
        None, ge=1, le=5, description="1 (trivial) to 5 (hard); budget allocation reads it."
    )
    difficulty_reason: str | None = Field(
        None, max_length=300, description="One line on why the node got its difficulty."
    )
    strategy: StrategyConfig | None = Field(
        None, description="Manual test-time strategy; None lets the allocation policy choose."
    )
    budget: NodeBudget | None = Field(
        None, description="Manual token/cost caps; None lets the allocation policy share."
    )

    @field_validator("id")
    @classmethod
    def _id_is_simple(cls, value: str) -> str:
        if not NODE_ID_PATTERN.fullmatch(value):  # match() would let 'a\n' through ($)
            raise ValueError(
                f"node id {value!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        return value

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("node title must not be blank")
        return value.strip()


class Plan(BaseModel):
    """A task split into a tree of nodes; ``root`` produces the final answer."""

    task: str
    root: Node
    default_model: ModelRef = Field(default_factory=ModelRef)
    default_generation: GenerationConfig = Field(default_factory=GenerationConfig)
    default_strategy: StrategyConfig = Field(
        default_factory=lambda: StrategyConfig(kind="single", samples=1),
        description="Strategy of nodes without their own, under the uniform policy.",
    )
    allocation: AllocationPolicy = Field(default_factory=AllocationPolicy)

    # -- traversal -----------------------------------------------------------------------
    def iter_nodes(self) -> Iterator[tuple[Node, Node | None]]:
        """Yield ``(node, parent)`` depth-first, root first."""
        stack: list[tuple[Node, Node | None]] = [(self.root, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((child, node) for child in reversed(node.children))

    def nodes(self) -> dict[str, Node]:
        """All nodes by id (the last one wins on duplicates; ``validate`` refuses those)."""
        return {node.id: node for node, _ in self.iter_nodes()}

    def node(self, node_id: str) -> Node:
        for node, _ in self.iter_nodes():
            if node.id == node_id:
                return node
        raise PlanError(f"No node with id {node_id!r} in the plan.")

    def parent_of(self, node_id: str) -> Node | None:
        for node, parent in self.iter_nodes():
            if node.id == node_id:
                return parent
        raise PlanError(f"No node with id {node_id!r} in the plan.")

    def model_for(self, node: Node) -> ModelRef:
        return node.model or self.default_model

    def generation_for(self, node: Node) -> GenerationConfig:
        return node.generation or self.default_generation

    def new_node_id(self, prefix: str = "n") -> str:
        taken = {node.id for node, _ in self.iter_nodes()}
        index = len(taken)
        while f"{prefix}{index}" in taken:
            index += 1
        return f"{prefix}{index}"

    # -- graph ---------------------------------------------------------------------------
    def execution_graph(self) -> nx.DiGraph:
        """Edges ``a -> b`` meaning *a must finish before b starts* (child->parent, dep->node)."""
        import networkx as nx  # 0.15 s to import; commands that only list or show need none

        graph = nx.DiGraph()
        for node, parent in self.iter_nodes():
            graph.add_node(node.id)
            if parent is not None:
                graph.add_edge(node.id, parent.id, kind="child")
            for dep in node.depends_on:
                graph.add_edge(dep, node.id, kind="dependency")
        return graph

    def validate_graph(self) -> nx.DiGraph:
        """Check ids are unique, dependencies resolve and nothing is cyclic; return the graph.

        Raises ``PlanError`` (or ``CycleError``) naming the node at fault.
        """
        seen: set[str] = set()
        for node, _ in self.iter_nodes():
            if node.id in seen:
                raise PlanError(f"Node id {node.id!r} is used more than once; ids must be unique.")
            seen.add(node.id)
        for node, _ in self.iter_nodes():
            for dep in node.depends_on:
                if dep not in seen:
                    raise PlanError(
                        f"Node {node.id!r} ({node.title!r}) depends on {dep!r}, "
                        "which is not in the plan."
                    )
                if dep == node.id:
                    raise CycleError([node.id])
        import networkx as nx

        graph = self.execution_graph()
        # The acyclicity test is a topological pass, about 50x cheaper than ``find_cycle`` on a
        # 1000-node plan (0.6 vs 26 ms), and nearly every plan validated is acyclic: look for
        # the cycle to name only once we know there is one.
        if nx.is_directed_acyclic_graph(graph):
            return graph
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return graph
        raise CycleError([edge[0] for edge in cycle])

    def execution_order(self) -> list[str]:
        """Node ids in an order that respects every edge (ties broken by tree order)."""
        import networkx as nx

        graph = self.validate_graph()
        position = {node.id: index for index, (node, _) in enumerate(self.iter_nodes())}
        return list(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))

    def ancestors(self, node_id: str) -> list[Node]:
        """Tree ancestors from the root down to ``node_id``'s parent."""
        chain: list[Node] = []
        parent = self.parent_of(node_id)
        while parent is not None:
            chain.append(parent)
            parent = self.parent_of(parent.id)
        return list(reversed(chain))

    # -- serialisation -------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        payload = {"format": PLAN_FORMAT, "version": PLAN_FORMAT_VERSION, **self.model_dump()}
        return json.dumps(payload, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        """Parse and validate a plan; every failure becomes a ``PlanError`` naming ``source``."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
            ) from exc
        return cls.from_dict(payload, source=source)

    @classmethod
    def from_dict(cls, payload: object, *, source: str = "plan") -> Plan:
        if not isinstance(payload, dict):
            raise PlanError(f"{source} is not a plan: expected a JSON object.")
        payload = dict(payload)
        fmt = payload.pop("format", PLAN_FORMAT)
        version = payload.pop("version", PLAN_FORMAT_VERSION)
        if fmt != PLAN_FORMAT:
            raise PlanError(f"{source} is not a plan: its format is {fmt!r}, not {PLAN_FORMAT!r}.")
        if not isinstance(version, int) or version > PLAN_FORMAT_VERSION:
            raise PlanError(
                f"{source} has plan format version {version!r}; this Arbor reads up to "
                f"{PLAN_FORMAT_VERSION}. Update Arbor to open it."
            )
        try:
            plan = cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "top level"
            raise PlanError(
                f"{source} is not a valid plan: at {where}: {first['msg']} "
                f"({exc.error_count()} problem(s) in all)."
            ) from exc
        plan.validate_graph()
        return plan


def single_node_plan(task: str, model: ModelRef | None = None) -> Plan:
    """The fallback plan: one node that answers the whole task, ready to edit.

    The plan keeps the whole task; the node's instruction is cut to ``MAX_INSTRUCTION_CHARS``
    (``instruction_cut_note`` says so) so any task gives a valid plan.
    """
    title = " ".join(task.split())[:80] or "Task"
    instruction = task
    if len(task) > MAX_INSTRUCTION_CHARS:
        instruction = task[: MAX_INSTRUCTION_CHARS - len(_CUT_MARK)] + _CUT_MARK
    return Plan(
        task=task,
        root=Node(id="root", title=title, instruction=instruction),
        default_model=model or ModelRef(),
    )


_CUT_MARK = " [...]"


def instruction_cut_note(task: str) -> list[str]:
    """The note for a task too long to be one node's instruction (empty when it fits)."""
    if len(task) <= MAX_INSTRUCTION_CHARS:
        return []
    return [
        f"the task is {len(task):,} characters; the one-node plan's instruction holds the first "
        f"{MAX_INSTRUCTION_CHARS - len(_CUT_MARK):,} (the plan keeps the full task)"
    ]
