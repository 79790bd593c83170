"""What several command groups share: option groups (parent parsers), plan files in and out,
caps from flags, tables, and choices read from the typed models.

Building the parser imports nothing heavy: engine and storage modules are imported inside the
functions that need them, and an option's choices (``choice_option``) are read from the model's
``Literal`` type only when they are checked or shown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.services.choices import values

Handler = Callable[[argparse.Namespace], int]
#: ``commands.add_parser`` of the top-level parser (what each group's ``register`` receives).
Subparsers = Any


class LazyChoices:
    """argparse ``choices`` taken from a ``Literal`` type, looked up on first use."""

    def __init__(self, literal: Callable[[], Any]):
        self._literal = literal
        self._values: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = values(self._literal())
        return self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, item: object) -> bool:
        return item in self._all()

    def __len__(self) -> int:
        return len(self._all())


def choice_option(
    parser: argparse.ArgumentParser, *flags: str, literal: Callable[[], Any], **kwargs: Any
) -> argparse.Action:
    """Add an option whose choices are the values of the ``Literal`` that ``literal()`` returns
    (it imports the model's module, so only ``--help`` or a parsed value pays for it)."""
    # add_argument formats the choices once to check the metavar: give it a stand-in, then
    # let help output list the choices as usual.
    metavar = kwargs.pop("metavar", None)
    action = parser.add_argument(
        *flags, choices=LazyChoices(literal), metavar=metavar or "X", **kwargs
    )
    action.metavar = metavar
    return action


def caps_options() -> argparse.ArgumentParser:
    """Parent parser: the run caps a command may set."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--total-tokens", type=int)
    parent.add_argument("--max-tokens-per-node", type=int)
    parent.add_argument("--cost-cap", type=float, help="most dollars a run may spend")
    parent.add_argument("--time-cap", type=float, help="most seconds a run may take")
    return parent


def pool_options() -> argparse.ArgumentParser:
    """Parent parser: where evaluation runs execute."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--workers", type=int, default=1, help="runs at once")
    parent.add_argument(
        "--ray", metavar="ADDRESS", help="run on Ray ('local' or a cluster; env ARBOR_RAY_ADDRESS)"
    )
    return parent


def model_option(default: str) -> argparse.ArgumentParser:
    """Parent parser: ``--model``, a local GGUF file for the planner."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--model", help=f"path of a local GGUF file (default: {default})")
    return parent


def caps_from(args: argparse.Namespace, caps):
    """``caps`` with the command line's cap options applied (validated)."""
    from engine.run.budget import RunCaps

    overrides = {
        key: value
        for key, value in {
            "total_tokens": getattr(args, "total_tokens", None),
            "max_tokens_per_node": getattr(args, "max_tokens_per_node", None),
            "max_parallel": getattr(args, "max_parallel", None),
            "total_cost_usd": getattr(args, "cost_cap", None),
            "wall_time_s": getattr(args, "time_cap", None),
        }.items()
        if value is not None
    }
    from pydantic import ValidationError

    try:
        return RunCaps.model_validate({**(caps or RunCaps()).model_dump(), **overrides})
    except ValidationError as exc:
        raise ValueError(_in_flag_words(exc, _CAP_FLAGS)) from None


#: RunCaps fields and the flags that set them, for messages in the command line's own words.
_CAP_FLAGS = {
    "total_tokens": "--total-tokens",
    "max_tokens_per_node": "--max-tokens-per-node",
    "max_parallel": "--max-parallel",
    "total_cost_usd": "--cost-cap",
    "wall_time_s": "--time-cap",
}
_BOUNDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def _in_flag_words(exc: Any, flags: dict[str, str]) -> str:
    """A pydantic ValidationError as one sentence naming flags, without pydantic's web links."""
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        flag = flags.get(field, field)
        bound = next(
            (f"{words} {error['ctx'][key]}" for key, words in _BOUNDS.items()
             if key in error.get("ctx", {})),
            None,
        )  # fmt: skip
        what = f"must be {bound}" if bound else error["msg"].lower()
        problems.append(f"{flag} {what} (got {error['input']!r})")
    return "; ".join(problems) + "."


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (newlines, escape sequences a
    session name or an imported file may carry) appear escaped, not executed."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def read_plan(path: str):
    """The plan in a JSON or YAML file; ``PlanError`` when it is missing or not a plan."""
    from engine.errors import PlanError
    from engine.plan.files import import_plan

    file = Path(path)
    if not file.is_file():
        raise PlanError(f"{path} does not exist or is not a file.")
    return import_plan(file.read_text(encoding="utf-8", errors="replace"), source=path)


def write_plan(plan, output: str | None, fmt: str = "json") -> None:
    """Write ``plan`` to ``output`` (saying so on stderr), or print it."""
    from engine.plan.files import export_plan

    text = export_plan(plan, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"plan written to {output}", file=sys.stderr)
    else:
        print(text)


def print_table(rows: list[dict], columns: list[str]) -> None:
    """``rows`` as left-aligned columns; floats with 4 significant digits, None as ``-``."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "inf" if value == float("inf") else f"{value:.4g}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
