"""``run.py tag-run`` and the names and tags ``run.py runs`` shows, as a user runs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.run.events import RunFinished, RunStarted
from storage.workspace import Workspace
from tests.support.cli import run_cli


def test_a_run_is_named_tagged_listed_and_filtered_from_the_command_line(tmp_path):
    traces = Workspace(tmp_path).traces
    now = datetime.now(UTC)
    with traces.writer() as write:
        for i, run_id in enumerate(("run-old", "run-new")):
            write(RunStarted(run_id, None, "task", "{}", "{}", now + timedelta(seconds=i)))
            write(RunFinished(run_id, "completed", None, "ok", 1, 1, now + timedelta(seconds=i)))

    tagged = run_cli(tmp_path, "tag-run", "run-old", "--name", "Baseline", "--tag", "Prompt v1")
    assert tagged.returncode == 0, tagged.stderr
    assert "name Baseline; tags prompt-v1" in tagged.stdout
    added = run_cli(tmp_path, "tag-run", "run-old", "--tag", "keep", "--add")
    assert "tags keep, prompt-v1" in added.stdout

    listed = run_cli(tmp_path, "runs")
    assert listed.returncode == 0, listed.stderr
    [old] = [line for line in listed.stdout.splitlines() if line.startswith("run-old")]
    assert '"Baseline" #keep #prompt-v1' in old
    [new] = [line for line in listed.stdout.splitlines() if line.startswith("run-new")]
    assert "#" not in new

    only = run_cli(tmp_path, "runs", "--tag", "keep")
    assert "run-old" in only.stdout and "run-new" not in only.stdout
    none = run_cli(tmp_path, "runs", "--tag", "missing")
    assert none.returncode == 0 and "no run has the tag(s) missing" in none.stderr

    cleared = run_cli(tmp_path, "tag-run", "run-old", "--clear-tags")
    assert "tags none" in cleared.stdout

    unknown = run_cli(tmp_path, "tag-run", "run-nope", "--name", "x")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "No run 'run-nope'" in unknown.stderr
    nothing = run_cli(tmp_path, "tag-run", "run-old")
    assert nothing.returncode == 2 and "give --name, --tag or --clear-tags" in nothing.stderr
