"""Datasets: examples (an input and the expected answer) read from ``.csv`` or ``.jsonl`` files."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assets import asset_path
from engine.errors import DatasetError, EvaluationError

DATASETS_DIR = asset_path("datasets")
DATASET_SUFFIXES = (".csv", ".jsonl")
INPUT_ALIASES = ("input", "question", "prompt")
EXPECTED_ALIASES = ("expected", "answer", "target", "output")


class Example(BaseModel):
    """One dataset item: what the plan is asked and the answer a checker compares with."""

    id: str
    input: str
    expected: str


@dataclass
class Dataset:
    """Examples read from one file; ``source`` is that file's path."""

    name: str
    examples: list[Example]
    source: str

    def __len__(self) -> int:
        return len(self.examples)


def _cell(value: Any) -> str:
    """A JSON value as dataset text: strings as they are, anything else as JSON (``12``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _column(names: Sequence[str], aliases: Sequence[str], where: str) -> str | None:
    present = [name for name in aliases if name in names]
    if len(present) > 1:
        raise DatasetError(
            f"{where}: columns {' and '.join(repr(p) for p in present)} both give the "
            f"{aliases[0]}; keep one."
        )
    return present[0] if present else None


def _record(
    row: dict[str, Any], number: int, line: int, where: str, seen: dict[str, int]
) -> Example:
    """One example from a row whose keys are already lower-cased and stripped."""
    names = list(row)
    input_key = _column(names, INPUT_ALIASES, f"{where}:{line}")
    expected_key = _column(names, EXPECTED_ALIASES, f"{where}:{line}")
    for key, aliases in ((input_key, INPUT_ALIASES), (expected_key, EXPECTED_ALIASES)):
        if key is None:
            raise DatasetError(
                f"{where}:{line}: no {aliases[0]!r} column (or {', '.join(aliases[1:])}); "
                f"found {', '.join(repr(n) for n in names) or 'none'}."
            )
    assert input_key is not None and expected_key is not None
    text = _cell(row[input_key]).strip()
    expected = _cell(row[expected_key]).strip()
    if not text:
        raise DatasetError(f"{where}:{line}: the {input_key!r} is empty.")
    if not expected:
        raise DatasetError(f"{where}:{line}: the {expected_key!r} is empty.")
    raw_id = _cell(row.get("id")).strip()
    example_id = raw_id or str(number)
    if example_id in seen:
        raise DatasetError(
            f"{where}:{line}: id {example_id!r} is used again (first on line {seen[example_id]})."
        )
    seen[example_id] = line
    return Example(id=example_id, input=text, expected=expected)


def _read_jsonl(path: Path, text: str) -> list[Example]:
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise DatasetError(f"{path}:{line_number}: nested too deeply.") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}:{line_number}: malformed JSON ({exc.msg} at column {exc.colno})."
            ) from exc
        if not isinstance(row, dict):
            raise DatasetError(
                f"{path}:{line_number}: expected a JSON object, found {type(row).__name__}."
            )
        row = {str(key).strip().lower(): value for key, value in row.items()}
        examples.append(_record(row, len(examples) + 1, line_number, str(path), seen))
    return examples


def _read_csv(path: Path, text: str) -> list[Example]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise DatasetError(f"{path}:1: unreadable CSV header ({exc}).") from exc
    columns = [name.strip().lower() for name in header]
    if len(set(columns)) != len(columns):
        raise DatasetError(f"{path}:1: the header repeats a column: {', '.join(header)}.")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DatasetError(f"{path}:{reader.line_num}: unreadable CSV ({exc}).") from exc
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            raise DatasetError(
                f"{path}:{line}: {len(cells)} fields, but the header has {len(columns)} "
                f"({', '.join(header)}). Quote fields that contain commas."
            )
        row = dict(zip(columns, cells, strict=True))
        examples.append(_record(row, len(examples) + 1, line, str(path), seen))
    return examples


def load_dataset(path: str | Path) -> Dataset:
    """Read a ``.csv`` (with a header row) or ``.jsonl`` (one JSON object a line) dataset.

    Columns: ``input`` (or ``question`` / ``prompt``), ``expected`` (or ``answer`` / ``target``
    / ``output``), optional ``id``; other columns are ignored and names are case-insensitive.
    JSON values that are not strings become their JSON text (``12`` -> ``"12"``). An example
    without an id gets its 1-based position among the file's examples (blank lines and the CSV
    header not counted; in a JSONL file without blank lines that is its line number). Blank
    lines are skipped. Every problem (malformed line, missing column, empty input or expected,
    repeated id, empty file) raises ``DatasetError`` naming the file and line.
    """
    path = Path(path)
    if path.suffix.lower() not in DATASET_SUFFIXES:
        raise DatasetError(f"{path}: a dataset must be a .csv or .jsonl file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file.") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror}).") from exc
    read = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
    examples = read(path, text)
    if not examples:
        raise DatasetError(f"{path}: the file has no examples.")
    return Dataset(name=path.stem, examples=examples, source=str(path))


def shipped_datasets() -> dict[str, Path]:
    """The datasets that come with Arbor (``assets/datasets/``), by name."""
    return {
        path.stem: path
        for path in sorted(DATASETS_DIR.iterdir())
        if path.is_file() and path.suffix in DATASET_SUFFIXES
    }


def select_examples(
    dataset: Dataset, *, limit: int | None = None, example_ids: Sequence[str] | None = None
) -> list[Example]:
    """The examples to run, in dataset order: those named (all if None), then the first
    ``limit``. Unknown ids raise ``EvaluationError``."""
    examples = dataset.examples
    if example_ids is not None:
        wanted = set(example_ids)
        unknown = sorted(wanted - {example.id for example in examples})
        if unknown:
            raise EvaluationError(
                f"Dataset {dataset.name!r} has no example with id {', '.join(unknown)}."
            )
        examples = [example for example in examples if example.id in wanted]
    if limit is not None:
        if limit < 1:
            raise EvaluationError(f"The example limit must be at least 1, not {limit}.")
        examples = examples[:limit]
    return list(examples)


__all__ = [
    "DATASETS_DIR",
    "Dataset",
    "DatasetError",
    "Example",
    "load_dataset",
    "select_examples",
    "shipped_datasets",
]
