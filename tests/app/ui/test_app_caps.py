"""The caps inputs and the reachability warning of the workbench, under Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _plan_with_children(at: AppTest, children: int) -> AppTest:
    at.text_area(key="task_input").input("Plan a three-day trip to Lisbon on a budget.")
    at.button(key="blank_plan").click().run()
    for _ in range(children):
        at.session_state.selected_node = at.session_state.session.plan.root.id
        at.button(key="add_child").click().run()
    assert not at.exception
    assert len(at.session_state.session.plan.root.children) == children
    return at


def test_caps_are_number_inputs_with_units_and_take_a_typed_value(app):
    total = app.number_input(key="cap_total")
    assert total.label == "Total tokens (tokens)"
    assert app.number_input(key="cap_node").label == "Output limit per call (tokens)"
    total.set_value(3000).run()
    assert app.session_state.session.caps.total_tokens == 3000

    app.checkbox(key="cap_money_on").check().run()
    app.checkbox(key="cap_time_on").check().run()
    assert app.number_input(key="cap_money").label == "Money cap (US$)"
    assert app.number_input(key="cap_time").label == "Time cap (seconds)"
    app.number_input(key="cap_time").set_value(90.0).run()
    assert app.session_state.session.caps.wall_time_s == 90.0


@pytest.mark.parametrize(
    ("kind", "key", "expected"),
    [
        ("self_consistency", "node_strategy_root_self_consistency_samples", 5),
        ("best_of_n", "node_strategy_root_best_of_n_samples", 4),
        ("self_refine", "node_strategy_root_rounds", 2),
    ],
)
def test_a_chosen_strategy_starts_from_its_own_defaults(app, kind, key, expected):
    _plan_with_children(app, 0)
    app.checkbox(key="own_strategy_root").check().run()
    assert app.selectbox(key="node_strategy_root_kind").value == "single"
    app.selectbox(key="node_strategy_root_kind").set_value(kind).run()
    assert app.slider(key=key).value == expected
    if kind == "self_consistency":
        assert app.slider(key="node_strategy_root_min").value == 3


def test_caps_that_cannot_reach_the_root_are_flagged_and_the_suggestion_applies(app):
    _plan_with_children(app, 2)
    app.number_input(key="cap_total").set_value(300).run()
    errors = [e.value for e in app.error if "cannot reach the answer" in e.value]
    assert errors, [e.value for e in app.error]
    assert "Raise total tokens to at least" in errors[0]
    apply = app.button(key="apply_suggested_caps")
    apply.click().run()
    assert not app.exception
    raised = app.session_state.session.caps.total_tokens
    assert raised > 300
    assert app.number_input(key="cap_total").value == raised
    assert not [e.value for e in app.error if "cannot reach the answer" in e.value]
    assert any("can reach the answer" in c.value for c in app.caption)
