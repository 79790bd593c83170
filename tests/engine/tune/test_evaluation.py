"""Evaluations: datasets, checkers, the Pareto frontier, runs through the real executor, reports
saved in a real DuckDB file, and one evaluation on the real bundled model.

The logic tests run the real executor with an in-process model that answers by looking up the
question in its prompt, so accuracy, tokens and cost-of-pass can be checked against numbers
computed by hand from its usage and prices.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.checks import CheckError
from engine.errors import CallCancelled, ModelCallFailed
from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.plan import Node, Plan, single_node_plan
from engine.plan.model_settings import GenerationConfig, ModelRef
from engine.run.budget import RunCaps
from engine.tune.evaluation import (
    CheckerConfig,
    DatasetError,
    EvaluationError,
    EvaluationReport,
    ExampleOutcome,
    PlanConfiguration,
    PlanJob,
    ThreadRunner,
    accuracy_cost_chart,
    check_answer,
    evaluate,
    load_dataset,
    pareto_frontier,
    plan_for_input,
    shipped_datasets,
)
from storage.evaluations import list_evaluations, load_results, load_summary, save_report
from storage.traces import TraceStore

FAKE_URL = "http://fake.invalid/v1"
CAPS = RunCaps(total_tokens=5000, max_tokens_per_node=64, max_parallel=1)

# -- a model that answers by looking the question up ----------------------------------------
BLOCK = "<block until cancelled>"


@dataclass
class Model:
    """What one fake model replies to each question, and what each call uses and costs."""

    replies: dict[str, str | BaseException]
    usage: Usage
    price_in_per_m: float = 0.0
    price_out_per_m: float = 0.0
    prompts: list[str] = field(default_factory=list)
    #: Set when a call reaches a ``BLOCK`` reply.
    blocked: threading.Event = field(default_factory=threading.Event)


class QuestionBackend(Backend):
    """Finds which known question is in the prompt and gives that question's reply."""

    def __init__(self, name: str, model: Model):
        self.label = f"fake:{name}"
        self.model = model
        self.price_in_per_m = model.price_in_per_m
        self.price_out_per_m = model.price_out_per_m

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        prompt = "\n".join(message["content"] for message in messages)
        self.model.prompts.append(prompt)
        asked = [question for question in self.model.replies if question in prompt]
        assert len(asked) == 1, f"expected one known question in the prompt, found {asked}"
        reply = self.model.replies[asked[0]]
        if isinstance(reply, BaseException):
            raise reply
        if reply == BLOCK:
            self.model.blocked.set()
            assert cancel is not None and cancel.wait(10), "the call was never cancelled"
            raise CallCancelled("fake call cancelled")
        return Completion(reply, self.model.usage, 0.01, self.label, "stop")


def factory_for(models: dict[str, Model]):
    def factory(ref: ModelRef) -> Backend:
        assert ref.kind == "remote" and ref.base_url == FAKE_URL, f"not a fake model: {ref}"
        return QuestionBackend(ref.model or "?", models[ref.model or "?"])

    return factory


def fake_ref(name: str) -> ModelRef:
    return ModelRef(kind="remote", base_url=FAKE_URL, model=name)


def configuration(name: str, model: str | None = None) -> PlanConfiguration:
    plan = single_node_plan("Answer the question.", model=fake_ref(model or name))
    return PlanConfiguration(name=name, plan=plan, caps=CAPS)


QUESTIONS = {
    "q1": ("What is 2 + 2?", "4"),
    "q2": ("What is 3 + 5?", "8"),
    "q3": ("What is 6 × 7?", "42"),
    "q 4/x": ("What is 10 - 9?", "1"),
}


def write_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "small.jsonl"
    lines = [json.dumps({"id": i, "input": q, "expected": a}) for i, (q, a) in QUESTIONS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def right(wrong: dict[str, str | BaseException] | None = None) -> dict[str, str | BaseException]:
    """Correct replies to every question, except that examples in ``wrong`` (by id) get the
    reply given there."""
    replies: dict[str, str | BaseException] = {}
    for example_id, (question, answer) in QUESTIONS.items():
        replies[question] = (wrong or {}).get(example_id, f"The answer is {answer}.")
    return replies


def four_models() -> dict[str, Model]:
    return {
        # never right, and free: accuracy 0, cost 0, cost-of-pass infinite
        "never": Model({q: "I do not know." for q, _ in QUESTIONS.values()}, Usage(10, 1)),
        # right on 3 of 4: 50 in, 5 out at $1 / $2 per million
        "cheap": Model(right({"q3": "The answer is 41."}), Usage(50, 5), 1.0, 2.0),
        # right on all: 200 in, 20 out at $3 / $6 per million
        "strong": Model(right(), Usage(200, 20), 3.0, 6.0),
        # right on 3 of 4 like cheap, but dearer than strong: dominated
        "wasteful": Model(right({"q3": "The answer is 41."}), Usage(300, 30), 3.0, 6.0),
    }


def run_four(tmp_path: Path, **kwargs: Any) -> tuple[EvaluationReport, dict[str, Model]]:
    models = four_models()
    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration(name) for name in models],
        CheckerConfig(kind="numeric"),
        runner=ThreadRunner(factory_for(models)),
        evaluation_id="ev1",
        **kwargs,
    )
    return report, models


# -- datasets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size"), [("arithmetic", 12), ("capitals", 12), ("units", 8)])
def test_shipped_datasets_load_with_known_answers(name: str, size: int) -> None:
    path = shipped_datasets()[name]
    dataset = load_dataset(path)
    assert dataset.name == name and len(dataset) == size and dataset.source == str(path)
    assert len({example.id for example in dataset.examples}) == size
    for example in dataset.examples:
        assert example.input.strip() and example.expected.strip()
        if name != "capitals":  # numeric datasets: the expected answer is a plain number
            numeric = CheckerConfig(kind="numeric")
            assert check_answer(example.expected, example.expected, numeric).correct, example
    assert (path.parent / "README.md").is_file()


def test_shipped_arithmetic_answers_are_right() -> None:
    for example in load_dataset(shipped_datasets()["arithmetic"]).examples:
        expression = example.input.removeprefix("What is ").split("?")[0]
        value = eval(expression.replace("×", "*").replace("÷", "/"))  # our own file
        assert float(example.expected) == value, example


def test_csv_and_jsonl_aliases_and_default_ids(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        'Question,Target,notes\n"Capital of France, please?",Paris,x\n\nWhat is 1+1?,2,\n'
    )
    dataset = load_dataset(csv_path)
    assert [(e.id, e.input, e.expected) for e in dataset.examples] == [
        ("1", "Capital of France, please?", "Paris"),
        ("2", "What is 1+1?", "2"),
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"prompt": "Two?", "answer": 2}\n\n{"input": "Yes?", "output": true}\n')
    examples = load_dataset(jsonl).examples
    assert [(e.id, e.input, e.expected) for e in examples] == [
        ("1", "Two?", "2"),
        ("2", "Yes?", "true"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("a.jsonl", '{"input": "a", "expected": "b"}\n{"input": "c",\n', ":2: malformed JSON"),
        ("a.jsonl", '{"input": "a", "expected": "b"}\n\n[1, 2]\n', ":3: expected a JSON object"),
        ("a.jsonl", '{"question": "a"}\n', ":1: no 'expected' column"),
        ("a.jsonl", '{"input": "  ", "expected": "b"}\n', ":1: the 'input' is empty"),
        ("a.jsonl", '{"input": "a", "expected": ""}\n', ":1: the 'expected' is empty"),
        (
            "a.jsonl",
            '{"id": "x", "input": "a", "expected": "b"}\n'
            '{"id": "x", "input": "c", "expected": "d"}',
            ":2: id 'x' is used again (first on line 1)",
        ),
        ("a.jsonl", '{"input": "a", "question": "b", "expected": "c"}', "both give the input"),
        ("a.jsonl", "\n\n", "has no examples"),
        ("a.csv", "", "has no examples"),
        ("a.csv", "input,expected\n", "has no examples"),
        ("a.csv", "question,notes\nWhat?,x\n", ":2: no 'expected' column"),
        ("a.csv", "input,expected\na,b\nc,d,e\n", ":3: 3 fields, but the header has 2"),
        ("a.csv", 'input,expected\n"multi\nline",b\n,d\n', ":4: the 'input' is empty"),
        ("a.csv", "id,input,expected\n1,a,b\n1,c,d\n", ":3: id '1' is used again"),
        ("a.csv", "input,input,expected\na,b,c\n", ":1: the header repeats a column"),
        ("a.txt", "input,expected\n", "must be a .csv, .jsonl or .parquet file"),
    ],
)
def test_malformed_datasets_are_refused_naming_file_and_line(
    tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_dataset(path)
    message = str(error.value)
    assert str(path) in message and fragment in message


def test_missing_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")
    path = tmp_path / "latin.csv"
    path.write_bytes("input,expected\ncafé,x\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(path)


# -- checkers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "output", "expected", "correct"),
    [
        ("exact", "Paris", "Paris", True),
        ("exact", "  Paris\n", "Paris", True),
        ("exact", "paris", "Paris", False),
        ("exact", "Paris.", "Paris", False),
        ("normalised", "**Paris**.", "Paris", True),
        ("normalised", "The answer is: paris", "Paris", True),
        ("normalised", "Paris\nIt is the capital of France.", "Paris", True),
        ("normalised", "The capital of France is Paris.", "Paris", False),
        ("normalised", "not Paris", "Paris", False),
        ("numeric", "7 + 5 = 12.", "12", True),
        ("numeric", "It is 1,200.", "1200", True),
        ("numeric", "12.01", "12", False),
        ("numeric", "0.75", "3/4", True),
        ("numeric", "-3", "3", False),
        ("regex", "The capital is PARIS.", "paris|lyon", True),
        ("regex", "The capital is Rome.", r"\bparis\b", False),
        ("regex", "Answer:\n42", r"^42$", True),
    ],
)
def test_checkers_on_known_cases(kind: str, output: str, expected: str, correct: bool) -> None:
    result = check_answer(output, expected, CheckerConfig(kind=kind))  # type: ignore[arg-type]
    assert result.correct is correct, result.detail


def test_numeric_tolerances_and_details() -> None:
    strict = CheckerConfig(kind="numeric")
    loose = CheckerConfig(kind="numeric", rel_tol=0.01)
    assert not check_answer("101", "100", strict).correct
    assert check_answer("100.5", "100", loose).correct
    assert check_answer("100.0000001", "100", strict).correct  # abs_tol 1e-6
    assert check_answer("twelve", "12", strict).detail == "no number in the answer"
    assert check_answer("13", "12", strict).detail == "got 13, expected 12"
    assert "has no number" in check_answer("12", "Paris", strict).detail


@pytest.mark.parametrize("output", [None, "", "   \n"])
@pytest.mark.parametrize("kind", ["exact", "normalised", "numeric", "regex", "judge"])
def test_no_output_is_incorrect_with_no_answer(output: str | None, kind: str) -> None:
    result = check_answer(output, "12", CheckerConfig(kind=kind))  # type: ignore[arg-type]
    assert (result.correct, result.detail) == (False, "no answer")


def test_regex_checker_refuses_a_bad_pattern() -> None:
    with pytest.raises(CheckError, match="regex '\\(a' is invalid"):
        check_answer("a", "(a", CheckerConfig(kind="regex"))


class ScriptedJudge(Backend):
    label = "judge"

    def __init__(self, reply: str | BaseException):
        self.reply = reply
        self.requests: list[tuple[str, dict[str, Any] | None]] = []

    def complete(self, messages, config, *, json_schema=None, on_token=None, cancel=None):
        self.requests.append(("\n".join(m["content"] for m in messages), json_schema))
        if isinstance(self.reply, BaseException):
            raise self.reply
        return Completion(self.reply, Usage(30, 10), 0.01, self.label, "stop")


def test_judge_checker_asks_with_a_schema_and_reads_the_verdict() -> None:
    judge = ScriptedJudge('{"correct": true, "reason": "Both say twelve."}')
    result = check_answer("twelve", "12", CheckerConfig(kind="judge"), judge=judge)
    assert result.correct and result.detail == "judge: Both say twelve."
    prompt, schema = judge.requests[0]
    assert "Reference answer: 12" in prompt and "Answer to grade: twelve" in prompt
    assert schema is not None and schema["properties"]["correct"] == {"type": "boolean"}
    no = ScriptedJudge('```json\n{"correct": false, "reason": "Different."}\n```')
    assert check_answer("13", "12", CheckerConfig(kind="judge"), judge=no).correct is False


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ("Yes, it is right.", "could not be read as a verdict"),
        ('{"correct": "yes", "reason": "x"}', "could not be read as a verdict"),
        ('{"correct": tru', "could not be read as a verdict"),
        (ModelCallFailed("server said 500"), "the judge call failed: server said 500"),
    ],
)
def test_unreadable_or_failed_judge_counts_as_incorrect(
    reply: str | BaseException, fragment: str
) -> None:
    result = check_answer("12", "12", CheckerConfig(kind="judge"), judge=ScriptedJudge(reply))
    assert result.correct is False and fragment in result.detail


@pytest.mark.parametrize(
    ("reply", "correct"),
    [
        ('{ "correct": true, "reason": "The answer is correct. The ref', True),
        ('{"correct": false, "rea', False),
    ],
)
def test_a_verdict_whose_reason_was_cut_off_is_still_read(reply: str, correct: bool) -> None:
    result = check_answer("12", "12", CheckerConfig(kind="judge"), judge=ScriptedJudge(reply))
    assert result.correct is correct and result.detail.endswith("[cut off]")


def test_judge_checker_without_a_judge_is_refused() -> None:
    with pytest.raises(CheckError, match="needs a judge model"):
        check_answer("12", "12", CheckerConfig(kind="judge"))


# -- plans per input ---------------------------------------------------------------------------
def test_plan_for_input_makes_one_node_plans_follow_the_input() -> None:
    plan = single_node_plan("What is 7 + 5? Answer with a number.")
    asked = plan_for_input(plan, "What is 2 + 2?")
    assert asked.task == "What is 2 + 2?"
    assert asked.root.instruction == "{{ task }}" and asked.root.title == "What is 2 + 2?"
    assert plan.task.startswith("What is 7 + 5") and plan.root.instruction == plan.task
    from engine.prompts import node_messages

    prompt = node_messages(asked, asked.root, {})[0]["content"]
    assert "What is 2 + 2?" in prompt and "7 + 5" not in prompt


def test_plan_for_input_leaves_other_instructions_alone() -> None:
    plan = Plan(
        task="Summarise the text.",
        root=Node(
            id="root",
            title="Combine",
            instruction="Combine the parts.",
            children=[
                Node(id="a", title="Read", instruction=" Summarise the text. "),
                Node(id="b", title="Check", instruction="Check the summary of {{ task }}."),
            ],
        ),
    )
    asked = plan_for_input(plan, "A new text.")
    nodes = asked.nodes()
    assert nodes["a"].instruction == "{{ task }}"
    assert nodes["b"].instruction == "Check the summary of {{ task }}."
    assert nodes["root"].instruction == "Combine the parts." and nodes["root"].title == "Combine"


# -- the Pareto frontier -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("points", "frontier"),
    [
        ([], []),
        ([(1.0, 0.5)], [0]),
        ([(1.0, 0.5), (2.0, 0.9), (3.0, 0.8)], [0, 1]),  # 2 is dearer and worse than 1
        ([(3.0, 1.0), (1.0, 0.2), (2.0, 0.6)], [1, 2, 0]),  # sorted by cost
        ([(1.0, 0.5), (1.0, 0.7)], [1]),  # same cost: the better one dominates
        ([(1.0, 0.5), (2.0, 0.5)], [0]),  # same accuracy: the cheaper one dominates
        ([(1.0, 0.5), (1.0, 0.5)], [0, 1]),  # identical: neither dominates
        ([(0.0, 0.0), (0.0, 0.0), (1.0, 0.0)], [0, 1]),
        ([(2.0, 0.8), (1.0, 0.8), (1.0, 0.9)], [2]),
    ],
)
def test_pareto_frontier(points: list[tuple[float, float]], frontier: list[int]) -> None:
    assert pareto_frontier(points) == frontier


# -- evaluate over the real executor -----------------------------------------------------------
def test_evaluate_gives_hand_computed_accuracy_tokens_and_cost_of_pass(tmp_path: Path) -> None:
    seen: list[ExampleOutcome] = []
    report, models = run_four(tmp_path, on_outcome=seen.append)
    assert report.status == "completed" and report.error is None
    by_name = {result.name: result for result in report.results}
    assert list(by_name) == ["never", "cheap", "strong", "wasteful"]

    never = by_name["never"]
    assert (never.n, never.correct, never.accuracy) == (4, 0, 0.0)
    assert never.mean_tokens == 11 and never.mean_cost_usd == 0.0
    assert math.isinf(never.cost_of_pass_usd) and math.isinf(never.cost_of_pass_tokens)

    cheap = by_name["cheap"]  # 3 of 4 right; (50 * $1 + 5 * $2) / 1e6 = $0.00006 per attempt
    assert (cheap.n, cheap.correct, cheap.accuracy) == (4, 3, 0.75)
    assert cheap.mean_tokens == 55
    assert cheap.mean_cost_usd == pytest.approx(6e-5)
    assert cheap.cost_of_pass_usd == pytest.approx(8e-5)
    assert cheap.cost_of_pass_tokens == pytest.approx(55 / 0.75)

    strong = by_name["strong"]  # all right; (200 * $3 + 20 * $6) / 1e6 = $0.00072
    assert (strong.correct, strong.accuracy) == (4, 1.0)
    assert strong.mean_cost_usd == pytest.approx(7.2e-4)
    assert strong.cost_of_pass_usd == pytest.approx(7.2e-4)
    assert strong.cost_of_pass_tokens == pytest.approx(220)

    wasteful = by_name["wasteful"]  # (300 * $3 + 30 * $6) / 1e6 = $0.00108, 3 of 4
    assert wasteful.cost_of_pass_usd == pytest.approx(1.08e-3 / 0.75)
    assert report.frontier("usd") == ["never", "cheap", "strong"]
    assert report.frontier("tokens") == ["never", "cheap", "strong"]
    rows = {row["configuration"]: row for row in report.rows()}
    assert rows["wasteful"]["on_frontier"] is False and rows["cheap"]["on_frontier"] is True

    wrong = [o for o in cheap.outcomes if not o.correct]
    assert [(o.example_id, o.output, o.detail) for o in wrong] == [
        ("q3", "The answer is 41.", "got 41, expected 42")
    ]
    assert [o.example_id for o in cheap.outcomes] == ["q1", "q2", "q3", "q 4/x"]
    assert [o.run_id for o in cheap.outcomes] == ["ev1-1-q1", "ev1-1-q2", "ev1-1-q3", "ev1-1-q_4_x"]
    assert all(o.latency_s > 0 and not o.replayed and o.error is None for o in cheap.outcomes)
    # every example was asked of every model, each through its own input
    assert len(seen) == 16 and all(len(model.prompts) == 4 for model in models.values())
    # outcomes arrive example by example: every configuration on q1 first
    assert [o.example_id for o in seen[:4]] == ["q1"] * 4


def test_replayed_answers_count_at_their_recorded_cost(tmp_path: Path) -> None:
    from engine.run.executor import NodeResult, RunResult
    from engine.run.scheduler import NodeStatus

    def replaying(jobs, *, cancel=None):
        for job in jobs:
            node = NodeResult(
                "root",
                NodeStatus.DONE,
                "The answer is 4.",
                reused_from="an-earlier-run",
                replayed_tokens=120,
                replayed_cost_usd=0.003,
            )
            result = RunResult(job.run_id, "completed", node.output, None, nodes={"root": node})
            result.wall_s = 0.5
            yield job, result, None

    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration("cached")],
        CheckerConfig(kind="numeric"),
        runner=replaying,
        limit=2,
    )
    result = report.results[0]
    assert result.replayed == 2 and all(o.replayed for o in result.outcomes)
    assert result.mean_tokens == 120 and result.mean_cost_usd == pytest.approx(0.003)
    assert result.accuracy == 0.5  # "4" is right for q1 only
    assert result.cost_of_pass_usd == pytest.approx(0.006)
    assert result.mean_latency_s == 0.5


def test_evaluate_limit_and_example_ids_select_examples(tmp_path: Path) -> None:
    report, _ = run_four(tmp_path, limit=2)
    assert [o.example_id for o in report.results[0].outcomes] == ["q1", "q2"]
    report, _ = run_four(tmp_path, example_ids=["q3"])
    assert all([o.example_id for o in r.outcomes] == ["q3"] for r in report.results)
    with pytest.raises(EvaluationError, match="no example with id nope"):
        run_four(tmp_path, example_ids=["nope"])


def test_evaluate_refuses_bad_configurations(tmp_path: Path) -> None:
    dataset = load_dataset(write_dataset(tmp_path))
    runner = ThreadRunner(factory_for(four_models()))
    with pytest.raises(EvaluationError, match="at least one configuration"):
        evaluate(dataset, [], CheckerConfig(), runner=runner)
    with pytest.raises(EvaluationError, match="repeated: cheap"):
        evaluate(dataset, [configuration("cheap")] * 2, CheckerConfig(), runner=runner)
    with pytest.raises(CheckError, match="Example 'q1'"):
        bad = load_dataset(write_bad_regex(tmp_path))
        evaluate(bad, [configuration("cheap")], CheckerConfig(kind="regex"), runner=runner)


def write_bad_regex(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "q1", "input": "What is 2 + 2?", "expected": "(4"}\n')
    return path


def test_failed_runs_count_as_incorrect_with_their_error(tmp_path: Path) -> None:
    models = {
        "flaky": Model(
            right({"q2": ModelCallFailed("endpoint said 503"), "q3": ""}), Usage(50, 5), 1.0, 2.0
        )
    }
    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration("flaky")],
        CheckerConfig(kind="numeric"),
        runner=ThreadRunner(factory_for(models)),
    )
    result = report.results[0]
    assert (result.n, result.correct, result.accuracy) == (4, 2, 0.5)
    outcomes = {o.example_id: o for o in result.outcomes}
    assert outcomes["q2"].correct is False and outcomes["q2"].output is None
    assert "run failed" in (outcomes["q2"].error or "") and "503" in outcomes["q2"].detail
    assert "empty answer" in (outcomes["q3"].error or "")
    assert outcomes["q1"].error is None and outcomes["q1"].correct
    # the call that raised used no tokens; the empty answer's call did
    assert result.mean_tokens == pytest.approx(3 * 55 / 4)


def test_a_runner_that_raises_fails_the_evaluation_keeping_what_finished(tmp_path: Path) -> None:
    inner = ThreadRunner(factory_for(four_models()))

    def breaking(jobs, *, cancel=None):
        for index, item in enumerate(inner(jobs, cancel=cancel)):
            if index == 2:
                raise RuntimeError("cluster lost")
            yield item

    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration("cheap"), configuration("strong")],
        CheckerConfig(kind="numeric"),
        runner=breaking,
    )
    assert report.status == "failed" and "cluster lost" in (report.error or "")
    assert [r.n for r in report.results] == [1, 1]


def test_a_failing_on_outcome_stops_the_evaluation_and_its_runner(tmp_path: Path) -> None:
    models = {"m": Model(right(), Usage(50, 5))}

    def on_outcome(outcome: ExampleOutcome) -> None:
        raise RuntimeError("the page went away")

    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration("m")],
        CheckerConfig(kind="numeric"),
        runner=ThreadRunner(factory_for(models)),
        on_outcome=on_outcome,
    )
    assert report.status == "failed"
    assert report.error == "the evaluation stopped: RuntimeError: the page went away"
    assert report.results[0].n == 1 and len(models["m"].prompts) == 1  # nothing more ran


def test_cancel_midway_keeps_what_finished_and_drops_the_cut_run(tmp_path: Path) -> None:
    models = {"m": Model(right({"q2": BLOCK}), Usage(50, 5), 1.0, 2.0)}
    cancel = threading.Event()

    def on_outcome(outcome: ExampleOutcome) -> None:
        # after the first answer, once q2 (running beside it) is inside its model call
        assert models["m"].blocked.wait(10), "q2 never reached its model call"
        cancel.set()

    report = evaluate(
        load_dataset(write_dataset(tmp_path)),
        [configuration("m")],
        CheckerConfig(kind="numeric"),
        runner=ThreadRunner(factory_for(models), workers=2),
        cancel=cancel,
        on_outcome=on_outcome,
    )
    assert report.status == "cancelled"
    result = report.results[0]
    assert [o.example_id for o in result.outcomes] == ["q1"] and result.accuracy == 1.0
    assert len(models["m"].prompts) == 2  # q2 was cut; q3 and q 4/x never started


def test_thread_runner_yields_results_and_plan_errors() -> None:
    models = four_models()
    plan = plan_for_input(single_node_plan("x", model=fake_ref("strong")), "What is 2 + 2?")
    broken = plan.model_copy(deep=True)
    broken.root.depends_on = ["missing"]
    jobs = [
        PlanJob("strong", "q1", plan, CAPS, "r1"),
        PlanJob("strong", "bad", broken, CAPS, "r2"),
    ]
    finished = {
        job.run_id: (result, error)
        for job, result, error in ThreadRunner(factory_for(models), workers=2)(jobs)
    }
    assert finished["r1"][0] is not None and finished["r1"][0].answer == "The answer is 4."
    assert finished["r2"][0] is None and "depends on 'missing'" in (finished["r2"][1] or "")
    with pytest.raises(EvaluationError, match="at least one worker"):
        ThreadRunner(workers=0)


def test_closing_a_thread_runner_early_cancels_its_running_plans() -> None:
    models = {"m": Model(right({"q2": BLOCK}), Usage(50, 5))}
    base = single_node_plan("x", model=fake_ref("m"))
    jobs = [
        PlanJob("m", example_id, plan_for_input(base, question), CAPS, f"r-{n}")
        for n, (example_id, (question, _)) in enumerate(QUESTIONS.items())
    ]
    cancel = threading.Event()
    finished = ThreadRunner(factory_for(models), workers=2)(jobs, cancel=cancel)
    job, result, _ = next(finished)
    assert job.example_id == "q1" and result is not None and result.status == "completed"
    assert models["m"].blocked.wait(10)
    finished.close()  # q2 is still in its call
    assert cancel.is_set()
    assert len(models["m"].prompts) == 2  # q3 and q 4/x never started


# -- reports in the trace store and as a chart -------------------------------------------------
def test_report_round_trips_through_a_duckdb_file(tmp_path: Path) -> None:
    report, _ = run_four(tmp_path)
    store = TraceStore(tmp_path / "t.duckdb")
    trials = [{"trial": 1, "score": 0.5}]
    save_report(store, report, session_id="s1", kind="search", extra={"trials": trials})
    save_report(store, report, session_id="s1", kind="search", extra={"trials": trials})  # again

    listed = list_evaluations(store)
    assert len(listed) == 1
    row = listed[0]
    assert (row["evaluation_id"], row["kind"], row["session_id"], row["status"]) == (
        "ev1",
        "search",
        "s1",
        "completed",
    )
    assert (row["results"], row["configurations"], row["correct"]) == (16, 4, 0 + 3 + 4 + 3)

    summary = load_summary(store, "ev1")
    assert summary is not None
    assert summary["frontier"] == {
        "usd": ["never", "cheap", "strong"],
        "tokens": summary["frontier"]["tokens"],
    }
    assert summary["extra"] == {"trials": trials}
    assert summary["checker"]["kind"] == "numeric"
    configs = {c["configuration"]: c for c in summary["configurations"]}
    assert math.isinf(configs["never"]["cost_of_pass_usd"])
    assert configs["cheap"]["cost_of_pass_usd"] == pytest.approx(8e-5)
    assert "cost_of_pass_usd_inf" not in configs["never"]
    assert summary["created_at"] == report.started_at
    assert load_summary(store, "nope") is None

    with store.connect() as con:
        raw = con.execute("SELECT summary_json FROM evaluations").fetchone()[0]
    assert "Infinity" not in raw
    assert json.loads(raw)["configurations"][0]["cost_of_pass_usd_inf"] is True

    results = load_results(store, "ev1")
    expected = [
        (o.configuration, o.example_id, o.run_id, o.correct, o.output, o.tokens)
        for o in report.outcomes()
    ]
    got = [
        (r["configuration"], r["example_id"], r["run_id"], r["correct"], r["output"], r["tokens"])
        for r in results
    ]
    assert got == expected
    assert results[0]["cost_usd"] == report.outcomes()[0].cost_usd


def test_chart_marks_the_frontier_and_holds_no_infinity(tmp_path: Path) -> None:
    report, _ = run_four(tmp_path)
    spec = accuracy_cost_chart(report).to_dict()
    text = json.dumps(spec, allow_nan=False)  # refuses inf and NaN
    assert "Infinity" not in text
    values = spec["data"]["values"]
    flags = {value["configuration"]: value["frontier"] for value in values}
    assert flags == {"never": True, "cheap": True, "strong": True, "wasteful": False}
    never = next(value for value in values if value["configuration"] == "never")
    assert never["cost_of_pass"] is None
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["circle", "line", "point", "text"]
    for layer in spec["layer"][1:3]:  # the frontier's line and marked points
        assert layer["transform"] == [{"filter": "datum.frontier"}]
    tooltip = [t["field"] for t in spec["layer"][0]["encoding"]["tooltip"]]
    assert tooltip == ["configuration", "accuracy", "cost", "cost_of_pass"]


# -- the real bundled model --------------------------------------------------------------------
@pytest.mark.model
def test_evaluation_on_the_real_model_is_consistent() -> None:
    from engine.models import backend_for

    dataset = load_dataset(shipped_datasets()["arithmetic"])
    plan = single_node_plan(dataset.examples[0].input)
    plan.default_generation = GenerationConfig(temperature=0.0, max_tokens=24, seed=7)
    caps = RunCaps(total_tokens=2000, max_tokens_per_node=24, max_parallel=1)
    checker = CheckerConfig(kind="numeric")
    report = evaluate(
        dataset,
        [PlanConfiguration("gemma-270m single call", plan, caps)],
        checker,
        runner=ThreadRunner(backend_factory=backend_for),
        limit=3,
    )
    result = report.results[0]
    print(
        f"\nreal model: n={result.n} correct={result.correct} accuracy={result.accuracy:.2f} "
        f"mean_tokens={result.mean_tokens:.1f} mean_latency_s={result.mean_latency_s:.2f}"
    )
    for outcome in result.outcomes:
        print(f"  {outcome.example_id}: {outcome.output!r} -> {outcome.correct} ({outcome.detail})")
    assert report.status == "completed" and result.n == 3
    assert 0.0 <= result.accuracy <= 1.0 and result.correct == round(result.accuracy * 3)
    assert result.mean_tokens > 0 and result.mean_cost_usd == 0.0  # local models are free
    for outcome, example in zip(result.outcomes, dataset.examples[:3], strict=True):
        assert outcome.example_id == example.id and outcome.tokens > 0
        assert outcome.error is None and outcome.output
        assert outcome.correct == check_answer(outcome.output, example.expected, checker).correct

    judge = backend_for(ModelRef())
    first = result.outcomes[0].output
    verdict = check_answer(first, "12", CheckerConfig(kind="judge"), judge=judge)
    print(f"  judge on {first!r}: {verdict}")
    assert isinstance(verdict.correct, bool) and verdict.detail.startswith("judge:")
