"""Datasets the analyst has: ``.csv``, ``.jsonl`` and ``.parquet`` files, and folders in the
Hugging Face datasets layout (``data/test-00000-of-00001.parquet`` ...).

Every format goes through one row reader (``_record``), so a column alias, a repeated id or an
empty answer gets the same one-line error whichever file it came from. A Parquet file is read
batch by batch and refused past ``MAX_EXAMPLES`` rows, so a compressed file that expands to
gigabytes of rows is stopped early rather than loaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assets import asset_path
from engine.errors import DatasetError, EvaluationError

DATASETS_DIR = asset_path("datasets")
DATASET_SUFFIXES = (".csv", ".jsonl", ".parquet")
INPUT_ALIASES = ("input", "question", "prompt")
EXPECTED_ALIASES = ("expected", "answer", "target", "output")
DIFFICULTY_ALIASES = ("difficulty", "level")
#: More rows than this in one file is refused (a Parquet file is read in batches up to it).
MAX_EXAMPLES = 100_000
#: The split a Hugging Face layout folder is read from when none is named, in this order.
SPLIT_PREFERENCE = ("test", "validation", "train")
#: GSM8K and datasets like it end a worked answer with ``#### 72``: the expected answer is
#: what follows the last such marker.
FINAL_ANSWER_MARKER = "####"


class Example(BaseModel):
    """One dataset item: what the plan is asked and the answer a checker compares with."""

    id: str
    input: str
    expected: str
    #: 1 (easiest) to 5, where the dataset says: a generated dataset's level, or a file's
    #: ``difficulty`` / ``level`` column. Reports group accuracy and cost by it.
    difficulty: int | None = None


#: A dataset's own scorer: 1.0 for a right answer, less for a wrong or partly right one.
Scorer = Callable[[str, Example], float]


@dataclass
class Dataset:
    """Examples read from one file or generated; ``source`` says where they came from (a path,
    or a generator's name, seed and levels). ``scorer`` is the dataset's own answer checker
    (the ``dataset`` checker kind), where it has one."""

    name: str
    examples: list[Example]
    source: str
    scorer: Scorer | None = None
    #: Where the data comes from and under what licence, for datasets that ship or generate.
    licence: str | None = None

    def difficulty_levels(self) -> list[int]:
        return sorted({e.difficulty for e in self.examples if e.difficulty is not None})

    def __len__(self) -> int:
        return len(self.examples)


def _cell(value: Any) -> str:
    """A JSON value as dataset text: strings as they are, anything else as JSON (``12``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _difficulty(row: dict[str, Any], where: str) -> int | None:
    key = _column(list(row), DIFFICULTY_ALIASES, where)
    if key is None or row[key] is None or _cell(row[key]).strip() == "":
        return None
    text = _cell(row[key]).strip()
    try:
        number = float(text)
    except ValueError:
        number = 0.0
    if number not in (1, 2, 3, 4, 5):
        raise DatasetError(
            f"{where}: the {key!r} must be a whole number from 1 to 5, not {text[:40]!r}."
        )
    return int(number)


def _final_answer(expected: str) -> str:
    if FINAL_ANSWER_MARKER in expected:
        return expected.rsplit(FINAL_ANSWER_MARKER, 1)[1].strip()
    return expected


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
    expected = _final_answer(_cell(row[expected_key]).strip())
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
    difficulty = _difficulty(row, f"{where}:{line}")
    return Example(id=example_id, input=text, expected=expected, difficulty=difficulty)


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


def _read_parquet(path: Path) -> list[Example]:
    # pyarrow is imported here: only a Parquet dataset pays for it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    examples: list[Example] = []
    seen: dict[str, int] = {}
    try:
        reader = pq.ParquetFile(path)
        for batch in reader.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if len(examples) >= MAX_EXAMPLES:
                    raise DatasetError(
                        f"{path}: more than {MAX_EXAMPLES:,} rows; use a smaller file."
                    )
                row = {str(key).strip().lower(): value for key, value in row.items()}
                number = len(examples) + 1
                examples.append(_record(row, number, number, f"{path} row", seen))
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        first_line = (str(exc).strip().splitlines() or ["unreadable"])[0][:200]
        raise DatasetError(f"{path}: not a readable Parquet file ({first_line}).") from None
    return examples


def _split_files(folder: Path, split: str | None) -> tuple[str, list[Path]]:
    """The files of one split of a Hugging Face layout folder: ``<split>-*.<ext>`` or
    ``<split>.<ext>`` under the folder or its ``data/``; ``split`` None takes the first of
    ``SPLIT_PREFERENCE`` present, else the only split there is."""
    candidates = [
        path
        for base in (folder, folder / "data")
        if base.is_dir()
        for path in sorted(base.iterdir())
        if path.is_file() and path.suffix.lower() in DATASET_SUFFIXES
    ]
    splits: dict[str, list[Path]] = {}
    for path in candidates:
        splits.setdefault(path.stem.split("-", 1)[0].lower(), []).append(path)
    if not splits:
        raise DatasetError(f"{folder}: no .csv, .jsonl or .parquet files in it or in its data/.")
    if split is None:
        preferred = [name for name in SPLIT_PREFERENCE if name in splits]
        if preferred:
            split = preferred[0]
        elif len(splits) == 1:
            split = next(iter(splits))
        else:
            raise DatasetError(
                f"{folder}: several splits ({', '.join(sorted(splits))}); name one with --split."
            )
    if split.lower() not in splits:
        raise DatasetError(f"{folder}: no split {split!r}; it has {', '.join(sorted(splits))}.")
    return split.lower(), splits[split.lower()]


def _read_file(path: Path) -> list[Example]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if not path.is_file():
            raise DatasetError(f"{path}: no such file.")
        return _read_parquet(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file.") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror}).") from exc
    read = _read_csv if suffix == ".csv" else _read_jsonl
    return read(path, text)


def load_dataset(path: str | Path, *, split: str | None = None) -> Dataset:
    """Read a ``.csv`` (with a header row), ``.jsonl`` (one JSON object a line) or
    ``.parquet`` dataset, or a folder in the Hugging Face datasets layout.

    Columns: ``input`` (or ``question`` / ``prompt``), ``expected`` (or ``answer`` / ``target``
    / ``output``), optional ``id`` and ``difficulty`` (or ``level``, 1-5); other columns are
    ignored and names are case-insensitive. An expected answer holding ``####`` (GSM8K's worked
    answers) is cut to what follows the last one. Values that are not strings become their JSON
    text (``12`` -> ``"12"``). An example without an id gets its 1-based position among the
    file's examples (blank lines and the CSV header not counted; in a JSONL file without blank
    lines that is its line number). Blank lines are skipped. A folder is read from one split
    (``split``, else test, validation or train, else its only one): every file of it, in name
    order (``test-00000-of-00002.parquet``, ``test-00001-of-00002.parquet``), ids unique across
    them. Every problem (malformed line, missing column, empty input or expected, repeated id,
    empty file, unreadable Parquet) raises ``DatasetError`` naming the file and line or row.
    """
    path = Path(path)
    if path.is_dir():
        split_name, files = _split_files(path, split)
        examples: list[Example] = []
        seen: set[str] = set()
        for file in files:
            for example in _read_file(file):
                if example.id in seen:
                    raise DatasetError(f"{file}: id {example.id!r} is used again in {path}.")
                seen.add(example.id)
                examples.append(example)
                if len(examples) > MAX_EXAMPLES:
                    raise DatasetError(f"{path}: more than {MAX_EXAMPLES:,} rows.")
        if not examples:
            raise DatasetError(f"{path}: the {split_name!r} split has no examples.")
        return Dataset(name=f"{path.name}/{split_name}", examples=examples, source=str(path))
    if path.suffix.lower() not in DATASET_SUFFIXES:
        raise DatasetError(
            f"{path}: a dataset must be a .csv, .jsonl or .parquet file, or a folder of them."
        )
    examples = _read_file(path)
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
    "MAX_EXAMPLES",
    "Dataset",
    "DatasetError",
    "Example",
    "Scorer",
    "load_dataset",
    "select_examples",
    "shipped_datasets",
]
