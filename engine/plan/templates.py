"""Node instructions as templates: ``{{ task }}``, ``{{ parent.title }}``, ``{{ deps.s1 }}``.

An instruction is rendered with Jinja2 in a sandbox (``SandboxedEnvironment``, ``StrictUndefined``,
no autoescaping) just before its node runs. Plain text without template syntax is returned as it
is, so instructions written before templates existed behave exactly as they did.

Variables an instruction can use:

``task``
    the plan's task text.
``node``
    this node: ``.id``, ``.title``.
``parent``
    the parent node (``.id``, ``.title``, ``.instruction``), or ``None`` for the root.
``ancestors``
    tree ancestors, root first, each with ``.id``, ``.title``, ``.instruction``.
``deps``
    dependency id -> its output: ``deps.s1`` or ``deps["s1"]``; iterable, ``deps.items()``.
    Only ids in the node's ``depends_on`` may be used.

An ancestor runs after this node, so its ``.instruction`` is rendered with placeholders
(``<output of s1: Title>``) for the ancestor's own dependencies, never with their outputs.

``check_instruction`` finds problems while editing, ``preview_instruction`` shows the text with
placeholders, and ``render_instruction`` renders it with real outputs for a run. Every failure is
a ``TemplateProblem`` naming the node.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import TemplateProblem
from engine.plan.core import Node, Plan

#: Names an instruction may use (besides Jinja's own globals such as ``range``).
VARIABLES = ("task", "node", "parent", "ancestors", "deps")
#: A rendered instruction longer than this is refused (a loop gone wrong, not a prompt).
MAX_RENDERED_CHARS = 100_000
_MAX_POWER = 10_000  # largest exponent ``**`` accepts
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` bounded so one expression cannot eat the memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_POWER:
                raise SecurityError(f"exponent {right} is larger than {_MAX_POWER}")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > MAX_RENDERED_CHARS
            ):
                raise SecurityError(
                    f"repeating a sequence {count} times would make more than "
                    f"{MAX_RENDERED_CHARS} items"
                )
        return operator.mul(left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.pop("lipsum", None)  # lipsum(n=10**7) would build a huge string in one call
_ALLOWED_NAMES = frozenset(VARIABLES) | frozenset(_ENV.globals)


def is_template(text: str) -> bool:
    """True if ``text`` contains template syntax; other text is used exactly as written."""
    return any(marker in text for marker in _TEMPLATE_MARKERS)


def placeholder_output(plan: Plan, node_id: str) -> str:
    """What a preview shows where a node's output will go: ``<output of s1: Title>``."""
    node = plan.nodes().get(node_id)
    return f"<output of {node_id}: {node.title}>" if node else f"<output of {node_id}>"


# -- what the template sees ------------------------------------------------------------------
class _NodeView:
    """A node as a template sees it: id and title, nothing else of the plan model."""

    def __init__(self, node: Node):
        self.id = node.id
        self.title = node.title

    def __str__(self) -> str:
        return self.title


class _AncestorView(_NodeView):
    """An ancestor; its ``instruction`` is rendered on first use, with placeholder deps."""

    def __init__(self, plan: Plan, node: Node, user: str):
        super().__init__(node)
        self._plan = plan
        self._node = node
        self._user = user  # the node whose template looks at this ancestor
        self._instruction: str | None = None

    @property
    def instruction(self) -> str:
        if self._instruction is None:
            try:
                self._instruction = preview_instruction(self._plan, self._node.id)
            except TemplateProblem as exc:
                raise TemplateProblem(
                    f"Instruction of node {self._user!r} uses the instruction of node "
                    f"{self.id!r}, which cannot be rendered: {exc}",
                    node_id=self._user,
                ) from exc
        return self._instruction


class _Deps(Mapping[str, str]):
    """Dependency id -> output, readable as ``deps.s1`` and ``deps["s1"]``.

    Asking for an id that is not a dependency raises ``TemplateProblem`` at once, rather than
    an undefined-variable error that would not say what to do.
    """

    def __init__(self, plan: Plan, node: Node, outputs: dict[str, str]):
        self._plan = plan
        self._node = node
        self._ids = list(dict.fromkeys(node.depends_on))
        self._outputs = outputs

    def __getitem__(self, key: object) -> str:
        if key not in self._ids:
            raise TemplateProblem(
                _not_a_dependency(self._plan, self._node, key), node_id=self._node.id
            )
        if key not in self._outputs:
            raise TemplateProblem(
                f"Instruction of node {self._node.id!r} uses the output of {key!r}, "
                "which has not been produced.",
                node_id=self._node.id,
            )
        return self._outputs[key]

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _not_a_dependency(plan: Plan, node: Node, key: object) -> str:
    if isinstance(key, str) and key in plan.nodes():
        return (
            f"Node {node.id!r} uses the output of {key!r}, which is not one of its "
            "dependencies; add the dependency first."
        )
    return (
        f"Node {node.id!r} uses the output of {key!r}, but the plan has no node {key!r}; "
        f"its dependencies are: {', '.join(node.depends_on) or 'none'}."
    )


def _context(plan: Plan, node: Node, outputs: dict[str, str]) -> dict[str, Any]:
    ancestors = [_AncestorView(plan, a, node.id) for a in plan.ancestors(node.id)]
    return {
        "task": plan.task,
        "node": _NodeView(node),
        "parent": ancestors[-1] if ancestors else None,
        "ancestors": ancestors,
        "deps": _Deps(plan, node, outputs),
    }


# -- rendering -------------------------------------------------------------------------------
def _template_line(tb: TracebackType | None) -> int | None:
    """The template line a render error happened on (Jinja rewrites tracebacks to show it)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _syntax_problem(node_id: str, exc: TemplateSyntaxError) -> TemplateProblem:
    return TemplateProblem(
        f"Instruction of node {node_id!r} has a template syntax error at line {exc.lineno}: "
        f"{exc.message}",
        node_id=node_id,
        line=exc.lineno,
    )


def _render(plan: Plan, node: Node, source: str, outputs: dict[str, str]) -> str:
    if not is_template(source):
        return source
    try:
        template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise _syntax_problem(node.id, exc) from exc
    parts: list[str] = []
    size = 0
    try:
        for part in template.generate(_context(plan, node, outputs)):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise TemplateProblem(
                    f"Instruction of node {node.id!r} renders to more than "
                    f"{MAX_RENDERED_CHARS} characters; check its loops.",
                    node_id=node.id,
                )
            parts.append(part)
    except TemplateProblem:
        raise
    except Exception as exc:
        line = _template_line(exc.__traceback__)
        where = f" at line {line}" if line else ""
        if isinstance(exc, SecurityError):
            what = f"does something the template sandbox forbids{where}: {exc}"
        elif isinstance(exc, UndefinedError):
            on_none = node.id == plan.root.id and str(exc).startswith("'None'")
            hint = " (the root node has no parent)" if on_none else ""
            what = (
                f"uses something undefined{where}: {exc}{hint}. "
                f"Available variables: {', '.join(VARIABLES)}."
            )
        elif isinstance(exc, TemplateError):
            what = f"could not be rendered{where}: {exc}"
        else:
            what = f"could not be rendered{where}: {type(exc).__name__}: {exc}"
        raise TemplateProblem(
            f"Instruction of node {node.id!r} {what}", node_id=node.id, line=line
        ) from exc
    return "".join(parts)


def render_instruction(plan: Plan, node: Node, outputs: dict[str, str]) -> str:
    """``node``'s instruction rendered with real outputs (``outputs``: node id -> output).

    Plain text comes back unchanged. Raises ``TemplateProblem`` on any template error.
    """
    return _render(plan, node, node.instruction, outputs)


def draft_node(
    plan: Plan, node_id: str, instruction: str | None, depends_on: list[str] | None = None
) -> Node:
    """A copy of the node as an edit form's draft would leave it (``None`` keeps a value)."""
    node = plan.node(node_id)
    update: dict[str, Any] = {}
    if instruction is not None:
        update["instruction"] = instruction
    if depends_on is not None:
        update["depends_on"] = list(depends_on)
    return node.model_copy(update=update) if update else node


def placeholder_outputs(plan: Plan, node: Node) -> dict[str, str]:
    """Placeholder outputs for everything ``node`` reads: its dependencies and its children."""
    ids = [*node.depends_on, *(child.id for child in node.children)]
    return {node_id: placeholder_output(plan, node_id) for node_id in ids}


def preview_instruction(
    plan: Plan,
    node_id: str,
    instruction: str | None = None,
    *,
    depends_on: list[str] | None = None,
) -> str:
    """The instruction as it will be rendered, with ``<output of s1: Title>`` for each output.

    ``instruction`` and ``depends_on`` preview a draft instead of the node's current values.
    Raises ``TemplateProblem`` on any template error.
    """
    node = draft_node(plan, node_id, instruction, depends_on)
    return _render(plan, node, node.instruction, placeholder_outputs(plan, node))


# -- edit-time checks ------------------------------------------------------------------------
def _referenced_dep_keys(ast: nodes.Template) -> list[str]:
    """Dependency ids the template names literally: ``deps.x``, ``deps['x']``, ``deps.get('x')``."""
    keys: list[str] = []
    for item in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(item, nodes.Call):
            target = item.node
            if (
                isinstance(target, nodes.Getattr)
                and isinstance(target.node, nodes.Name)
                and target.node.name == "deps"
                and target.attr == "get"
                and item.args
                and isinstance(item.args[0], nodes.Const)
            ):
                keys.append(item.args[0].value)
            continue
        if not isinstance(item, (nodes.Getattr, nodes.Getitem)):
            continue
        if not (isinstance(item.node, nodes.Name) and item.node.name == "deps"):
            continue
        if isinstance(item, nodes.Getattr):
            if not item.attr.startswith("_"):  # the sandbox refuses those itself
                keys.append(item.attr)
        elif isinstance(item.arg, nodes.Const):
            keys.append(item.arg.value)
    return list(dict.fromkeys(keys))


def check_instruction(
    plan: Plan,
    node_id: str,
    instruction: str | None = None,
    *,
    depends_on: list[str] | None = None,
) -> list[str]:
    """Problems with a node's instruction template, found without running anything.

    Reports syntax errors (with the line), unknown variables, dependency outputs the node does
    not depend on, and then anything a trial render with placeholder outputs meets (such as the
    sandbox refusing ``''.__class__``). ``instruction`` and ``depends_on`` check a draft (an edit
    form changing both at once) instead of the node's current values. An empty list means the
    instruction is fine.
    """
    node = draft_node(plan, node_id, instruction, depends_on)
    source = node.instruction
    if not is_template(source):
        return []
    try:
        ast = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return [str(_syntax_problem(node_id, exc))]
    problems = [
        f"Instruction of node {node_id!r} uses unknown variable {name!r}; "
        f"available variables: {', '.join(VARIABLES)}."
        for name in sorted(meta.find_undeclared_variables(ast) - _ALLOWED_NAMES)
    ]
    known_ids = set(node.depends_on)
    for key in _referenced_dep_keys(ast):
        if key in known_ids or (key in _MAPPING_METHODS and key not in plan.nodes()):
            continue
        problems.append(_not_a_dependency(plan, node, key))
    if problems:
        return problems
    try:
        _render(plan, node, source, placeholder_outputs(plan, node))
    except TemplateProblem as exc:
        return [str(exc)]
    return []


__all__ = [
    "MAX_RENDERED_CHARS",
    "VARIABLES",
    "TemplateProblem",
    "check_instruction",
    "draft_node",
    "is_template",
    "placeholder_output",
    "placeholder_outputs",
    "preview_instruction",
    "render_instruction",
]
