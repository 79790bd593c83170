"""The Evaluate page: run plan configurations over a dataset and compare accuracy with cost
(Pareto frontier marked), and search a model, strategy and output limit per node within a
budget on a dev set, then apply the best assignment to the workbench plan.

The page reads state, hands work to ``app.services.jobs`` (background threads, set up and
saved by ``app.services.tuning`` as the CLI's are) and renders what
the engine returns; runs go through the call cache, so repeating an evaluation replays them.

Over 500 lines: a Streamlit page is one script; its views are functions here and its work is in
``app.services.tuning``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from app.services import annotations, eval_estimate, tuning
from app.services.choices import label_of, ordered
from app.services.jobs import EvalJob
from app.ui import plan_panel, state
from app.ui.tables import readable_frame
from app.ui.widgets import field_bounds
from engine.errors import ArborError
from engine.plan import ModelRef, Plan
from engine.tune.datasets import GENERATED_PREFIX
from engine.tune.datasets.generated import RECOMMENDED
from engine.tune.dev_search import CostUnit, SearchMethod
from engine.tune.evaluation import (
    CheckerConfig,
    CheckerKind,
    Dataset,
    DatasetError,
    EvaluationReport,
    accuracy_cost_chart,
    load_dataset,
    shipped_datasets,
)
from engine.tune.metrics import level_failure_correlation
from engine.tune.search import SearchSpace, TrialResult
from storage.evaluations import list_evaluations

CONFIGURATION_CHOICES = [tuning.AS_IS, "single", "sc3", "sc5", "bo3", "refine1", "refine2"]
SEARCH_STRATEGIES = ["single", "sc3", "sc5", "bo3", "refine1"]
SEARCH_MAX_TOKENS = [4, 8, 16, 32, 64]
SEARCH_METHODS = {
    "coordinate": "coordinate descent",
    "halving": "successive halving",
    "llm": "LLM-guided",
}
CHECKER_LABELS = {
    "normalised": "normalised text",
    "exact": "exact text",
    "numeric": "number within tolerance",
    "regex": "regex (expected is a pattern)",
    "judge": "LLM judge",
    "dataset": "the dataset's own scorer (generated datasets)",
}
COST_UNITS = {"tokens": "tokens per example", "usd": "$ per example"}
UPLOAD = "Upload a CSV, JSONL or Parquet file…"
WORKBENCH = "workbench"
FLASH_KEY = "evaluate_flash"

ws = state.workspace()
session = state.current_session()
jobs = state.eval_jobs()


def _flash(kind: str, text: str) -> None:
    st.session_state.setdefault(FLASH_KEY, []).append((kind, text))


def _cost_text(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "never passes"
    return f"${value:.4g}" if unit == "usd" else f"{value:,.0f} tokens"


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _model_choices() -> dict[str, ModelRef]:
    """Registry models by name, the bundled one first; only the bundled one if it is broken."""
    try:
        return {entry.name: entry.ref for entry in state.registry().entries()}
    except ArborError as exc:
        st.caption(f"Model registry unavailable ({exc}); only the bundled model is offered.")
        return {"bundled": ModelRef()}


st.title("Evaluate")
for kind, text in st.session_state.pop(FLASH_KEY, []):
    getattr(st, kind)(text)

# -- plan ------------------------------------------------------------------------------------
st.subheader("Plan")
shipped_plans = tuning.shipped_eval_plans()
# Shipped datasets, then the analyst's own ("Add to dataset" writes them into the data dir).
datasets = {**shipped_datasets(), **annotations.workspace_datasets(ws.root)}
# Generated on this machine from a seed and difficulty levels (reasoning-gym), listed by name.
generated_names = [f"{GENERATED_PREFIX}{family}" for family in RECOMMENDED]
sources = ([WORKBENCH] if session.plan is not None else []) + list(shipped_plans)
fits = eval_estimate.dataset_defaults()


def _defaults_follow_dataset(*, plan_too: bool = True) -> None:
    """The chosen shipped dataset's declared checker (and, unless the plan was just chosen,
    its plan): what its answers need, not the workbench plan with a text checker."""
    declared = fits.get(st.session_state.get("eval_dataset", ""))
    if declared is None:
        return
    st.session_state.eval_checker = declared.checker
    if plan_too and declared.plan in shipped_plans:
        st.session_state.eval_plan_source = declared.plan


def _dataset_follows_plan() -> None:
    """A shipped plan is written for the shipped dataset of the same name (or the generated
    one that declares it): pick that one, and the checker that dataset declares."""
    chosen = st.session_state.get("eval_plan_source")
    written_for = [name for name, fit in fits.items() if fit.plan == chosen]
    if chosen in datasets or written_for:
        st.session_state.eval_dataset = chosen if chosen in datasets else written_for[0]
        _defaults_follow_dataset(plan_too=False)


# First visit: the first shipped dataset that declares its fit, with its plan and checker.
if "eval_dataset" not in st.session_state:
    first = next((name for name in datasets if name in fits), None)
    if first is not None:
        st.session_state.eval_dataset = first
        _defaults_follow_dataset()


source = st.selectbox(
    "Plan to evaluate",
    sources,
    key="eval_plan_source",
    on_change=_dataset_follows_plan,
    format_func=lambda s: "The workbench plan" if s == WORKBENCH else f"Shipped plan: {s}",
    help="The shipped plans are one-node, few-shot prompts the bundled base model answers well.",
)
if source is None:
    st.info("No plan: build one on the Workbench, or add a plan to assets/examples/eval_plans/.")
    st.stop()
try:
    if source == WORKBENCH:
        plan: Plan = session.plan.model_copy(deep=True)
    else:
        path = shipped_plans[source]
        plan = Plan.from_json(path.read_text(encoding="utf-8"), source=path.name)
    plan.validate_graph()
except ArborError as exc:
    st.error(f"This plan cannot be evaluated: {exc}")
    st.stop()
node_count = len(plan.nodes())
st.caption(
    f"{node_count} node{'s' if node_count != 1 else ''} · default strategy "
    f"{plan.default_strategy.label} · task: {plan.task[:120]}"
)

# -- dataset and checker -----------------------------------------------------------------------
st.subheader("Dataset")
if "eval_dataset" not in st.session_state and source in datasets:
    st.session_state.eval_dataset = source
data_col, limit_col = st.columns([3, 1])
dataset_choice = data_col.selectbox(
    "Dataset",
    [*datasets, *generated_names, UPLOAD],
    key="eval_dataset",
    on_change=_defaults_follow_dataset,
    help="Shipped with Arbor, generated here (gym:*, procedural tasks with difficulty levels), "
    "or your file. A shipped or generated dataset brings the plan and checker that fit it "
    "(assets/datasets/defaults.json); change them after if you like.",
)
limit = int(
    limit_col.number_input(
        "Examples to run (0: all)", min_value=0, value=0, step=1, key="eval_limit"
    )
)
dataset: Dataset | None = None
running_n = 0
if dataset_choice in generated_names:
    seed_col, level_col, per_col = st.columns([1, 2, 1])
    seed = int(seed_col.number_input("Seed", 0, 2**31 - 1, 0, key="eval_gen_seed"))
    levels = level_col.multiselect(
        "Difficulty levels",
        [1, 2, 3, 4, 5],
        default=[1, 2, 3],
        key="eval_gen_levels",
        help="1 is easiest. The same seed and levels give the same examples on any machine; "
        "results are shown per level.",
    )
    per_level = int(per_col.number_input("Per level", 1, 1000, 5, key="eval_gen_per_level"))
    if not levels:
        st.info("Choose at least one difficulty level.")
    else:
        try:
            dataset = tuning.dataset_named(
                dataset_choice, seed=seed, levels=levels, per_level=per_level
            )
        except DatasetError as exc:
            st.error(f"This dataset cannot be generated: {exc}")
        if limit and dataset is not None:
            st.caption("'Examples to run' takes the first ones: the lowest level first.")
elif dataset_choice == UPLOAD:
    upload = st.file_uploader(
        "Dataset file",
        type=["csv", "jsonl", "parquet"],
        key="eval_upload",
        help="Columns (any case): input (or question, prompt), expected (or answer, target, "
        "output), optional id and difficulty (1-5). CSV needs a header row; JSONL one object "
        "a line; Parquet as the Hugging Face datasets layout writes it.",
    )
    if upload is None:
        st.info("Choose a .csv, .jsonl or .parquet file with an input and an expected column.")
    else:
        try:
            dataset = tuning.load_upload(ws.root, upload.name, upload.getvalue())
        except DatasetError as exc:
            st.error(f"This dataset cannot be used: {exc}")
else:
    try:
        dataset = load_dataset(datasets[dataset_choice])
    except DatasetError as exc:
        st.error(f"This dataset cannot be used: {exc}")
if dataset is not None:
    running_n = min(limit, len(dataset)) if limit else len(dataset)
    with st.expander(f"{dataset.name}: {len(dataset)} examples, {running_n} will run"):
        st.dataframe(
            pd.DataFrame([example.model_dump() for example in dataset.examples]),
            hide_index=True,
            width="stretch",
        )

checker_col, option_col = st.columns([1, 2])
checker_kind = checker_col.selectbox(
    "Checker",
    ordered(CheckerKind, CHECKER_LABELS),
    key="eval_checker",
    format_func=label_of(CHECKER_LABELS),
    help=CheckerConfig.model_fields["kind"].description,
)
checker_values: dict[str, Any] = {"kind": checker_kind}
if checker_kind == "numeric":
    abs_col, rel_col = option_col.columns(2)
    low, high = field_bounds(CheckerConfig, "abs_tol")
    checker_values["abs_tol"] = abs_col.number_input(
        "Absolute tolerance",
        min_value=low,
        max_value=high,
        value=1e-6,
        format="%g",
        key="eval_abs_tol",
        help=CheckerConfig.model_fields["abs_tol"].description,
    )
    low, high = field_bounds(CheckerConfig, "rel_tol")
    checker_values["rel_tol"] = rel_col.number_input(
        "Relative tolerance",
        min_value=low,
        max_value=high,
        value=0.0,
        step=0.01,
        key="eval_rel_tol",
        help=CheckerConfig.model_fields["rel_tol"].description,
    )
elif checker_kind == "judge":
    with option_col:
        judges = _model_choices()
        judge_name = st.selectbox("Judge model", list(judges), key="eval_judge")
        checker_values["judge_model"] = judges[judge_name]
checker = CheckerConfig.model_validate(checker_values)
if (
    dataset is not None
    and checker_kind != "numeric"
    and all(_is_number(example.expected) for example in dataset.examples)
):
    option_col.caption("Every expected answer here is a number: the numeric checker fits best.")

# -- configurations and the evaluation -------------------------------------------------------
st.subheader("Configurations")
choices = st.multiselect(
    "Compare",
    CONFIGURATION_CHOICES,
    default=["single", "sc5"],
    key="eval_configs",
    help="single: one call per node; scN: self-consistency vote over up to N samples; boN: "
    "best-of-N picked by a judge; refineK: up to K critique-and-revise rounds.",
)
own = tuning.own_strategy_nodes(plan)
st.caption(
    "Each strategy becomes the plan's default strategy under a uniform allocation"
    + (f"; nodes with their own strategy keep it ({', '.join(own)})" if own else "")
    + f". '{tuning.AS_IS}' runs the plan unchanged. Every run is capped by the workbench "
    f"caps: {session.caps.total_tokens} tokens, {session.caps.max_tokens_per_node} per node."
)

eval_job = jobs.get(st.session_state.get("eval_job"))
eval_running = eval_job is not None and not eval_job.done
run_col, estimate_col, cancel_col = st.columns([1, 4, 1], vertical_alignment="center")


def _show_estimate() -> None:
    """Calls, tokens and time the evaluation will take at most, next to its button."""
    if dataset is None or not running_n or not choices:
        return
    try:
        planned = [
            (c.name, c.plan, c.caps) for c in tuning.configurations_for(plan, choices, session.caps)
        ]
        recorded = ws.traces.call_seconds(eval_estimate.model_labels(planned))
        inputs = dataset.examples[:running_n]
        estimate = eval_estimate.estimate_evaluation(
            planned,
            running_n,
            example_chars=sum(len(e.input) for e in inputs) // max(1, len(inputs)),
            seconds_per_call={label: seconds for label, (seconds, _) in recorded.items()},
        )
    except (ArborError, ValueError) as exc:
        estimate_col.caption(f"No estimate: {exc}")
        return
    estimate_col.caption(estimate.sentence())


_show_estimate()
if run_col.button(
    "Run evaluation",
    key="run_eval",
    type="primary",
    disabled=eval_running or dataset is None,
):
    try:
        configurations = tuning.configurations_for(plan, choices, session.caps)
        started = jobs.start_evaluation(
            ws, dataset, configurations, checker, limit=limit or None, session_id=session.id
        )
    except (ArborError, ValueError) as exc:
        st.error(f"Not started: {exc}")
    else:
        st.session_state.eval_job = started.job_id
        st.rerun()
if eval_running and cancel_col.button("Cancel evaluation", key="cancel_eval"):
    eval_job.cancel.set()


@st.fragment(run_every=1.0)
def evaluation_progress(job_id: str) -> None:
    current = jobs.get(job_id)
    if current is None:
        return
    snapshot = current.snapshot()
    outcomes = snapshot["outcomes"]
    done, total = len(outcomes), max(1, snapshot["total"])
    correct = sum(outcome.correct for outcome in outcomes)
    replayed = sum(outcome.replayed for outcome in outcomes)
    st.progress(
        min(1.0, done / total),
        text=f"{done} / {snapshot['total']} attempts ({correct} correct, {replayed} replayed)"
        + (" · cancelling…" if snapshot["cancelled"] else ""),
    )
    if current.done:
        st.rerun()  # leave polling and draw the results


def metrics_frame(report: EvaluationReport, unit: str) -> pd.DataFrame:
    on_frontier = set(report.frontier(unit))
    return pd.DataFrame(
        [
            {
                "configuration": r.name,
                "examples": r.n,
                "correct": r.correct,
                "accuracy": r.accuracy,
                "mean tokens": r.mean_tokens,
                "mean $": r.mean_cost_usd,
                "latency (s)": r.mean_latency_s,
                "cost-of-pass (tokens)": _cost_text(r.cost_of_pass_tokens, "tokens"),
                "cost-of-pass ($)": _cost_text(r.cost_of_pass_usd, "usd"),
                "replayed": r.replayed,
                "on frontier": r.name in on_frontier,
            }
            for r in report.results
        ]
    )


def show_levels(report: EvaluationReport, unit: str) -> None:
    """Accuracy and cost per difficulty level, per configuration, and each level's frontier."""
    levels = report.difficulty_levels()
    if not levels:
        return
    st.markdown("#### By difficulty level")
    frame = pd.DataFrame(report.level_rows())
    frame["cost_of_pass_tokens"] = [_cost_text(v, "tokens") for v in frame["cost_of_pass_tokens"]]
    st.dataframe(
        frame[["difficulty", "configuration", "n", "accuracy", "mean_tokens",
               "mean_cost_usd", "cost_of_pass_tokens", "on_frontier"]],
        hide_index=True,
        width="stretch",
        key="eval_levels_table",
        column_config={
            "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
            "mean_tokens": st.column_config.NumberColumn("mean tokens", format="%.1f"),
            "mean_cost_usd": st.column_config.NumberColumn("mean $", format="$%.6f"),
            "cost_of_pass_tokens": st.column_config.TextColumn("cost-of-pass (tokens)"),
            "on_frontier": st.column_config.CheckboxColumn(f"on the frontier ({unit})"),
        },
    )  # fmt: skip
    correlation = level_failure_correlation(report)
    st.caption(
        "Does the level predict failure here? Rank correlation between an example's level and "
        "its failure, per configuration (1: harder always fails more; 0: no relation): "
        + "; ".join(
            f"{name} {'undefined (no spread)' if rho is None else f'{rho:+.2f}'}"
            for name, rho in correlation.items()
        )
        + ". On the recorded benchmark runs the planner's 1-5 rating of a step did not predict "
        "its failures (Spearman +0.01 and +0.02) while the level did, weakly (+0.19, +0.21): "
        "allocate by the failure rate measured per level, as here (README, Real evidence)."
    )
    tabs = st.tabs([f"Level {level}" for level in levels])
    for tab, level in zip(tabs, levels, strict=True):
        at_level = report.at_level(level)
        if any(result.n for result in at_level.results):
            tab.altair_chart(accuracy_cost_chart(at_level, unit), width="stretch")
            tab.caption(f"Frontier at level {level}: {', '.join(at_level.frontier(unit))}.")


def show_evaluation(snapshot: dict[str, Any]) -> None:
    if snapshot["error"]:
        st.error(f"The evaluation failed: {snapshot['error']}")
    report: EvaluationReport | None = snapshot["report"]
    if report is None:
        return
    if report.status != "completed":
        st.warning(
            f"Evaluation {report.status}"
            + (f": {report.error}" if report.error else "")
            + ". The results cover the examples that finished."
        )
    unit = tuning.cost_unit_of(report)
    st.markdown(f"#### Results on {report.dataset}")
    st.caption(
        f"Evaluation `{report.evaluation_id}` ({report.status}), checker {report.checker.kind}; "
        "cost-of-pass is the expected cost of one correct answer (mean cost / accuracy)."
    )
    st.dataframe(
        metrics_frame(report, unit),
        hide_index=True,
        width="stretch",
        column_config={
            "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
            "mean tokens": st.column_config.NumberColumn(format="%.1f"),
            "mean $": st.column_config.NumberColumn(format="$%.6f"),
            "latency (s)": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    if any(result.n for result in report.results):
        st.altair_chart(accuracy_cost_chart(report, unit), width="stretch")
        best = tuning.best_result(report, unit)
        assert best is not None
        best_cost = best.mean_cost_usd if unit == "usd" else best.mean_tokens
        st.success(
            f"Frontier: {', '.join(report.frontier(unit))}. Best: {best.accuracy:.0%} at "
            f"{_cost_text(best_cost, unit)} per example (configuration {best.name})."
        )
    else:
        st.info("No example finished, so there is nothing to compare.")
    show_levels(report, unit)
    with st.expander("Per-example results"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "configuration": o.configuration,
                        "example": o.example_id,
                        "correct": o.correct,
                        "expected": o.expected,
                        "output": o.output or "",
                        "tokens": o.tokens,
                        "replayed": o.replayed,
                        "detail": o.detail or "",
                        "run": o.run_id or "",
                    }
                    for o in report.outcomes()
                ]
            ),
            hide_index=True,
            width="stretch",
            placeholder="",
            row_height=60,
            column_config={
                "output": st.column_config.TextColumn(width="large"),
                "detail": st.column_config.TextColumn(width="large"),
            },
        )


if eval_running:
    evaluation_progress(eval_job.job_id)
elif eval_job is not None:
    show_evaluation(eval_job.snapshot())


# -- allocation search -----------------------------------------------------------------------
def trials_frame(trials: list[TrialResult], space: SearchSpace) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial": number,
                "accuracy": trial.accuracy,
                "cost per example": trial.cost,
                "examples": trial.n_examples,
                "note": trial.note,
                "assignment": " | ".join(
                    f"{node}: {label}" for node, label in space.describe(trial.assignment).items()
                ),
            }
            for number, trial in enumerate(trials, start=1)
        ]
    )


TRIAL_COLUMNS = {"accuracy": st.column_config.NumberColumn("accuracy", format="percent")}


@st.fragment(run_every=1.0)
def search_progress(job_id: str) -> None:
    current = jobs.get(job_id)
    if current is None or current.search is None:
        return
    snapshot = current.snapshot()
    trials = snapshot["trials"]
    st.progress(
        min(1.0, len(trials) / max(1, snapshot["total"])),
        text=f"{len(trials)} trial(s) so far, at most {snapshot['total']}"
        + (" · cancelling…" if snapshot["cancelled"] else ""),
    )
    if trials:
        st.dataframe(
            trials_frame(trials, current.search.space),
            hide_index=True,
            width="stretch",
            column_config=TRIAL_COLUMNS,
        )
    if current.done:
        st.rerun()


def apply_search(job: EvalJob) -> None:
    """Put the best assignment on the workbench plan (undoable there)."""
    request, result = job.search, job.result
    assert request is not None and result is not None and result.best is not None
    assignment = result.best.assignment
    summary = ", ".join(f"{n} → {label}" for n, label in request.space.describe(assignment).items())
    if st.session_state.get("search_source") == WORKBENCH and session.plan is not None:
        base = session.plan
        applied = plan_panel.apply_edit(
            session, "apply search result", lambda: request.space.apply(base, assignment)
        )
    elif session.plan is not None:
        # A shipped plan replaces the workbench's, as an undoable edit.
        new_plan = request.space.apply(request.plan, assignment)
        applied = plan_panel.apply_edit(session, "apply search result", lambda: new_plan)
        if applied:
            session.task = new_plan.task
    else:
        new_plan = request.space.apply(request.plan, assignment)
        session.task = new_plan.task
        plan_panel.set_plan(session, new_plan)
        applied = True
    if applied:
        _flash(
            "success", f"Applied to the workbench plan: {summary}. Open the Workbench to run it."
        )
    else:
        refused = st.session_state.get("flash", [])
        message = refused.pop()[1] if refused else "the plan refused the change."
        _flash("error", message)
    st.rerun()


def show_search(job: EvalJob) -> None:
    snapshot = job.snapshot()
    request = job.search
    assert request is not None
    if snapshot["error"]:
        st.error(f"The search failed: {snapshot['error']}")
    if snapshot["trials"]:
        st.dataframe(
            trials_frame(snapshot["trials"], request.space),
            hide_index=True,
            width="stretch",
            column_config=TRIAL_COLUMNS,
        )
    result = snapshot["result"]
    if result is None:
        return
    per = "$" if request.cost_unit == "usd" else "tokens"
    if result.best is None:
        st.warning(
            f"No assignment stayed within {request.budget:g} {per} per example after "
            f"{result.trials_used} trial(s) (stopped: {result.stop_reason}). "
            "Raise the budget or offer cheaper options."
        )
        return
    best = result.best
    st.success(
        f"Best: {best.accuracy:.0%} at {_cost_text(best.cost, request.cost_unit)} per example "
        f"after {result.trials_used} trials of {request.space.size} possible "
        f"({result.method}; stopped: {result.stop_reason})."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {"node": node, "choice": label}
                for node, label in request.space.describe(best.assignment).items()
            ]
        ),
        hide_index=True,
    )
    if st.button(
        "Apply to the workbench plan",
        key="apply_search",
        type="primary",
        help="Sets each searched node's model, strategy and output limit; Undo on the "
        "Workbench reverts it.",
    ):
        apply_search(job)


with st.expander("Allocation search", expanded=True):
    st.caption(
        "Finds a model, strategy and output limit for every node that gives the best accuracy "
        "within a budget per example, on the dataset, examples and checker chosen above. "
        "Trials replay recorded calls where they can."
    )
    models = _model_choices()
    model_col, strategy_col, tokens_col = st.columns(3)
    chosen_models = model_col.multiselect(
        "Models", list(models), default=list(models)[:1], key="search_models"
    )
    chosen_strategies = strategy_col.multiselect(
        "Strategies", SEARCH_STRATEGIES, default=["single", "sc3"], key="search_strategies"
    )
    chosen_tokens = tokens_col.multiselect(
        "Output tokens per call", SEARCH_MAX_TOKENS, default=[8, 16], key="search_max_tokens"
    )
    method = st.radio(
        "Method",
        ordered(SearchMethod, SEARCH_METHODS),
        format_func=label_of(SEARCH_METHODS),
        horizontal=True,
        key="search_method",
    )
    proposer: ModelRef | None = None
    if method == "llm":
        proposer_name = st.selectbox(
            "Proposer model",
            list(models),
            key="search_proposer",
            help="The model that reads the trials so far and proposes the next assignment.",
        )
        proposer = models[proposer_name]
    unit_col, budget_col, trials_col = st.columns(3)
    cost_unit = unit_col.radio(
        "Budget unit",
        ordered(CostUnit, COST_UNITS),
        format_func=label_of(COST_UNITS),
        horizontal=True,
        key="search_cost_unit",
    )
    if cost_unit == "usd":
        budget = float(
            budget_col.number_input(
                "Budget ($ per example)",
                min_value=0.0,
                value=0.01,
                step=0.001,
                format="%.4f",
                key="search_budget_usd",
            )
        )
    else:
        budget = float(
            budget_col.number_input(
                "Budget (tokens per example)",
                min_value=0,
                value=400,
                step=50,
                key="search_budget_tokens",
            )
        )
    max_trials = trials_col.slider("Max trials", 1, 40, 8, key="search_max_trials")

    space: SearchSpace | None = None
    if chosen_models and chosen_strategies and chosen_tokens:
        try:
            space = tuning.search_space(
                plan,
                [(name, models[name]) for name in chosen_models],
                chosen_strategies,
                sorted(chosen_tokens),
            )
        except (ArborError, ValueError) as exc:
            st.error(f"No search space: {exc}")
        else:
            per_node = len(next(iter(space.options.values())))
            st.caption(
                f"{len(space.nodes)} node(s) × {per_node} options each: {space.size:,} "
                f"possible assignments; at most {max_trials} trial(s) on {running_n} example(s)."
            )
    else:
        st.warning("Choose at least one model, one strategy and one output limit.")

    search_job = jobs.get(st.session_state.get("search_job"))
    search_running = search_job is not None and not search_job.done
    go_col, stop_col = st.columns(2)
    if go_col.button(
        "Run search",
        key="run_search",
        type="primary",
        disabled=search_running or dataset is None or space is None,
    ):
        request = tuning.SearchRequest(
            plan=plan,
            space=space,
            dataset=tuning.first_examples(dataset, limit),
            checker=checker,
            caps=session.caps,
            method=method,
            budget=budget,
            cost_unit=cost_unit,
            max_trials=int(max_trials),
            proposer=proposer,
        )
        try:
            started = jobs.start_search(ws, request, session_id=session.id)
        except ArborError as exc:
            st.error(f"Not started: {exc}")
        else:
            st.session_state.search_job = started.job_id
            st.session_state.search_source = source
            st.rerun()
    if search_running and stop_col.button("Cancel search", key="cancel_search"):
        search_job.cancel.set()
    if search_running:
        search_progress(search_job.job_id)
    elif search_job is not None:
        show_search(search_job)

# -- past evaluations ------------------------------------------------------------------------
st.subheader("Past evaluations")
try:
    past = list_evaluations(ws.traces)
except ArborError as exc:
    st.error(f"The trace store cannot be read: {exc}")
    past = []
if past:
    st.dataframe(
        readable_frame(
            past[:30],
            {
                "created_at": "Started",
                "kind": "Kind",
                "dataset": "Dataset",
                "status": "Status",
                "results": "Results",
                "correct": "Correct",
                "evaluation_id": "Evaluation id",
            },
        ),
        hide_index=True,
        width="stretch",
        placeholder="",
    )
else:
    st.caption("None yet: run an evaluation above.")
