"""Run names and tags (``run_labels``, migration 9): what an analyst calls a run and the tags
that group runs ("baseline", "prompt-v2"), as Langfuse and Phoenix let one name and tag traces.

Names are trimmed and at most ``NAME_CHARS`` characters; tags are trimmed, lower-case, without
commas or spaces inside (a space becomes "-"), at most ``TAG_CHARS`` each and ``MAX_TAGS`` per
run, kept sorted without duplicates, so "Baseline" and "baseline " are one tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb

from engine.errors import TraceStoreError

NAME_CHARS = 120
TAG_CHARS = 40
MAX_TAGS = 20


@dataclass(frozen=True)
class RunLabel:
    """A run's name ("" when it has none) and tags (sorted)."""

    name: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def clean_name(name: str) -> str:
    """``name`` trimmed, on one line; too long raises ``TraceStoreError``."""
    text = " ".join(str(name).split())
    if len(text) > NAME_CHARS:
        raise TraceStoreError(f"A run name has at most {NAME_CHARS} characters, not {len(text)}.")
    return text


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags trimmed, lower-case, inner spaces as "-", sorted and without duplicates; a tag
    with a comma or over ``TAG_CHARS`` characters, or more than ``MAX_TAGS``, is refused."""
    cleaned: set[str] = set()
    for raw in tags:
        tag = re.sub(r"\s+", "-", str(raw).strip().lower())
        if not tag:
            continue
        if "," in tag:
            raise TraceStoreError(f"A tag cannot hold a comma: {raw!r} (give tags one by one).")
        if len(tag) > TAG_CHARS:
            raise TraceStoreError(f"A tag has at most {TAG_CHARS} characters: {raw!r}.")
        cleaned.add(tag)
    if len(cleaned) > MAX_TAGS:
        raise TraceStoreError(f"A run has at most {MAX_TAGS} tags, not {len(cleaned)}.")
    return tuple(sorted(cleaned))


def set_label(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    name: str | None = None,
    tags: Sequence[str] | None = None,
) -> RunLabel:
    """Set a run's name and/or tags (None leaves that part as it is; "" or [] clears it)."""
    if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
        raise TraceStoreError(f"No run {run_id!r} in the trace store.")
    current = get_labels(con, [run_id]).get(run_id, RunLabel())
    label = RunLabel(
        name=current.name if name is None else clean_name(name),
        tags=current.tags if tags is None else clean_tags(tags),
    )
    con.execute(
        "INSERT OR REPLACE INTO run_labels (run_id, name, tags, updated_at)"
        " VALUES (?, ?, ?, now())",
        [run_id, label.name or None, list(label.tags)],
    )
    return label


def get_labels(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None = None
) -> dict[str, RunLabel]:
    """The labels of ``run_ids`` (of every labelled run when None); unlabelled runs are left
    out."""
    sql = "SELECT run_id, name, tags FROM run_labels"
    params: list[object] = []
    if run_ids is not None:
        sql += " WHERE run_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(run_ids))
    return {
        run_id: RunLabel(name or "", tuple(tags or ()))
        for run_id, name, tags in con.execute(sql, params).fetchall()
    }


__all__ = ["MAX_TAGS", "NAME_CHARS", "TAG_CHARS", "RunLabel", "clean_name", "clean_tags"]
