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
a ``TemplateProblem`` naming the node. ``check_templates`` checks a whole plan read from outside.

Rendering is bounded: it may take at most ``TEMPLATE_TIME_LIMIT_S`` seconds (or less, until the
run's time-cap deadline), no string, list or number it builds may exceed
``MAX_TEMPLATE_VALUE_CHARS`` characters or items, and its output at most ``MAX_RENDERED_CHARS``.
Time is watched by a trace function on the template's own frames (and every call made while it
renders), sizes by the sandbox's hooks on operators, calls, filters and joins.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter

from engine.errors import TemplateProblem
from engine.plan.core import Node, Plan

#: Names an instruction may use (besides Jinja's own globals such as ``range``).
VARIABLES = ("task", "node", "parent", "ancestors", "deps")
#: A rendered instruction longer than this is refused (a loop gone wrong, not a prompt).
MAX_RENDERED_CHARS = 100_000
#: Rendering one instruction may take this long; a run's time cap may leave it less.
TEMPLATE_TIME_LIMIT_S = 2.0
#: No string (characters) or list, tuple, dict or set (items) a template builds may be longer.
MAX_TEMPLATE_VALUE_CHARS = 1_000_000
_MAX_INT_BITS = 1_000_000  # largest integer (in bits) ``*`` and ``**`` may build
_MAX_POWER = 10_000  # largest exponent ``**`` accepts
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_TEMPLATE_FILENAME = "<template>"  # the filename Jinja compiles ``from_string`` templates under
_SIZED = (str, list, tuple, dict, set, frozenset)
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


# -- limits ------------------------------------------------------------------------------------
class _TemplateLimit(Exception):
    """A bound on rendering was hit; the message says which (``_render`` adds the node)."""


class _Limits:
    """The bounds of the render under way in this thread."""

    def __init__(self, deadline: float, limit_s: float, by_run: bool):
        self.deadline = deadline
        self.limit_s = limit_s
        self.by_run = by_run
        self.expired = False

    def too_slow(self) -> _TemplateLimit:
        self.expired = True
        why = " (the time left under the run's time cap)" if self.by_run else ""
        return _TemplateLimit(
            f"took longer than {self.limit_s:.3g} s to render{why}; check its loops."
        )

    def check_time(self) -> None:
        if self.expired or time.monotonic() > self.deadline:
            raise self.too_slow()


_STATE = threading.local()


def _current() -> _Limits | None:
    limits: _Limits | None = getattr(_STATE, "limits", None)
    return limits


def _check_time() -> None:
    limits = _current()
    if limits is not None:
        limits.check_time()


def _too_big(what: str) -> _TemplateLimit:
    units = {"a string": "characters", "a number": "bits", "a collection": "items"}
    unit = units.get(what, "characters or items")
    return _TemplateLimit(
        f"builds {what} over {MAX_TEMPLATE_VALUE_CHARS:,} {unit}; check its loops and the "
        "sizes it asks for."
    )


def _check_count(count: object, what: str = "a string") -> None:
    if isinstance(count, int) and count > MAX_TEMPLATE_VALUE_CHARS:
        raise _too_big(what)


def _size_of(value: object) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def _check_value(value: object) -> object:
    """``value``, if it is not a string or collection over the bound."""
    if isinstance(value, _SIZED) and len(value) > MAX_TEMPLATE_VALUE_CHARS:
        raise _too_big("a string" if isinstance(value, str) else "a collection")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _too_big("a number")
    return value


def _check_join(items: list[Any], sep: object) -> None:
    total = _size_of(sep) * max(len(items) - 1, 0)
    for item in items:
        total += _size_of(item)
        if total > MAX_TEMPLATE_VALUE_CHARS:
            raise _too_big("a string")
    _check_count(total)


def _check_replace(text: object, old: object, new: object, count: object = None) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _check_count(len(text) + found * max(len(new) - len(old), 0))


def _check_printf(spec: object, args: object) -> None:
    """``spec % args`` with a width or precision over the bound is refused before it runs."""
    if not isinstance(spec, str):
        return
    values = list(args) if isinstance(args, tuple) else [args]
    for match in _PRINTF_SPEC.finditer(spec):
        for number in match.groups():
            if number == "*":
                if any(isinstance(v, int) and abs(v) > MAX_TEMPLATE_VALUE_CHARS for v in values):
                    raise _too_big("a string")
            elif number is not None:
                _check_count(int(number))


def _check_format_spec(spec: str) -> None:
    for number in re.findall(r"\d+", spec):
        _check_count(int(number))


def _check_sum(items: list[Any], start: object) -> None:
    sizes = [len(v) for v in [start, *items] if isinstance(v, _SIZED)]
    _check_count(sum(sizes), "a collection")


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a call of a str method that would build a string over the bound; the arguments
    to call it with (a generator given to ``join`` is read into a list first)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if not isinstance(owner, str):
        return args
    if name in _WIDTH_METHODS:
        _check_count(args[0] if args else kwargs.get("width"))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check_count(len(owner) + owner.count("\t") * size)
    elif name == "replace":
        _check_replace(owner, *args[:3])
    elif name == "join" and args:
        items = list(args[0])
        _check_join(items, owner)
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_size_of(v) for v in args[0].values() if v is not None), default=1)
        _check_count(len(owner) * longest)
    return args


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing widths and precisions over the bound."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return _check_value(super().format_field(value, format_spec))


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``a ~ b`` checked for size before it is joined."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.checked_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


def _bounded_concat(parts: Any) -> str:
    """``environment.concat`` (block ``set``, macros, ``filter`` blocks), bounded."""
    items = list(parts)
    _check_join(items, "")
    return "".join(items)


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with operators, calls and joins bounded so a template cannot eat the memory,
    and the time checked at each call."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(_bounded_concat)  # type: ignore[assignment]

    @staticmethod
    def checked_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _check_time()
        _check_join(list(parts), "")
        return parts

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_POWER:
                raise SecurityError(f"exponent {right} is larger than {_MAX_POWER}")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() * right > _MAX_INT_BITS
            ):
                raise _too_big("a number")
            return operator.pow(left, right)
        if operator_ == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                _check_count(len(left) + len(right), "a string or collection")
            return _check_value(operator.add(left, right))
        if operator_ == "%":
            _check_printf(left, right)
            return _check_value(operator.mod(left, right))
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > _MAX_INT_BITS
        ):
            raise _too_big("a number")
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

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        args = _check_method(__obj, args, kwargs)
        result = SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, list | dict | set):  # ``l.extend(l)`` grows the list in place
            _check_value(owner)
        return _check_value(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner: str = value.__self__
        formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    return wrapped(*args, **kwargs)  # let Jinja raise its own TypeError
                kwargs, args = args[0], ()
            return str(_check_value(formatter.vformat(owner, args, kwargs)))

        return functools.update_wrapper(bounded, value)


def _attributes(environment: Any, items: list[Any], attribute: Any) -> list[Any]:
    """What ``join`` or ``sum`` with ``attribute`` adds up: each item's attribute."""
    if attribute is None:
        return items
    return list(map(make_attrgetter(environment, attribute), items))


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose arguments are checked before it runs and whose result after."""
    passes = getattr(func, "jinja_pass_arg", None)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        lead = 1 if passes is not None else 0  # the environment or context Jinja passes first
        head, value, rest = args[:lead], args[lead] if len(args) > lead else None, args[lead + 1 :]
        if name in ("center", "indent", "wordwrap", "truncate", "batch", "slice"):
            what = "a collection" if name in ("batch", "slice") else "a string"
            for arg in (*rest, *kwargs.values()):
                _check_count(arg, what)
        if name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            unit = len(width) if isinstance(width, str) else width
            if isinstance(unit, int):
                _check_count(len(value) + (value.count("\n") + 1) * unit)
        elif name == "wordwrap" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 79)
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring")
            if isinstance(width, int) and isinstance(wrap, str):
                lines = len(value) // max(width, 1) + value.count("\n") + 1
                _check_count(len(value) + lines * len(wrap))
        elif name == "format":
            _check_printf(value, tuple(rest) or tuple(kwargs.values()))
        elif name == "replace":
            _check_replace(value, *rest, **kwargs)
        elif name == "join" and value is not None:  # join(eval_ctx, value, d, attribute)
            items = list(value)
            attribute = rest[1] if len(rest) > 1 else kwargs.get("attribute")
            seen = _attributes(head[0].environment, items, attribute)
            _check_join(seen, rest[0] if rest else kwargs.get("d", ""))
            args = (*head, items, *rest)
        elif name == "sum" and value is not None:  # sum(environment, value, attribute, start)
            items = list(value)
            attribute = rest[0] if rest else kwargs.get("attribute")
            seen = _attributes(head[0], items, attribute)
            _check_sum(seen, rest[1] if len(rest) > 1 else kwargs.get("start", 0))
            args = (*head, items, *rest)
        return _check_value(func(*args, **kwargs))

    return bounded


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.pop("lipsum", None)  # lipsum(n=10**7) would build a huge string in one call
_ENV.filters = {name: _bounded_filter(name, func) for name, func in _ENV.filters.items()}
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


@contextmanager
def _bounded(deadline: float | None) -> Iterator[_Limits]:
    """Limits for one render in this thread: its time limit, or ``deadline`` (monotonic) if
    that comes first, and a render inside it (an ancestor's instruction) within the outer one's.

    A trace function checks the time at every call made while rendering and at every line of
    the template's own code, so a loop with no output cannot run on; the thread's previous
    trace function (a debugger, coverage) is put back afterwards.
    """
    outer = _current()
    start = time.monotonic()
    limit = start + TEMPLATE_TIME_LIMIT_S
    by_run = deadline is not None and deadline < limit
    if by_run:
        assert deadline is not None
        limit = deadline
    if outer is not None and outer.deadline < limit:
        limit, by_run = outer.deadline, outer.by_run
    limits = _Limits(limit, max(limit - start, 0.0), by_run)

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and time.monotonic() > limits.deadline:
            raise limits.too_slow()
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > limits.deadline:
            raise limits.too_slow()
        return on_line if frame.f_code.co_filename == _TEMPLATE_FILENAME else None

    previous = sys.gettrace()
    _STATE.limits = limits
    sys.settrace(on_call)
    try:
        yield limits
    finally:
        sys.settrace(previous)
        _STATE.limits = outer


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> Any:
    """``source`` compiled in the sandbox, once per text: ``from_string`` compiles anew on each
    call (Jinja caches only loader templates), and an evaluation renders the same instructions
    hundreds of times. A compiled template holds no render state, so threads share it; a
    syntax error is raised, not cached. A compiled template of ``MAX_INSTRUCTION_CHARS`` holds
    about 0.4 MB (measured with tracemalloc), so 64 stay under 30 MB even for a hostile plan.
    """
    return _ENV.from_string(source)


def _render(
    plan: Plan,
    node: Node,
    source: str,
    outputs: dict[str, str],
    deadline: float | None = None,
) -> str:
    if not is_template(source):
        return source
    try:
        template = _compiled(source)
    except TemplateSyntaxError as exc:
        raise _syntax_problem(node.id, exc) from exc
    parts: list[str] = []
    size = 0
    try:
        with _bounded(deadline) as limits:
            for part in template.generate(_context(plan, node, outputs)):
                limits.check_time()
                size += len(part)
                if size > MAX_RENDERED_CHARS:
                    raise TemplateProblem(
                        f"Instruction of node {node.id!r} renders to more than "
                        f"{MAX_RENDERED_CHARS} characters; check its loops.",
                        node_id=node.id,
                    ) from _TemplateLimit("output too long")
                parts.append(part)
    except TemplateProblem:
        raise
    except _TemplateLimit as exc:
        raise TemplateProblem(f"Instruction of node {node.id!r} {exc}", node_id=node.id) from exc
    except RecursionError as exc:
        raise TemplateProblem(
            f"Instruction of node {node.id!r} could not be rendered: it recurses too deeply.",
            node_id=node.id,
        ) from exc
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


def render_instruction(
    plan: Plan, node: Node, outputs: dict[str, str], *, deadline: float | None = None
) -> str:
    """``node``'s instruction rendered with real outputs (``outputs``: node id -> output).

    Plain text comes back unchanged. Raises ``TemplateProblem`` on any template error, and when
    rendering runs past ``TEMPLATE_TIME_LIMIT_S`` or ``deadline`` (``time.monotonic()``
    seconds: a run's time-cap deadline), whichever comes first.
    """
    return _render(plan, node, node.instruction, outputs, deadline)


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


def _over_a_bound(problem: BaseException) -> bool:
    """Whether ``problem`` (or the render of an ancestor's instruction it used) hit a bound on
    time or size, rather than being an ordinary mistake such as a syntax error."""
    seen: BaseException | None = problem
    while seen is not None:
        if isinstance(seen, _TemplateLimit):
            return True
        seen = seen.__cause__
    return False


def check_templates(plan: Plan, source: str | None = None) -> list[str]:
    """Refuse a plan read from outside (a plan file, a session, an ``.arbor`` file) with an
    instruction template that would hang or build a huge string, before anything runs.

    Each templated node gets a trial render with placeholder outputs, bounded as at run time
    (``TEMPLATE_TIME_LIMIT_S``, ``MAX_TEMPLATE_VALUE_CHARS``, ``MAX_RENDERED_CHARS``). One that
    goes past a bound raises its ``TemplateProblem`` (prefixed by ``source``), naming the node.
    Ordinary problems (a syntax error, an unknown variable) are returned, not raised: a file
    whose instruction merely contains ``{%`` is still read, the editor shows the problem, and a
    run fails that node at once, as before.
    """
    problems: list[str] = []
    prefix = f"{source}: " if source else ""
    for node in plan.nodes().values():
        if not is_template(node.instruction):
            continue
        try:
            _render(plan, node, node.instruction, placeholder_outputs(plan, node))
        except TemplateProblem as exc:
            if _over_a_bound(exc):
                raise TemplateProblem(f"{prefix}{exc}", node_id=node.id) from exc
            problems.append(str(exc))
    return problems


__all__ = [
    "MAX_RENDERED_CHARS",
    "MAX_TEMPLATE_VALUE_CHARS",
    "TEMPLATE_TIME_LIMIT_S",
    "VARIABLES",
    "TemplateProblem",
    "check_instruction",
    "check_templates",
    "draft_node",
    "is_template",
    "placeholder_output",
    "placeholder_outputs",
    "preview_instruction",
    "render_instruction",
]
