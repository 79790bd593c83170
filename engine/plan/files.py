"""Plans as JSON or YAML text, for download, hand editing and import.

Both formats carry the same payload as ``Plan.to_json`` (format marker, version, then the plan's
fields in model order), so a file converts losslessly between them. YAML goes through
``yaml.safe_load``/``safe_dump`` only; anchors and aliases are refused because a plan never needs
them and they can blow up in size. Every failure is a ``PlanError`` naming the source and, where
the text says it, the line.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from engine.errors import PlanError
from engine.plan.core import Plan
from engine.plan.templates import check_templates
from engine.redaction import credentials_refusal

PlanFormat = Literal["json", "yaml"]
FORMATS: tuple[str, ...] = ("json", "yaml")


def _payload(plan: Plan) -> dict[str, Any]:
    return json.loads(plan.to_json(indent=None))


def export_plan(plan: Plan, fmt: PlanFormat) -> str:
    """The plan as JSON or YAML text that ``import_plan`` reads back to an equal plan."""
    if fmt == "json":
        return plan.to_json()
    if fmt == "yaml":
        payload = _payload(plan)
        text = yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=100)
        # PyYAML's unicode output has corner cases (odd line-break characters) that do not read
        # back the same; its escaped ASCII output does, so it is the fallback.
        if yaml.safe_load(text) != payload:
            text = yaml.safe_dump(payload, sort_keys=False, allow_unicode=False, width=100)
        return text
    raise PlanError(f"Unknown plan format {fmt!r}; use one of {', '.join(FORMATS)}.")


class _PlanLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not allowed in a plan", event.start_mark
            )
        return super().compose_node(parent, index)


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> PlanError:
    line = column = None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        reason = ", ".join(part for part in (exc.problem, exc.context) if part) or str(exc)
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        reason = f"character U+{exc.character:04X} is not allowed in YAML"
    else:  # pragma: no cover - PyYAML raises the two kinds above
        reason = str(exc)
    where = (
        f" (line {line}, column {column}: {reason})"
        if column
        else (f" (line {line}: {reason})" if line else f" ({reason})")
    )
    return PlanError(f"{source} is not valid YAML{where}.")


def _load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        loader = _PlanLoader(text)  # the reader checks characters as it is built
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from exc
    return data, node


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at ``loc`` (a pydantic error location) in a YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            match = node.value[part] if 0 <= part < len(node.value) else None
        else:
            match = None
        if match is None:
            break
        node, line = match, match.start_mark.line + 1
    return line


def import_plan(text: str, fmt: PlanFormat | None = None, source: str = "plan") -> Plan:
    """Read a plan from JSON or YAML text (``fmt=None``: JSON if it parses as JSON, else YAML).

    Malformed text, a payload that is not a plan, a dangling dependency or a cycle raises
    ``PlanError`` (``CycleError`` for cycles) naming ``source``; an instruction template with a
    problem (one that hangs or builds a huge string included) raises ``TemplateProblem``.
    """
    if fmt not in (None, *FORMATS):
        raise PlanError(f"Unknown plan format {fmt!r}; use one of {', '.join(FORMATS)}.")
    try:  # json and yaml recurse once per nesting level
        if fmt is None:
            try:
                json.loads(text)
            except ValueError:
                fmt = "yaml"
            else:
                fmt = "json"
        plan = _parse_plan(text, fmt, source)
    except RecursionError:
        raise PlanError(f"{source} is nested too deeply to be a plan.") from None
    plan = _refuse_url_credentials(plan, source)
    check_templates(plan, source)
    return plan


def _refuse_url_credentials(plan: Plan, source: str) -> Plan:
    """A plan read from outside may not carry keys in its models' URLs (older files may)."""
    refs = [("the default model", plan.default_model)]
    refs += [(f"node {node.id}", node.model) for node in plan.nodes().values() if node.model]
    for where, ref in refs:
        refusal = credentials_refusal(ref.base_url)
        if refusal:
            raise PlanError(f"{source}: {where}: {refusal}.")
    return plan


def _parse_plan(text: str, fmt: PlanFormat, source: str) -> Plan:
    if fmt == "json":
        return Plan.from_json(text, source=source)
    payload, tree = _load_yaml(text, source)
    if not isinstance(payload, dict):
        raise PlanError(
            f"{source} is not a plan: expected a mapping at the top level, "
            f"found {type(payload).__name__}."
        )
    try:
        return Plan.from_dict(payload, source=source)
    except PlanError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            line = _line_of(tree, cause.errors()[0]["loc"])
            if line is not None:
                raise PlanError(f"{str(exc).rstrip('.')}; see line {line}.") from cause
        raise
