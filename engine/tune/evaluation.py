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

The parts live in their own modules and are re-exported here: ``engine.tune.datasets``
(examples, loading), ``engine.tune.checking`` (checkers), ``engine.tune.runners`` (plan jobs
and runners), ``engine.tune.metrics`` (accuracy, cost-of-pass, frontier, the report's chart).
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from engine.checks import CheckError, compile_pattern
from engine.errors import DatasetError, EvaluationError, user_message
from engine.models import Backend, backend_for
from engine.plan.model_settings import ModelRef
from engine.run.executor import RunResult
from engine.tune.checking import (
    JUDGE_ANSWER_CHARS,
    JUDGE_GENERATION,
    JUDGE_INSTRUCTIONS,
    JUDGE_SCHEMA,
    CheckerConfig,
    CheckerKind,
    CheckResult,
    check_answer,
    judge_messages,
)
from engine.tune.datasets import (
    DATASET_SUFFIXES,
    DATASETS_DIR,
    EXPECTED_ALIASES,
    INPUT_ALIASES,
    Dataset,
    Example,
    Scorer,
    load_dataset,
    select_examples,
    shipped_datasets,
)
from engine.tune.metrics import (
    ConfigurationResult,
    CostUnit,
    EvaluationReport,
    ExampleOutcome,
    accuracy_cost_chart,
    pareto_frontier,
    summarise,
)
from engine.tune.runners import (
    JobOutcome,
    PlanConfiguration,
    PlanJob,
    PlanRunner,
    ThreadedRunner,
    ThreadRunner,
    plan_for_input,
)

_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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


def _outcome(
    job: PlanJob,
    example: Example,
    result: RunResult | None,
    error: str | None,
    checker: CheckerConfig,
    judge: Backend | None,
    scorer: Scorer | None = None,
) -> ExampleOutcome:
    output = result.answer if result is not None else None
    # A "suspect" run answered (with a warning): its answer is checked like any other.
    if result is not None and error is None and not result.answered:
        error = f"run {result.status}: {result.stop_reason or 'no reason given'}"
    score = None if scorer is None else (lambda answer: scorer(answer, example))
    try:
        verdict = check_answer(output, example.expected, checker, judge=judge, score=score)
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
        difficulty=example.difficulty,
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
    if checker.kind == "dataset" and dataset.scorer is None:
        raise EvaluationError(
            f"The dataset checker needs a dataset with its own scorer; {dataset.name} has none "
            "(generated datasets have one): choose another checker."
        )
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
            example = by_id[job.example_id]
            outcome = _outcome(job, example, result, job_error, checker, judge, dataset.scorer)
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


__all__ = [
    "DATASETS_DIR",
    "DATASET_SUFFIXES",
    "EXPECTED_ALIASES",
    "INPUT_ALIASES",
    "JUDGE_ANSWER_CHARS",
    "JUDGE_GENERATION",
    "JUDGE_INSTRUCTIONS",
    "JUDGE_SCHEMA",
    "CheckResult",
    "CheckerConfig",
    "CheckerKind",
    "ConfigurationResult",
    "CostUnit",
    "Dataset",
    "DatasetError",
    "EvaluationError",
    "EvaluationReport",
    "Example",
    "ExampleOutcome",
    "JobOutcome",
    "PlanConfiguration",
    "PlanJob",
    "PlanRunner",
    "ThreadRunner",
    "ThreadedRunner",
    "accuracy_cost_chart",
    "check_answer",
    "evaluate",
    "judge_messages",
    "load_dataset",
    "new_evaluation_id",
    "pareto_frontier",
    "plan_for_input",
    "select_examples",
    "shipped_datasets",
    "summarise",
]
