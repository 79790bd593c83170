"""Recorded outcomes of every assignment on every dev example, and an evaluator that reads them.

Comparing search methods fairly needs the same ground truth for all of them, and the exhaustive
optimum to measure them against: running 625 assignments × 60 examples through real models for
each comparison is out of reach on a laptop. An ``OutcomeTable`` records, per (assignment,
example), whether the pipeline was right, what it cost, its tokens and latency; a
``TableEvaluator`` answers trials from it instantly and counts how many were asked. Tables are
JSON (gzip when the file name ends in ``.gz``) with a format marker and a version.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from engine.errors import MissingOutcome, OutcomeTableError
from engine.tune.search import Assignment, SearchSpace, TrialResult

TABLE_FORMAT = "arbor-outcome-table"
TABLE_FORMAT_VERSION = 1
CostUnit = Literal["usd", "tokens"]
COST_UNITS: tuple[str, ...] = ("usd", "tokens")


@dataclass(frozen=True)
class Outcome:
    """One assignment on one example."""

    correct: bool
    cost: float
    tokens: int
    latency_s: float


class OutcomeTable:
    """Outcomes per full assignment of ``space`` and per example (every row has all examples)."""

    def __init__(
        self,
        space: SearchSpace,
        n_examples: int,
        cost_unit: CostUnit = "usd",
        metadata: Mapping[str, Any] | None = None,
    ):
        if n_examples < 1:
            raise ValueError("an outcome table needs at least one example")
        if cost_unit not in COST_UNITS:
            raise ValueError(f"cost_unit must be one of {COST_UNITS}, not {cost_unit!r}")
        self.space = space
        self.n_examples = n_examples
        self.cost_unit: CostUnit = cost_unit
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._rows: dict[tuple[int, ...], list[Outcome]] = {}

    @property
    def option_labels(self) -> dict[str, list[str]]:
        return self.space.labels()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, assignment: object) -> bool:
        if not isinstance(assignment, Mapping):
            return False
        try:
            return self.space.key(assignment) in self._rows
        except KeyError:
            return False

    @property
    def complete(self) -> bool:
        """True when every assignment of the space has a row."""
        return len(self._rows) == self.space.size

    def record(self, assignment: Mapping[str, int], outcomes: Sequence[Outcome]) -> None:
        """Store (or replace) the outcomes of ``assignment``, one per example in order."""
        checked = self.space.check(assignment)
        if len(outcomes) != self.n_examples:
            raise ValueError(
                f"expected {self.n_examples} outcomes (one per example), got {len(outcomes)}"
            )
        self._rows[self.space.key(checked)] = list(outcomes)

    def outcomes(self, assignment: Mapping[str, int]) -> list[Outcome]:
        checked = self.space.check(assignment)
        row = self._rows.get(self.space.key(checked))
        if row is None:
            raise MissingOutcome(
                f"the outcome table has no row for {self.space.describe(checked)}; "
                f"it records {len(self._rows)} of {self.space.size} assignments"
            )
        return row

    def assignment_costs(self) -> dict[tuple[int, ...], float]:
        """Mean cost per example of every recorded assignment (budget percentiles use it)."""
        return {
            key: sum(outcome.cost for outcome in row) / len(row) for key, row in self._rows.items()
        }

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Columnar rows: per assignment, a 0/1 string and lists of costs, tokens, latencies."""
        rows = []
        for key, row in sorted(self._rows.items()):
            rows.append(
                {
                    "assignment": list(key),
                    "correct": "".join("1" if o.correct else "0" for o in row),
                    "cost": [o.cost for o in row],
                    "tokens": [o.tokens for o in row],
                    "latency_s": [o.latency_s for o in row],
                }
            )
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_FORMAT_VERSION,
            "cost_unit": self.cost_unit,
            "n_examples": self.n_examples,
            "metadata": self.metadata,
            "space": self.space.model_dump(mode="json"),
            "rows": rows,
        }

    @classmethod
    def from_dict(cls, payload: object, *, source: str = "outcome table") -> OutcomeTable:
        """Parse a table; every problem becomes an ``OutcomeTableError`` naming ``source``."""
        if not isinstance(payload, dict):
            raise OutcomeTableError(f"{source} is not an outcome table: expected a JSON object.")
        fmt, version = payload.get("format"), payload.get("version")
        if fmt != TABLE_FORMAT:
            raise OutcomeTableError(
                f"{source} is not an outcome table: its format is {fmt!r}, not {TABLE_FORMAT!r}."
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise OutcomeTableError(f"{source} has no valid format version ({version!r}).")
        if version > TABLE_FORMAT_VERSION:
            raise OutcomeTableError(
                f"{source} has outcome-table version {version}; this Arbor reads up to "
                f"{TABLE_FORMAT_VERSION}. Update Arbor to open it."
            )
        try:
            space = SearchSpace.model_validate(payload.get("space"))
        except ValidationError as exc:
            raise OutcomeTableError(
                f"{source} has an invalid search space: {exc.errors()[0]['msg']}"
            ) from exc
        n_examples, unit = payload.get("n_examples"), payload.get("cost_unit")
        metadata = payload.get("metadata") or {}
        if not isinstance(n_examples, int) or isinstance(n_examples, bool) or n_examples < 1:
            raise OutcomeTableError(f"{source}: n_examples must be a positive integer.")
        if unit not in COST_UNITS:
            raise OutcomeTableError(f"{source}: cost_unit must be one of {COST_UNITS}.")
        if not isinstance(metadata, dict):
            raise OutcomeTableError(f"{source}: metadata must be an object.")
        table = cls(space, n_examples, unit, metadata)
        rows = payload.get("rows")
        if not isinstance(rows, list):
            raise OutcomeTableError(f"{source} has no 'rows' list.")
        for number, row in enumerate(rows):
            try:
                table._read_row(row)
            except (KeyError, TypeError, ValueError) as exc:
                raise OutcomeTableError(f"{source}: row {number} is unreadable: {exc}") from exc
        return table

    def _read_row(self, row: Any) -> None:
        key = row["assignment"]
        correct, costs = row["correct"], row["cost"]
        tokens, latencies = row["tokens"], row["latency_s"]
        if not isinstance(key, list) or len(key) != len(self.space.options):
            raise ValueError(f"assignment {key!r} does not give one index per node")
        columns = (correct, costs, tokens, latencies)
        if not isinstance(correct, str) or set(correct) - {"0", "1"}:
            raise ValueError("'correct' must be a string of 0 and 1")
        if any(len(column) != self.n_examples for column in columns):
            raise ValueError(f"every column must have {self.n_examples} entries")
        outcomes = [
            Outcome(flag == "1", float(cost), int(tok), float(lat))
            for flag, cost, tok, lat in zip(correct, costs, tokens, latencies, strict=True)
        ]
        self.record(self.space.from_key(key), outcomes)

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON; gzip-compressed when ``path`` ends in ``.gz``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
        if path.suffix == ".gz":
            # mtime=0: the same table gives the same bytes, so a regenerated file has no diff.
            with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(data)
        else:
            path.write_bytes(data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OutcomeTable:
        """Read a table written by ``save``; ``OutcomeTableError`` for a corrupt or foreign file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OutcomeTableError(f"Cannot read outcome table {path}: {exc.strerror}") from exc
        try:
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            payload = json.loads(raw.decode("utf-8"))
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OutcomeTableError(
                f"{path} is not an outcome table (not readable JSON or gzip: {exc})."
            ) from exc
        return cls.from_dict(payload, source=str(path))


class TableEvaluator:
    """An ``Evaluator`` that looks trials up in an ``OutcomeTable``; ``calls`` counts them."""

    def __init__(self, table: OutcomeTable):
        self.table = table
        self.n_examples = table.n_examples
        self.calls = 0
        #: Examples looked up over all calls (full-dataset calls count ``n_examples``).
        self.example_lookups = 0

    def __call__(
        self, assignment: Mapping[str, int], examples: Sequence[int] | None = None
    ) -> TrialResult:
        row = self.table.outcomes(assignment)
        indices = list(range(self.n_examples)) if examples is None else list(examples)
        if not indices:
            raise ValueError("evaluate at least one example")
        bad = [i for i in indices if not 0 <= i < self.n_examples]
        if bad:
            raise MissingOutcome(
                f"examples {bad[:5]} are outside the table's 0..{self.n_examples - 1}"
            )
        self.calls += 1
        self.example_lookups += len(indices)
        chosen = [row[i] for i in indices]
        n = len(chosen)
        assignment_dict: Assignment = dict(self.table.space.check(assignment))
        return TrialResult(
            assignment=assignment_dict,
            accuracy=sum(o.correct for o in chosen) / n,
            cost=sum(o.cost for o in chosen) / n,
            tokens=sum(o.tokens for o in chosen) / n,
            latency_s=sum(o.latency_s for o in chosen) / n,
            n_examples=n,
        )


__all__ = [
    "TABLE_FORMAT",
    "TABLE_FORMAT_VERSION",
    "MissingOutcome",
    "Outcome",
    "OutcomeTable",
    "OutcomeTableError",
    "TableEvaluator",
]
