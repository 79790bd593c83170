"""``run.py allocate / eval / search`` as a user runs them, on the bundled model.

The shipped evaluation plans put the bundled base model in completion mode with few-shot
examples, the only way it answers questions; these tests check what the commands report and
store, not how good the answers are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.plan import Node, Plan, single_node_plan
from engine.plan.compute_config import strategy_from_spec
from storage.evaluations import list_evaluations, load_summary
from storage.workspace import Workspace
from tests.support.cli import run_cli as _cli

ROOT = Path(__file__).resolve().parents[3]
CAPITALS_PLAN = ROOT / "assets" / "examples" / "eval_plans" / "capitals.json"


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """The printed table as {first column: {column: cell}}."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_strategy_specs_parse_and_bad_ones_are_refused():
    assert strategy_from_spec("sc5").samples == 5
    assert strategy_from_spec("bo3").kind == "best_of_n"
    assert strategy_from_spec("refine2").refine_rounds == 2
    assert strategy_from_spec("single").kind == "single"
    with pytest.raises(ValueError, match="unknown strategy 'x7'"):
        strategy_from_spec("x7")


def test_allocate_prints_the_table_and_saves_the_policy(tmp_path):
    plan = single_node_plan("Compare two laptops")
    plan.root.children = [
        Node(id="a", title="Specs", instruction="x", difficulty=1),
        Node(id="b", title="Prices", instruction="y", difficulty=5),
    ]
    source = tmp_path / "plan.json"
    source.write_text(plan.to_json(), encoding="utf-8")
    out = tmp_path / "out.json"
    done = _cli(
        tmp_path / "data", "allocate", str(source), "--policy", "difficulty",
        "--strategy", "sc3", "--total-tokens", "3000", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _table(done.stdout)
    assert set(rows) == {"a", "b", "root"}
    planned = {node: int(row["planned_tokens"]) for node, row in rows.items()}
    assert sum(planned.values()) <= 3000 and planned["b"] > planned["a"]
    saved = Plan.from_json(out.read_text(encoding="utf-8"))
    assert saved.allocation.kind == "difficulty" and saved.default_strategy.samples == 3


@pytest.mark.model
def test_eval_compares_configurations_and_a_second_run_replays(tmp_path):
    data = tmp_path / "data"
    chart = str(tmp_path / "c.json")
    args = ["eval", str(CAPITALS_PLAN), "capitals", "--limit", "3",
            "--strategy", "single", "--strategy", "sc3", "--chart", chart]  # fmt: skip
    first = _cli(data, *args)
    assert first.returncode == 0, first.stderr
    rows = _table(first.stdout)
    assert set(rows) == {"single", "sc3"}
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in rows.values())
    assert float(rows["sc3"]["mean_tokens"]) > float(rows["single"]["mean_tokens"])
    assert "pareto frontier (accuracy vs tokens): " in first.stdout
    assert json.loads((tmp_path / "c.json").read_text())["layer"]  # the Altair chart spec
    evaluation_id = re.search(r"evaluation id: (\S+)", first.stdout).group(1)
    summary = load_summary(Workspace(data).traces, evaluation_id)
    stored = {c["configuration"]: c for c in summary["configurations"]}
    assert stored["single"]["accuracy"] == pytest.approx(float(rows["single"]["accuracy"]))

    second = _cli(data, *args)
    assert second.returncode == 0, second.stderr
    again = _table(second.stdout)
    assert {row["replayed"] for row in again.values()} == {"3"}  # no model was called
    assert again["single"]["accuracy"] == rows["single"]["accuracy"]


@pytest.mark.model
def test_search_finds_an_allocation_within_budget_and_applies_it(tmp_path):
    data = tmp_path / "data"
    out = tmp_path / "best.json"
    done = _cli(
        data, "search", str(CAPITALS_PLAN), "capitals", "--limit", "3", "--budget", "1000",
        "--strategies", "single,sc3", "--max-tokens", "8", "--max-trials", "4",
        "--apply", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"method: coordinate descent; [1-4] trial\(s\) of 2 possible", done.stdout)
    best = re.search(r"best: accuracy (\d+\.\d+)% at (\S+) tokens per example", done.stdout)
    assert best and float(best.group(2)) <= 1000
    applied = Plan.from_json(out.read_text(encoding="utf-8"))
    assert applied.root.strategy is not None and applied.root.generation.max_tokens == 8
    kinds = {e["kind"] for e in list_evaluations(Workspace(data).traces)}
    assert kinds == {"search"}


@pytest.mark.model
def test_search_saves_each_trial_with_the_search_id_and_its_number(tmp_path):
    # The Evaluate page and the CLI save searches through the same service: every trial's report
    # names its search and its place in it, so the trials of one search can be found together.
    data = tmp_path / "data"
    done = _cli(
        data, "search", str(CAPITALS_PLAN), "capitals", "--limit", "2", "--budget", "1000",
        "--strategies", "single,sc3", "--max-tokens", "8", "--max-trials", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    search_id = re.search(r"search id: (search-\S+)", done.stdout).group(1)
    store = Workspace(data).traces
    summaries = [load_summary(store, e["evaluation_id"]) for e in list_evaluations(store)]
    extras = sorted((s["extra"] for s in summaries), key=lambda extra: extra["trial"])
    assert extras and [extra["trial"] for extra in extras] == list(range(1, len(extras) + 1))
    assert {extra["search_id"] for extra in extras} == {search_id}
    assert all(extra["method"] == "coordinate" and extra["assignment"] for extra in extras)


WORD_SORTING_PLAN = ROOT / "assets" / "examples" / "eval_plans" / "gym_word_sorting.json"


def test_datasets_lists_shipped_and_generated_families(tmp_path):
    done = _cli(tmp_path / "data", "datasets")
    assert done.returncode == 0, done.stderr
    assert "shipped: arithmetic, capitals, units" in done.stdout
    assert "fitting the bundled model: word_sorting, chain_sum" in done.stdout
    assert "gcd" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gym:word_sortng"], "No generated dataset family 'word_sortng'. Did you mean"),
        (["gym:word_sorting", "--difficulty", "9"], "Difficulty levels go from 1 to 5"),
        (["gym:word_sorting", "--per-level", "0"], "Examples per level must be from 1"),
        (["gym:word_sorting", "--difficulty", "x"], "is not a level list"),
    ],
)
def test_a_bad_generated_dataset_is_a_one_line_error(tmp_path, args, message):
    done = _cli(tmp_path / "data", "eval", str(WORD_SORTING_PLAN), *args, "--checker", "dataset")
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.model
def test_eval_on_a_generated_dataset_reports_each_level_with_useful_answers(tmp_path):
    data = tmp_path / "data"
    done = _cli(
        data, "eval", str(WORD_SORTING_PLAN), "gym:word_sorting", "--difficulty", "1-2",
        "--per-level", "3", "--seed", "0", "--checker", "dataset",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by_level = done.stdout.split("by difficulty level:")[1]
    levels = [line.split()[0] for line in by_level.strip().splitlines()[1:3]]
    assert levels == ["1", "2"]
    evaluation_id = re.search(r"evaluation id: (\S+)", done.stdout).group(1)
    store = Workspace(data).traces
    summary = load_summary(store, evaluation_id)
    assert [row["difficulty"] for row in summary["by_difficulty"]] == [1, 2]
    from storage.evaluations import load_results

    results = load_results(store, evaluation_id)
    assert len(results) == 6 and sum(r["correct"] for r in results) >= 1
    for row in results:  # answers are word lists, not the prompt echoed back
        assert row["output"] and "Q:" not in row["output"] and "sort" not in row["output"]
        assert "," in row["output"]


@pytest.mark.model
def test_eval_reads_a_users_parquet_file_in_the_hugging_face_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "capitals-hf" / "data"
    folder.mkdir(parents=True)
    questions = {
        "question": [
            "What is the capital of France? Answer with one word.",
            "What is the capital of Japan? Answer with one word.",
            "What is the capital of Italy? Answer with one word.",
        ],
        "answer": ["Paris", "Tokyo", "Rome"],
    }
    pq.write_table(pa.table(questions), folder / "test-00000-of-00001.parquet")
    done = _cli(
        tmp_path / "data", "eval", str(CAPITALS_PLAN), str(folder.parent), "--checker",
        "normalised",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _table(done.stdout)
    assert rows["plan"]["n"] == "3" and float(rows["plan"]["accuracy"]) >= 2 / 3 - 1e-9
