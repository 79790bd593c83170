"""Annotations for the UI and the CLI: label a run, a node's output or a model call good or bad
(``annotate``), list a run's labels (``list_annotations``, ``annotation_badges``) and turn an
annotated answer into an evaluation example (``add_to_dataset``).

"Add to dataset" writes the workspace's own datasets: ``<data dir>/datasets/<name>.jsonl``, one
JSON object a line in the format ``engine.tune.datasets`` reads (``id``, ``input``,
``expected``, plus ``source`` saying where the example came from, which the reader ignores).
The file is created when missing and appended to otherwise. For a run, the input is the run's
task and the expected answer its corrected answer; for a node, the input is the node's rendered
prompt (the messages of its answering call) and the expected answer its corrected output. A
good label without a correction takes the recorded output as the expected answer.

Nothing here imports Streamlit or prints.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DatasetError, TraceStoreError
from engine.tune.datasets import DATASET_SUFFIXES, Example, load_dataset
from storage.trace_queries import parse_prompt
from storage.traces.annotations import LABELS, SCORE_RANGE, node_badges
from storage.workspace import Workspace

#: Folder of the workspace's own datasets, inside the data directory.
DATASETS_DIR = "datasets"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")

__all__ = [
    "DATASETS_DIR",
    "LABELS",
    "SCORE_RANGE",
    "DatasetAddition",
    "add_to_dataset",
    "annotate",
    "annotation_badges",
    "check_dataset_request",
    "dataset_path",
    "list_annotations",
    "workspace_datasets",
]


def annotate(
    workspace: Workspace,
    run_id: str,
    node_id: str | None,
    *,
    label: str,
    score: float | None = None,
    note: str | None = None,
    call_id: str | None = None,
    corrected_output: str | None = None,
) -> dict[str, Any]:
    """Store one annotation and return its row; bad input raises ``TraceStoreError``."""
    return workspace.traces.add_annotation(
        run_id,
        node_id or None,
        label=label,
        call_id=call_id or None,
        score=score,
        note=note,
        corrected_output=corrected_output,
    )


def list_annotations(workspace: Workspace, run_id: str) -> list[dict[str, Any]]:
    """The run's annotations, oldest first; an unknown run raises ``TraceStoreError``."""
    if workspace.traces.run(run_id) is None:
        raise TraceStoreError(f"No run {run_id!r} in the trace store; `run.py runs` lists them.")
    return workspace.traces.annotations(run_id)


def annotation_badges(workspace: Workspace, run_id: str) -> dict[str, str]:
    """Per node id of the run, a short badge of its labels: "good", "bad ×2", "bad · good"."""
    return node_badges(workspace.traces.annotations(run_id))


# -- datasets ----------------------------------------------------------------------------------
def workspace_datasets(root: Path | str) -> dict[str, Path]:
    """The datasets "Add to dataset" wrote under ``root`` (the data directory), by name."""
    folder = Path(root) / DATASETS_DIR
    if not folder.is_dir():
        return {}
    return {
        path.stem: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in DATASET_SUFFIXES
    }


def dataset_path(root: Path | str, name: str) -> Path:
    """Where the workspace dataset ``name`` lives (``.jsonl``); refuses names that are not a
    plain file name."""
    stem = name.strip().removesuffix(".jsonl")
    if not _DATASET_NAME.match(stem):
        raise DatasetError(
            f"A dataset name is letters, digits, '.', '_' and '-' (at most 80), not {name!r}."
        )
    return Path(root) / DATASETS_DIR / f"{stem}.jsonl"


def check_dataset_request(
    workspace: Workspace, dataset: str, label: str, corrected_output: str | None
) -> Path:
    """Refuse (``DatasetError``) what ``add_to_dataset`` would refuse for an annotation not
    stored yet: a bad dataset name, or a bad label without a correction. Returns the path."""
    path = dataset_path(workspace.root, dataset)
    if label == "bad" and not (corrected_output or "").strip():
        raise DatasetError(
            "Nothing to expect: a bad label needs a corrected output (--correct) before it "
            "becomes an example."
        )
    return path


@dataclass(frozen=True)
class DatasetAddition:
    """What ``add_to_dataset`` wrote."""

    path: Path
    example: Example
    created: bool  # the file was new
    size: int  # examples in the file now


def _rendered_input(calls: list[dict[str, Any]], node_id: str) -> str:
    """The node's prompt as text: its answering call's messages (the selected sample's, else
    the first call's), one "role: content" block each when there are several."""
    mine = [call for call in calls if call["node_id"] == node_id and call.get("prompt")]
    if not mine:
        return ""
    chosen = next(
        (c for c in mine if c.get("selected")),
        next((c for c in mine if c.get("role") in (None, "answer")), mine[0]),
    )
    messages = parse_prompt(chosen["prompt"])
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _example_parts(workspace: Workspace, annotation: dict[str, Any]) -> tuple[str, str | None, str]:
    """(input, expected, source) for an annotation: a run's task and answer, or a node's
    rendered prompt and output; the correction wins over the recorded output."""
    store = workspace.traces
    run_id = annotation["run_id"]
    run = store.run(run_id)
    if run is None:
        raise TraceStoreError(f"No run {run_id!r} in the trace store.")
    node_id = annotation.get("node_id")
    correction = annotation.get("corrected_output")
    if not node_id:
        recorded = run.get("answer")
        text, source = run.get("task") or "", f"run {run_id}"
    else:
        node = next((n for n in store.node_executions(run_id) if n["node_id"] == node_id), None)
        recorded = node.get("output") if node else None
        text, source = (
            _rendered_input(store.model_calls(run_id), node_id),
            f"run {run_id} node {node_id}",
        )
        if not text and node is not None:
            text = node.get("title") or ""
    expected = correction or (recorded if annotation["label"] == "good" else None)
    return text.strip(), (expected or "").strip() or None, source


def add_to_dataset(
    workspace: Workspace, run_id: str, annotation_id: str, dataset: str
) -> DatasetAddition:
    """Append annotation ``annotation_id`` of run ``run_id`` to the workspace dataset
    ``dataset`` (created when missing) as one example; returns what was written.

    Refused with ``DatasetError`` when there is nothing to expect (a bad label without a
    correction), no input was recorded, or the existing file is not a readable dataset (it is
    then left as it is).
    """
    annotation = next(
        (a for a in list_annotations(workspace, run_id) if a["annotation_id"] == annotation_id),
        None,
    )
    if annotation is None:
        raise TraceStoreError(f"Run {run_id!r} has no annotation {annotation_id!r}.")
    text, expected, source = _example_parts(workspace, annotation)
    if expected is None:
        raise DatasetError(
            "Nothing to expect: a bad label needs a corrected output before it becomes an "
            "example (a good one uses the recorded output)."
        )
    if not text:
        raise DatasetError(f"No input was recorded for {source}: nothing to ask in an example.")
    path = dataset_path(workspace.root, dataset)
    created = not path.exists()
    taken: set[str] = set()
    if not created:
        taken = {example.id for example in load_dataset(path).examples}
    example_id = f"{run_id}-{annotation.get('node_id') or 'run'}"
    base, suffix = example_id, 2
    while example_id in taken:
        example_id, suffix = f"{base}-{suffix}", suffix + 1
    example = Example(id=example_id, input=text, expected=expected)
    record = {**example.model_dump(), "source": f"{source}, annotation {annotation_id}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = ""
    if not created and not path.read_bytes().endswith(b"\n") and path.stat().st_size:
        prefix = "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(prefix + json.dumps(record, ensure_ascii=False) + "\n")
    return DatasetAddition(path=path, example=example, created=created, size=len(taken) + 1)
