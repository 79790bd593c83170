"""``python run.py run FILE`` as a user runs it: a subprocess with its own data directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.plan import GenerationConfig, Node, Plan
from engine.run.budget import RunCaps
from engine.run.events import ANSWERED_STATUSES
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.cli import run_cli as _cli

ROOT = Path(__file__).resolve().parents[3]
RUN_ID = re.compile(r"^run id: (run-\S+)$", re.MULTILINE)


def _tiny_plan() -> Plan:
    return Plan(
        task="Name a colour.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Say the colour in one short sentence.",
            children=[Node(id="pick", title="Pick a colour", instruction="Name one colour.")],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=24, seed=5),
    )


def _answer(stdout: str) -> str:
    return stdout.split("answer:\n", 1)[1].strip()


@pytest.mark.model
def test_cli_runs_a_plan_file_prints_answer_and_run_id_and_traces_it(tmp_path, bundled_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(_tiny_plan().to_json(), encoding="utf-8")
    data = tmp_path / "data"
    proc = _cli(
        data, "run", str(plan_file), "--total-tokens", "2000", "--max-tokens-per-node", "24"
    )
    assert proc.returncode == 0, proc.stderr
    assert "status: completed" in proc.stdout or "status: suspect" in proc.stdout
    run_id = RUN_ID.search(proc.stdout).group(1)
    answer = _answer(proc.stdout)
    assert answer and answer != "(no answer)"
    assert "started  pick" in proc.stderr and "done     root" in proc.stderr  # live progress
    run = Workspace(data).traces.run(run_id)
    assert run["status"] in ANSWERED_STATUSES and run["answer"].strip() == answer
    caps = RunCaps.model_validate_json(run["caps_json"])
    assert caps.total_tokens == 2000 and caps.max_tokens_per_node == 24


@pytest.mark.model
def test_cli_runs_a_saved_session_file_and_links_the_run_to_the_session(tmp_path, bundled_path):
    data = tmp_path / "data"
    session = ArborSession(
        name="cli session",
        task="Name a colour.",
        plan=_tiny_plan(),
        caps=RunCaps(total_tokens=2000, max_tokens_per_node=24, max_parallel=1),
    )
    Workspace(data).sessions.save(session)
    session_file = tmp_path / "colour.arbor.json"
    session_file.write_text(session.to_file_text(), encoding="utf-8")
    proc = _cli(data, "run", str(session_file))
    assert proc.returncode == 0, proc.stderr
    run_id = RUN_ID.search(proc.stdout).group(1)
    assert _answer(proc.stdout)
    workspace = Workspace(data)
    assert workspace.sessions.get(session.id).run_ids == [run_id]
    run = workspace.traces.run(run_id)
    assert run["session_id"] == session.id
    assert RunCaps.model_validate_json(run["caps_json"]) == session.caps  # the session's caps


@pytest.mark.model
def test_cli_run_stopped_by_the_token_cap_exits_non_zero_with_the_reason(tmp_path, bundled_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(_tiny_plan().to_json(), encoding="utf-8")
    proc = _cli(tmp_path / "data", "run", str(plan_file), "--total-tokens", "100")
    assert proc.returncode == 1
    assert "status: stopped (token cap reached" in proc.stdout
    assert "(no answer)" in proc.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # run reads YAML plans too, so text is "not a plan" rather than "not valid JSON"
        ("hello, I am not a plan", "is not a plan: expected a mapping"),
        ('{"format": "something-else"}', "is not a plan"),
        ('{"format": "arbor-plan", "version": 7, "task": "t"}', "plan format version 7"),
        ('{"format": "arbor-session", "version": 1, "plan": [1]}', "plan is not an object"),
    ],
    ids=["text", "foreign", "newer", "bad-session"],
)
def test_cli_refuses_a_file_that_is_not_a_plan_with_a_clear_error(tmp_path, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    proc = _cli(tmp_path / "data", "run", str(bad), timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ")
    assert expected in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run id:" not in proc.stdout


def test_cli_refuses_a_missing_file_and_bad_caps(tmp_path):
    missing = _cli(tmp_path / "data", "run", str(tmp_path / "nope.json"), timeout=60)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(_tiny_plan().to_json(), encoding="utf-8")
    caps = _cli(tmp_path / "data", "run", str(plan_file), "--total-tokens", "5", timeout=60)
    assert caps.returncode != 0 and "--total-tokens must be at least" in caps.stderr
    assert "Traceback" not in caps.stderr


def test_export_turns_a_json_plan_into_yaml_and_back(tmp_path):
    plan = _tiny_plan()
    source = tmp_path / "plan.json"
    source.write_text(plan.to_json(), encoding="utf-8")
    as_yaml = _cli(tmp_path, "export", str(source), "-o", str(tmp_path / "plan.yaml"))
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert "root:" in (tmp_path / "plan.yaml").read_text(encoding="utf-8")
    back = _cli(tmp_path, "export", str(tmp_path / "plan.yaml"), "--format", "json")
    assert back.returncode == 0, back.stderr
    assert Plan.from_json(back.stdout) == plan


def test_expand_of_an_unknown_node_is_an_error_that_names_it(tmp_path):
    source = tmp_path / "plan.json"
    source.write_text(_tiny_plan().to_json(), encoding="utf-8")
    done = _cli(tmp_path, "expand", str(source), "nope")
    assert done.returncode == 2
    assert "No node with id 'nope'" in done.stderr


@pytest.mark.model
def test_rate_fills_in_difficulties_on_the_bundled_model(tmp_path):
    source = tmp_path / "plan.json"
    source.write_text(_tiny_plan().to_json(), encoding="utf-8")
    done = _cli(tmp_path, "rate", str(source), "-o", str(tmp_path / "rated.json"))
    assert done.returncode == 0, done.stderr
    assert "note: Rated " in done.stderr
    rated = Plan.from_json((tmp_path / "rated.json").read_text(encoding="utf-8"))
    assert rated.root.title == "Answer"
    rated_count = int(re.search(r"Rated (\d+) of", done.stderr).group(1))
    assert rated_count == sum(node.difficulty is not None for node, _ in rated.iter_nodes())


def _option(parser, *path: str):
    """The action of ``path[-1]`` (an option) under the subcommands ``path[:-1]``."""
    for command in path[:-1]:
        [subparsers] = [a for a in parser._actions if a.dest == "command"]
        parser = subparsers.choices[command]
    return parser._option_string_actions[path[-1]]


def test_cli_choices_are_the_values_of_the_typed_models():
    from typing import get_args

    from app.cli import build_parser
    from engine.plan.compute_config import DecaySchedule, PolicyKind
    from engine.plan.files import PlanFormat
    from engine.tune.dev_search import CostUnit, SearchMethod
    from engine.tune.evaluation import CheckerKind
    from storage.trace_export import ExportFormat

    parser = build_parser()
    expected = {
        ("export", "--format"): PlanFormat,
        ("export-run", "--format"): ExportFormat,
        ("allocate", "--policy"): PolicyKind,
        ("allocate", "--decay"): DecaySchedule,
        ("eval", "--checker"): CheckerKind,
        ("search", "--checker"): CheckerKind,
        ("search", "--cost"): CostUnit,
        ("search", "--method"): SearchMethod,
    }
    for path, kind in expected.items():
        assert tuple(_option(parser, *path).choices) == get_args(kind), path


def test_cli_help_and_runs_load_no_model_library(tmp_path):
    # Handlers import what they need: listing runs touches the trace store, not llama_cpp/openai.
    probe = (
        "import sys, run; code = run.main(sys.argv[1:]); "
        "loaded = [m for m in ('llama_cpp', 'openai', 'streamlit') if m in sys.modules]; "
        "print('loaded:', loaded); sys.exit(code)"
    )
    env = {**os.environ, "ARBOR_DATA_DIR": str(tmp_path / "data")}
    listed = subprocess.run(
        [sys.executable, "-c", probe, "runs"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "loaded: []" in listed.stdout
