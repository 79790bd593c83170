"""Evaluations: run plan configurations over a dataset, check the answers, compare the costs.

A configuration is a plan plus its caps; the question an evaluation answers is which one gives
correct answers most cheaply. Following Cost-of-Pass (arXiv 2504.13359), every configuration
gets accuracy, mean cost, mean latency and *cost-of-pass*, the expected cost of one correct
answer (mean cost per attempt / accuracy, infinite when it never passes), and the configurations
that no other beats on both cost and accuracy form the Pareto frontier.

Running is an adapter (``PlanRunner``): ``ThreadRunner`` calls ``execute_plan`` in a thread pool
with whatever backends it is given, so scripts and tests need no storage; the workspace or a Ray
cluster can supply another runner without this module knowing. An attempt's cost is what its
calls cost when they were made, so a replayed (cached) answer still counts at its recorded cost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field

from assets import asset_path
from engine.checks import CheckError, compile_pattern, extract_number, find_json, normalise_text
from engine.errors import ArborError, DatasetError, EvaluationError, user_message
from engine.models import Backend, backend_for
from engine.plan import Plan
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.prompts import as_user_turn
from engine.run.budget import RunCaps
from engine.run.call_cache import CallCache
from engine.run.executor import RunResult, execute_plan

if TYPE_CHECKING:
    import altair

DATASETS_DIR = asset_path("datasets")
DATASET_SUFFIXES = (".csv", ".jsonl")
INPUT_ALIASES = ("input", "question", "prompt")
EXPECTED_ALIASES = ("expected", "answer", "target", "output")
#: Longest answer shown to the judge; the verdict is about the final answer, not an essay.
JUDGE_ANSWER_CHARS = 2000
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "correct": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["correct", "reason"],
}
# No sample verdict in the text: small models copy it (a "reason" of "one short sentence").
JUDGE_INSTRUCTIONS = (
    "You grade an answer against a reference answer. The answer is correct if it gives the same"
    " final answer as the reference; wording, extra explanation and formatting do not matter."
    ' Reply with a JSON object with two fields: "correct" (true or false) and "reason" (why,'
    " in a few words)."
)
JUDGE_GENERATION = GenerationConfig(temperature=0.0, max_tokens=160, seed=0)
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

#: Makes the backend of a model reference (``engine.models.backend_for`` or a registry's).
BackendFactory = Callable[[ModelRef], Backend]
#: Receives a run's events (``engine.run.events``), e.g. a trace writer.
Listener = Callable[[Any], None]


# -- datasets --------------------------------------------------------------------------------
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


# -- checking answers ------------------------------------------------------------------------
CheckerKind = Literal["exact", "normalised", "numeric", "regex", "judge"]


class CheckerConfig(BaseModel):
    """How an output is compared with the expected answer."""

    kind: CheckerKind = Field(
        "normalised",
        description="exact: same text after trimming; normalised: same after normalisation"
        " (whole output or its first line); numeric: last numbers equal within tolerances;"
        " regex: the expected answer is a pattern found in the output; judge: a model decides.",
    )
    abs_tol: float = Field(
        1e-6, ge=0.0, le=1e12, description="numeric: absolute tolerance of the comparison."
    )
    rel_tol: float = Field(
        0.0, ge=0.0, le=1.0, description="numeric: relative tolerance (0.01 is 1%)."
    )
    judge_model: ModelRef | None = Field(
        None, description="judge: the model that decides; None uses the bundled model."
    )


@dataclass(frozen=True)
class CheckResult:
    """A checker's verdict on one output and a short explanation."""

    correct: bool
    detail: str


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _judge(output: str, expected: str, judge: Backend) -> CheckResult:
    answer = output.strip()[:JUDGE_ANSWER_CHARS]
    messages = as_user_turn(
        JUDGE_INSTRUCTIONS, f"Reference answer: {expected.strip()}\nAnswer to grade: {answer}"
    )
    try:
        completion = judge.complete(messages, JUDGE_GENERATION, json_schema=JUDGE_SCHEMA)
    except ArborError as exc:
        return CheckResult(False, f"the judge call failed: {exc}")
    found, verdict = find_json(completion.text)
    if not found or not isinstance(verdict, dict) or not isinstance(verdict.get("correct"), bool):
        return CheckResult(
            False, f"the judge's answer could not be read as a verdict: {completion.text[:80]!r}"
        )
    reason = str(verdict.get("reason", "")).strip()[:200]
    return CheckResult(verdict["correct"], f"judge: {reason or 'no reason given'}")


def check_answer(
    output: str | None, expected: str, checker: CheckerConfig, *, judge: Backend | None = None
) -> CheckResult:
    """Whether ``output`` answers ``expected`` by ``checker``'s rule.

    - exact: ``output.strip() == expected.strip()``.
    - normalised: ``normalise_text(output) == normalise_text(expected)``, or the same for the
      output's first non-blank line (so an answer followed by an explanation passes). No
      substring matching: "not Paris" does not pass for "Paris".
    - numeric: the last numbers of both (``extract_number``) agree by ``math.isclose`` with
      ``rel_tol`` and ``abs_tol``.
    - regex: ``expected`` is a pattern found in the output (``regex_passes``: case-insensitive,
      multi-line); an invalid pattern raises ``CheckError``.
    - judge: ``judge`` (required) answers JSON ``{"correct": bool, "reason": str}`` given the
      expected answer and the output; an answer that is not such JSON counts as incorrect.

    No output (None or blank) is incorrect with detail "no answer".
    """
    if output is None or not output.strip():
        return CheckResult(False, "no answer")
    kind = checker.kind
    if kind == "exact":
        same = output.strip() == expected.strip()
        return CheckResult(same, "identical" if same else "differs from the expected text")
    if kind == "normalised":
        want = normalise_text(expected)
        if normalise_text(output) == want:
            return CheckResult(True, "same after normalisation")
        if normalise_text(_first_line(output)) == want:
            return CheckResult(True, "first line same after normalisation")
        return CheckResult(False, f"normalised answer is not {want!r}")
    if kind == "numeric":
        want_number = extract_number(expected)
        if want_number is None:
            return CheckResult(False, f"the expected answer {expected!r} has no number")
        got = extract_number(output)
        if got is None:
            return CheckResult(False, "no number in the answer")
        if math.isclose(got, want_number, rel_tol=checker.rel_tol, abs_tol=checker.abs_tol):
            return CheckResult(True, f"{got:g} matches {want_number:g}")
        return CheckResult(False, f"got {got:g}, expected {want_number:g}")
    if kind == "regex":
        found = compile_pattern(expected).search(output) is not None
        return CheckResult(found, "pattern found" if found else f"pattern {expected!r} not found")
    if kind == "judge":
        if judge is None:
            raise CheckError("The judge checker needs a judge model; none was given.")
        return _judge(output, expected, judge)
    raise CheckError(f"Unknown checker kind {kind!r}.")


# -- configurations and runners --------------------------------------------------------------
@dataclass
class PlanConfiguration:
    """One contestant: a plan (with its models and strategies) and the caps it runs under."""

    name: str
    plan: Plan
    caps: RunCaps


def _title_of(task: str) -> str:
    # The same clip as ``single_node_plan``, so a title made from the task is recognised.
    return " ".join(task.split())[:80] or "Task"


def plan_for_input(plan: Plan, text: str) -> Plan:
    """A copy of ``plan`` asked ``text``: ``task`` becomes ``text``.

    Every node whose instruction equals the original task (after ``strip``) gets the
    instruction ``{{ task }}``, so a one-node plan (``single_node_plan``) answers each input
    rather than the task it was built for; and a node whose title is the original task's
    one-line clip (as ``single_node_plan`` makes it) gets the new input's, so the prompt does
    not show the old question as the step's name. Other nodes are unchanged: a plan written for
    one task refers to it through ``{{ task }}`` or the "Overall task" line of every prompt.
    """
    original = plan.task.strip()
    old_title = _title_of(plan.task)
    copy = plan.model_copy(deep=True)
    copy.task = text
    for node, _ in copy.iter_nodes():
        if original and node.instruction.strip() == original:
            node.instruction = "{{ task }}"
        if node.title == old_title:
            node.title = _title_of(text)
    return copy


@dataclass(frozen=True, eq=False)
class PlanJob:
    """One run to make: configuration ``configuration`` on example ``example_id``."""

    configuration: str
    example_id: str
    plan: Plan
    caps: RunCaps
    run_id: str


#: What a runner yields per finished job: the job, its result (None if it raised) and the error.
JobOutcome = tuple[PlanJob, RunResult | None, str | None]


class PlanRunner(Protocol):
    """Runs jobs and yields each as it finishes; a cancelled runner stops starting new ones."""

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]: ...


class ThreadedRunner:
    """A ``PlanRunner`` running jobs on a thread pool; subclasses say how one plan runs.

    ``workers`` plans run at once (default 1: calls to one local model queue anyway). A set
    ``cancel`` stops running plans and starts no new ones; closing the iterator early sets it.
    A job that raises yields ``(job, None, error text)``.
    """

    thread_name = "arbor-eval"

    def __init__(self, *, workers: int = 1):
        if workers < 1:
            raise EvaluationError(f"A runner needs at least one worker, not {workers}.")
        self.workers = workers

    def run_one(self, job: PlanJob, cancel: threading.Event) -> RunResult:
        raise NotImplementedError

    def _run(self, job: PlanJob, cancel: threading.Event) -> tuple[RunResult | None, str | None]:
        try:
            return self.run_one(job, cancel), None
        except Exception as exc:
            return None, user_message(exc)

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]:
        cancel = cancel or threading.Event()
        waiting = iter(jobs)
        running: dict[Future[tuple[RunResult | None, str | None]], PlanJob] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix=self.thread_name) as pool:

            def fill() -> None:
                while len(running) < self.workers and not cancel.is_set():
                    job = next(waiting, None)
                    if job is None:
                        return
                    running[pool.submit(self._run, job, cancel)] = job

            try:
                fill()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = running.pop(future)
                        result, error = future.result()
                        yield job, result, error
                    fill()
            finally:
                if running:  # the consumer stopped early: let the running plans stop too
                    cancel.set()


class ThreadRunner(ThreadedRunner):
    """Runs jobs with ``execute_plan``, without storage (scripts and tests).

    Backends come from ``backend_factory``; ``cache`` and ``listeners`` are passed to every run.
    """

    def __init__(
        self,
        backend_factory: BackendFactory = backend_for,
        *,
        workers: int = 1,
        cache: CallCache | None = None,
        listeners: Sequence[Listener] = (),
    ):
        super().__init__(workers=workers)
        self.backend_factory = backend_factory
        self.cache = cache
        self.listeners = list(listeners)

    def run_one(self, job: PlanJob, cancel: threading.Event) -> RunResult:
        return execute_plan(
            job.plan,
            job.caps,
            listeners=self.listeners,
            backend_factory=self.backend_factory,
            run_id=job.run_id,
            cache=self.cache,
            cancel=cancel,
        )


# -- results ---------------------------------------------------------------------------------
@dataclass
class ExampleOutcome:
    """One configuration's attempt at one example, checked."""

    configuration: str
    example_id: str
    run_id: str
    output: str | None
    expected: str
    correct: bool
    detail: str
    #: Tokens and dollars of the attempt, replayed calls counted at what they cost when made.
    tokens: int
    cost_usd: float
    latency_s: float
    #: Every call came from recorded outcomes; nothing was computed again.
    replayed: bool
    error: str | None = None


@dataclass
class ConfigurationResult:
    """One configuration's metrics over the examples it finished."""

    name: str
    n: int
    correct: int
    accuracy: float
    mean_tokens: float
    mean_cost_usd: float
    mean_latency_s: float
    #: Expected dollars (tokens) per correct answer: mean cost / accuracy; inf if none passed.
    cost_of_pass_usd: float
    cost_of_pass_tokens: float
    replayed: int
    outcomes: list[ExampleOutcome] = field(default_factory=list)


def summarise(name: str, outcomes: Sequence[ExampleOutcome]) -> ConfigurationResult:
    """Metrics of one configuration's outcomes (no outcomes: accuracy 0, costs 0)."""
    n = len(outcomes)
    correct = sum(1 for outcome in outcomes if outcome.correct)
    accuracy = correct / n if n else 0.0
    mean_tokens = sum(o.tokens for o in outcomes) / n if n else 0.0
    mean_cost = sum(o.cost_usd for o in outcomes) / n if n else 0.0
    mean_latency = sum(o.latency_s for o in outcomes) / n if n else 0.0
    return ConfigurationResult(
        name=name,
        n=n,
        correct=correct,
        accuracy=accuracy,
        mean_tokens=mean_tokens,
        mean_cost_usd=mean_cost,
        mean_latency_s=mean_latency,
        cost_of_pass_usd=mean_cost / accuracy if accuracy else math.inf,
        cost_of_pass_tokens=mean_tokens / accuracy if accuracy else math.inf,
        replayed=sum(1 for outcome in outcomes if outcome.replayed),
        outcomes=list(outcomes),
    )


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, accuracy)`` points no other point dominates, sorted by cost.

    A point is dominated by one with lower-or-equal cost and higher-or-equal accuracy, at
    least one of them strictly. Identical points do not dominate each other, so both stay.
    Ties in cost are ordered by accuracy, highest first, then by index.
    """
    frontier = [
        i
        for i, (cost, accuracy) in enumerate(points)
        if not any(
            other_cost <= cost
            and other_accuracy >= accuracy
            and (other_cost < cost or other_accuracy > accuracy)
            for other_cost, other_accuracy in points
        )
    ]
    return sorted(frontier, key=lambda i: (points[i][0], -points[i][1], i))


CostUnit = Literal["usd", "tokens"]


def _cost_of(result: ConfigurationResult, cost: str) -> float:
    if cost == "usd":
        return result.mean_cost_usd
    if cost == "tokens":
        return result.mean_tokens
    raise EvaluationError(f"Unknown cost unit {cost!r}: use 'usd' or 'tokens'.")


@dataclass
class EvaluationReport:
    """What an evaluation found, per configuration; ``status`` is completed, cancelled or
    failed (``error`` says why), and holds what finished either way."""

    evaluation_id: str
    dataset: str
    checker: CheckerConfig
    results: list[ConfigurationResult]
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None = None

    def frontier(self, cost: str = "usd") -> list[str]:
        """Names of the configurations on the accuracy/cost Pareto frontier, cheapest first.

        ``cost`` is ``usd`` (mean dollars per attempt) or ``tokens`` (mean tokens per attempt);
        configurations that finished no example are left out.
        """
        measured = [result for result in self.results if result.n]
        points = [(_cost_of(result, cost), result.accuracy) for result in measured]
        return [measured[i].name for i in pareto_frontier(points)]

    def rows(self) -> list[dict[str, Any]]:
        """One table row per configuration; ``on_frontier`` is by dollars."""
        on_frontier = set(self.frontier("usd"))
        return [
            {
                "configuration": r.name,
                "n": r.n,
                "correct": r.correct,
                "accuracy": r.accuracy,
                "mean_tokens": r.mean_tokens,
                "mean_cost_usd": r.mean_cost_usd,
                "mean_latency_s": r.mean_latency_s,
                "cost_of_pass_usd": r.cost_of_pass_usd,
                "cost_of_pass_tokens": r.cost_of_pass_tokens,
                "replayed": r.replayed,
                "on_frontier": r.name in on_frontier,
            }
            for r in self.results
        ]

    def outcomes(self) -> list[ExampleOutcome]:
        """Every outcome, configuration by configuration."""
        return [outcome for result in self.results for outcome in result.outcomes]


# -- running an evaluation -------------------------------------------------------------------
def new_evaluation_id() -> str:
    return f"eval-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _run_ids(evaluation_id: str, pairs: Sequence[tuple[int, str]]) -> list[str]:
    """``{evaluation_id}-{config index}-{example id}`` with unsafe characters as ``_``;
    a clash after that (ids ``a b`` and ``a_b``) gets a short hash of the raw id."""
    ids: list[str] = []
    taken: set[str] = set()
    for index, example_id in pairs:
        raw = f"{evaluation_id}-{index}-{example_id}"
        run_id = _RUN_ID_UNSAFE.sub("_", raw)[:150]
        if run_id in taken:
            run_id = f"{run_id}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
        taken.add(run_id)
        ids.append(run_id)
    return ids


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


def _outcome(
    job: PlanJob,
    example: Example,
    result: RunResult | None,
    error: str | None,
    checker: CheckerConfig,
    judge: Backend | None,
) -> ExampleOutcome:
    output = result.answer if result is not None else None
    if result is not None and error is None and result.status != "completed":
        error = f"run {result.status}: {result.stop_reason or 'no reason given'}"
    try:
        verdict = check_answer(output, example.expected, checker, judge=judge)
    except Exception as exc:  # a broken judge must not end the evaluation
        verdict = CheckResult(False, f"the checker failed: {user_message(exc)}")
    detail = verdict.detail
    if error is not None and output is None:
        detail = error
    return ExampleOutcome(
        configuration=job.configuration,
        example_id=example.id,
        run_id=job.run_id,
        output=output,
        expected=example.expected,
        correct=verdict.correct,
        detail=detail,
        tokens=result.attempt_tokens if result is not None else 0,
        cost_usd=result.attempt_cost_usd if result is not None else 0.0,
        latency_s=result.wall_s if result is not None else 0.0,
        replayed=result.replayed if result is not None else False,
        error=error,
    )


def evaluate(
    dataset: Dataset,
    configurations: Sequence[PlanConfiguration],
    checker: CheckerConfig,
    *,
    runner: PlanRunner,
    judge: Backend | None = None,
    evaluation_id: str | None = None,
    on_outcome: Callable[[ExampleOutcome], None] | None = None,
    cancel: threading.Event | None = None,
    limit: int | None = None,
    example_ids: Sequence[str] | None = None,
) -> EvaluationReport:
    """Run every configuration on every selected example, check the answers, sum up.

    Each configuration's plan gets each example through ``plan_for_input``; run ids are
    ``{evaluation_id}-{config index}-{example id}`` (made safe, see ``_run_ids``). Jobs are
    handed to ``runner`` example by example (every configuration on example 1, then 2 ...), so
    a cancelled evaluation still compares the configurations on the same examples. A run that
    fails or stops without an answer counts as incorrect, with its error; a run cut short by
    ``cancel`` is left out and the report's status is ``cancelled``. An attempt's cost and
    tokens are the run's ``attempt_cost_usd`` / ``attempt_tokens`` (replayed calls at their
    recorded cost); its latency is the run's ``wall_s``. A judge checker without ``judge`` uses
    ``backend_for(checker.judge_model or the bundled model)``. A runner that raises ends the
    evaluation with status ``failed`` and what finished before; so does an ``on_outcome`` that
    raises.
    """
    if not configurations:
        raise EvaluationError("Nothing to evaluate: add at least one configuration.")
    names = [configuration.name for configuration in configurations]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise EvaluationError(f"Configuration names must differ; repeated: {', '.join(repeated)}.")
    examples = select_examples(dataset, limit=limit, example_ids=example_ids)
    if checker.kind == "regex":
        for example in examples:
            try:
                compile_pattern(example.expected)
            except CheckError as exc:
                raise CheckError(f"Example {example.id!r} of {dataset.name}: {exc}") from exc
    if checker.kind == "judge" and judge is None:
        judge = backend_for(checker.judge_model or ModelRef())
    evaluation_id = evaluation_id or new_evaluation_id()
    cancel = cancel or threading.Event()
    started_at = datetime.now(UTC)

    pairs = [(ci, example) for example in examples for ci in range(len(configurations))]
    run_ids = _run_ids(evaluation_id, [(ci, example.id) for ci, example in pairs])
    jobs = [
        PlanJob(
            configuration=configurations[ci].name,
            example_id=example.id,
            plan=plan_for_input(configurations[ci].plan, example.input),
            caps=configurations[ci].caps,
            run_id=run_id,
        )
        for (ci, example), run_id in zip(pairs, run_ids, strict=True)
    ]
    by_id = {example.id: example for example in examples}
    position = {example.id: index for index, example in enumerate(examples)}
    outcomes: dict[str, list[ExampleOutcome]] = {name: [] for name in names}
    status, error = "completed", None
    finished_jobs = runner(jobs, cancel=cancel)
    try:
        for job, result, job_error in finished_jobs:
            if cancel.is_set() and result is not None and result.status == "cancelled":
                continue  # cut short: not an attempt
            outcome = _outcome(job, by_id[job.example_id], result, job_error, checker, judge)
            outcomes[job.configuration].append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    except Exception as exc:
        status, error = "failed", f"the evaluation stopped: {user_message(exc)}"
    finally:
        close = getattr(finished_jobs, "close", None)
        if close is not None:  # a generator left early stops its running jobs
            close()
    finished = sum(len(items) for items in outcomes.values())
    if status == "completed" and cancel.is_set() and finished < len(jobs):
        status = "cancelled"
    results = [
        summarise(name, sorted(outcomes[name], key=lambda o: position[o.example_id]))
        for name in names
    ]
    return EvaluationReport(
        evaluation_id=evaluation_id,
        dataset=dataset.name,
        checker=checker,
        results=results,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        status=status,
        error=error,
    )


# -- chart -----------------------------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def accuracy_cost_chart(report: EvaluationReport, cost: str = "usd") -> altair.LayerChart:
    """Accuracy against mean cost per attempt, one point per configuration; the Pareto
    frontier drawn as a line through larger, filled points. Tooltips give the name, accuracy,
    cost and cost-of-pass (blank when infinite)."""
    import altair as alt  # heavy: only charts need it

    frontier = set(report.frontier(cost))
    unit = "mean $ per attempt" if cost == "usd" else "mean tokens per attempt"
    rows = [
        {
            "configuration": r.name,
            "accuracy": r.accuracy,
            "cost": _cost_of(r, cost),
            "cost_of_pass": _finite_or_none(
                r.cost_of_pass_usd if cost == "usd" else r.cost_of_pass_tokens
            ),
            "frontier": r.name in frontier,
        }
        for r in report.results
        if r.n
    ]
    data = alt.Data(values=rows)
    tooltip = [
        alt.Tooltip("configuration:N", title="configuration"),
        alt.Tooltip("accuracy:Q", title="accuracy", format=".0%"),
        alt.Tooltip("cost:Q", title=unit, format=".6g"),
        alt.Tooltip("cost_of_pass:Q", title="cost-of-pass", format=".6g"),
    ]
    # Room right of the costliest point for its label; from 0 so costs compare by length.
    most = max((row["cost"] for row in rows), default=0.0) or 1.0
    base = alt.Chart(data).encode(
        x=alt.X("cost:Q", title=unit, scale=alt.Scale(domain=[0, most * 1.25], nice=False)),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=tooltip,
    )
    points = base.mark_circle(size=70, opacity=0.6)
    on_frontier = base.transform_filter("datum.frontier")
    line = on_frontier.mark_line(strokeDash=[4, 3]).encode(order="cost:Q")
    marked = on_frontier.mark_point(size=140, filled=True, shape="diamond")
    labels = base.mark_text(align="left", dx=8, dy=-6).encode(text="configuration:N")
    return (points + line + marked + labels).properties(
        title=f"Accuracy vs cost on {report.dataset} (frontier: diamonds)"
    )


__all__ = [
    "CheckResult",
    "CheckerConfig",
    "ConfigurationResult",
    "Dataset",
    "DatasetError",
    "EvaluationError",
    "EvaluationReport",
    "Example",
    "ExampleOutcome",
    "PlanConfiguration",
    "PlanJob",
    "PlanRunner",
    "ThreadRunner",
    "accuracy_cost_chart",
    "check_answer",
    "evaluate",
    "load_dataset",
    "pareto_frontier",
    "plan_for_input",
    "select_examples",
    "shipped_datasets",
    "summarise",
]
