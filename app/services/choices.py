"""The options the CLI and the UI offer, taken from the typed models' ``Literal`` types.

A presenter never retypes a list of strategy kinds, policies, checker kinds or formats: it asks
for the values of the model's type (``values(CheckerKind)``), optionally in its own display
order (``ordered(CheckerKind, labels)``, the default first). A label for a value the type no
longer has is an error, so a renamed value cannot leave a stale option behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args


def values(kind: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` type, in the order it declares them."""
    found = get_args(kind)
    if not found:
        raise TypeError(f"{kind!r} is not a Literal type")
    return found


def ordered(kind: Any, labels: Mapping[str, str]) -> list[str]:
    """The values of ``kind`` in the order of ``labels`` (display order), then any value
    ``labels`` does not name, in declaration order. Raises ``ValueError`` for a label of a
    value ``kind`` does not have."""
    declared = values(kind)
    stale = [value for value in labels if value not in declared]
    if stale:
        raise ValueError(f"labels for unknown values {stale}; {kind!r} has {list(declared)}")
    return [*labels, *(value for value in declared if value not in labels)]


def label_of(labels: Mapping[str, str]) -> Callable[[str], str]:
    """A ``format_func`` showing a value's label, or the value itself when it has none."""
    return lambda value: labels.get(value, value)
