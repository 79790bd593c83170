"""Record a REAL outcome table: every option of every node of a three-node plan, run with the
bundled model over generated examples, through Arbor's own evaluation path.

The plan is ``engine.tune.datasets.plans.few_shot_plan`` (draft -> check -> final, outputs feeding
each other) for one reasoning-gym family; the examples are ``gym:<family>`` at levels 1-3
(``--per-level`` each, default 14: 42 examples). Every node has four options::

    single · short budget    single · long budget    sc3 · long budget    sc5 · long budget

so the table has 4^3 = 64 assignments × 42 examples. Each assignment is one ``evaluate`` over
every example with the workspace's ``LocalPool``: runs are traced in a real DuckDB file, and
the store is the call cache, so a node whose rendered prompt and options were already run (the
draft of every assignment that shares the draft's option, a vote's first samples) costs nothing
again. Sampled calls have a fixed seed, so a replay is the same call. Tokens are what each
attempt would cost if run fresh (replayed calls count at their recorded cost).

Besides the pipeline's outcome, each node's own output is scored (every node answers the same
question), which is what the difficulty-rating correlation (``bench/budget_policies.py``)
compares the planner's ratings with.

Resumable: the table is saved after every assignment, and a restart skips recorded ones (the
call cache makes a half-finished one cheap). A progress bar shows runs done and the time left.

    flock /tmp/arbor-model.lock .venv/bin/python bench/record_outcomes.py --family word_sorting
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models.bundled import bundled_model_path
from engine.plan.compute_config import strategy_from_spec
from engine.plan.model_settings import ModelRef
from engine.run.budget import RunCaps
from engine.tune.checking import FULL_MARKS
from engine.tune.datasets import GeneratedSpec, generate_dataset
from engine.tune.datasets.plans import few_shot_plan
from engine.tune.evaluation import CheckerConfig, PlanConfiguration, evaluate
from engine.tune.outcome_table import Outcome, OutcomeTable
from engine.tune.search import NodeOption, SearchSpace, strategy_short_label
from storage.pools import LocalPool
from storage.workspace import Workspace

DATA = Path(__file__).resolve().parent / "data"
#: The recordings' own workspaces (git-ignored): their trace stores are the call caches.
WORKSPACES = Path(__file__).resolve().parent / ".recording"
SEED = 7
SAMPLING_SEED = 11
LEVELS = (1, 2, 3)
PER_LEVEL = 14
#: (short, long) output budgets per family: the short one truncates some answers.
BUDGETS = {"word_sorting": (12, 40), "chain_sum": (2, 12)}
STRATEGIES = ("single", "single", "sc3", "sc5")
#: few_shot_plan's nodes, in the plan's order (the table's assignment order).
NODE_IDS = ("final", "draft", "check")
CAPS = RunCaps(total_tokens=100_000, max_tokens_per_node=64)


def table_path(family: str) -> Path:
    return DATA / f"real_outcomes_{family}.json.gz"


def node_scores_path(family: str) -> Path:
    return DATA / f"real_node_scores_{family}.json.gz"


def build_space(family: str, node_ids: list[str]) -> SearchSpace:
    short, long = BUDGETS.get(family, (16, 48))
    options = []
    for spec, tokens in zip(STRATEGIES, (short, long, long, long), strict=True):
        strategy = strategy_from_spec(spec)
        options.append(
            NodeOption(
                label=f"{strategy_short_label(strategy)} · {tokens}",
                model=ModelRef(kind="local"),
                strategy=strategy,
                max_tokens=tokens,
            )
        )
    return SearchSpace(options={node: [o.model_copy() for o in options] for node in node_ids})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _arbor_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(family: str, spec: GeneratedSpec, space: SearchSpace) -> dict[str, Any]:
    model = bundled_model_path()
    return {
        "source": "recorded: every assignment run with the bundled model",
        "recorder": "bench/record_outcomes.py",
        "family": family,
        "dataset": spec.source,
        "dataset_licence": "reasoning-gym (Apache-2.0), generated locally",
        "plan": "engine.tune.datasets.plans.few_shot_plan (draft -> check -> final)",
        "model_file": model.name,
        "model_sha256": _sha256(model),
        "arbor_version": _arbor_version(),
        "recorded_on": datetime.now(UTC).strftime("%Y-%m-%d"),
        "seeds": {"dataset": spec.seed, "sampling": SAMPLING_SEED},
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "cost": "tokens per attempt (input + output), replayed calls at their recorded cost",
        "latency_s": "the run's wall time; a run made of replayed calls takes milliseconds",
        "options": space.labels(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="word_sorting")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--per-level", type=int, default=PER_LEVEL)
    parser.add_argument("--out", type=Path, help="default: bench/data/real_outcomes_FAMILY.json.gz")
    parser.add_argument(
        "--workspace",
        type=Path,
        help="where the runs and the call cache live (default: bench/.recording/FAMILY)",
    )
    args = parser.parse_args(argv)
    return record(
        args.family, seed=args.seed, per_level=args.per_level, out=args.out,
        workspace=args.workspace,
    )  # fmt: skip


def record(
    family: str,
    *,
    seed: int = SEED,
    per_level: int = PER_LEVEL,
    out: Path | None = None,
    workspace: Path | None = None,
    only: list[dict[str, int]] | None = None,
) -> int:
    """Record every assignment (or those in ``only``) not yet in the table; 0 when done."""
    from tqdm import tqdm

    scores_file = node_scores_path(family) if out is None else out.with_suffix(".nodes.json")
    out = out or table_path(family)
    spec = GeneratedSpec(family, seed, LEVELS, per_level)
    dataset = generate_dataset(spec)
    plan = few_shot_plan(family)
    plan.default_generation = plan.default_generation.model_copy(update={"seed": SAMPLING_SEED})
    node_ids = [node.id for node, _ in plan.iter_nodes()]
    space = build_space(family, node_ids)
    store = Workspace(workspace or WORKSPACES / family)

    table = OutcomeTable(space, len(dataset), "tokens", provenance(family, spec, space))
    node_scores: dict[str, Any] = {}
    if out.exists():
        table = OutcomeTable.load(out)
        if scores_file.exists():
            node_scores = read_json(scores_file)
    wanted = only if only is not None else list(space.all_assignments())
    todo = [a for a in wanted if a not in table]
    if len(table) and todo:  # a resumed recording says with which code it went on
        table.metadata.setdefault("resumed", []).append(
            {"arbor_version": _arbor_version(), "on": datetime.now(UTC).strftime("%Y-%m-%d"),
             "recorded_before": len(table)}
        )  # fmt: skip
    started = time.monotonic()
    calls_before = _calls(store)
    bar = tqdm(
        total=len(todo) * len(dataset), unit="run", desc=f"{family} ({len(todo)} assignments)"
    )
    checker = CheckerConfig(kind="dataset")
    for assignment in todo:
        configured = space.apply(plan, assignment)
        name = "-".join(str(assignment[n]) for n in node_ids)
        report = evaluate(
            dataset,
            [PlanConfiguration(name=name, plan=configured, caps=CAPS)],
            checker,
            runner=LocalPool(store),
            on_outcome=lambda _outcome: bar.update(1),
        )
        if report.status != "completed":
            print(f"\n{name}: evaluation {report.status}: {report.error}", file=sys.stderr)
            return 1
        outcomes = report.results[0].outcomes
        table.record(
            assignment,
            [Outcome(o.correct, float(o.tokens), o.tokens, o.latency_s) for o in outcomes],
        )
        node_scores[name] = _score_nodes(store, dataset, outcomes)
        table.metadata["recording_s"] = round(
            table.metadata.get("recording_s", 0) + time.monotonic() - started, 1
        )
        table.metadata["recorded_assignments"] = len(table)
        started = time.monotonic()
        table.save(out)
        write_json(scores_file, node_scores)
    bar.close()
    calls = _calls(store) - calls_before
    seconds = table.metadata.get("recording_s")
    print(f"{out}: {len(table)} of {space.size} assignments × {table.n_examples} examples; "
          f"{calls} model calls made this time; recording so far {seconds} s")  # fmt: skip
    return 0


def _score_nodes(workspace: Workspace, dataset: Any, outcomes: list[Any]) -> dict[str, str]:
    """Per node, a 0/1 string over the examples: the node's own output scored as an answer."""
    by_id = {example.id: example for example in dataset.examples}
    flags: dict[str, list[str]] = {}
    for outcome in outcomes:
        example = by_id[outcome.example_id]
        for row in workspace.traces.node_executions(outcome.run_id):
            output = row.get("output") or ""
            right = bool(output.strip()) and dataset.scorer(output, example) >= FULL_MARKS
            flags.setdefault(row["node_id"], []).append("1" if right else "0")
    return {node: "".join(values) for node, values in flags.items()}


def _calls(workspace: Workspace) -> int:
    with workspace.traces.connect() as con:
        row = con.execute("SELECT count(*) FROM model_calls WHERE reused_from IS NULL").fetchone()
    return int(row[0]) if row else 0


def read_json(path: Path) -> Any:
    """A JSON file, gzip-compressed or not (the node-score files)."""
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def write_json(path: Path, payload: Any) -> None:
    data = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


if __name__ == "__main__":
    raise SystemExit(main())
