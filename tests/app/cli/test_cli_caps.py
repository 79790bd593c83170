"""``run.py run`` warns on stderr before a run whose caps cannot reach the answer."""

from __future__ import annotations

import io

import pytest

from app.services.run_preview import warn_if_unreachable
from engine.plan import single_node_plan
from engine.plan.editing import add_child
from engine.run.budget import RunCaps
from tests.support.cli import run_cli

pytestmark = pytest.mark.model


def test_run_warns_before_a_run_whose_caps_cannot_reach_the_root(tmp_path):
    plan = single_node_plan("Plan a three-day trip to Lisbon on a budget.", None)
    plan, _ = add_child(plan, plan.root.id, "Transport")
    plan, _ = add_child(plan, plan.root.id, "Lodging")
    source = tmp_path / "plan.json"
    source.write_text(plan.to_json(), encoding="utf-8")

    done = run_cli(tmp_path / "data", "run", str(source), "--total-tokens", "100")

    assert "warning: These caps cannot reach the answer." in done.stderr
    assert "Raise total tokens to at least" in done.stderr
    assert "token cap reached" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    # Caps the check finds enough give no warning (checked in-process: no need to run them).
    quiet = io.StringIO()
    check = warn_if_unreachable(plan, RunCaps(total_tokens=20_000), out=quiet)
    assert check is not None and check.verdict == "reachable"
    assert quiet.getvalue() == ""
