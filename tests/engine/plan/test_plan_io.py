"""Plans as JSON and YAML files: lossless both ways, and every bad file named with its line."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CycleError, PlanError, TemplateProblem
from engine.plan import PLAN_FORMAT, GenerationConfig, ModelRef, Node, Plan
from engine.plan.diff import diff_plans
from engine.plan.files import export_plan, import_plan
from engine.plan.templates import check_templates
from tests.support.fake_backend import tree
from tests.support.plan_strategies import valid_plans


def _plan() -> Plan:
    plan = tree(
        {
            "id": "root",
            "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}],
        },
        task="Compare two cities — ünïcödé, 🌳, \"quotes\" and 'yes'",
    )
    b = plan.node("b")
    b.difficulty, b.difficulty_reason = 4, "needs: a careful comparison"
    b.model = ModelRef(kind="remote", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="K")
    b.generation = GenerationConfig(temperature=0.0, max_tokens=33, seed=3)
    return plan


# -- lossless --------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans(), st.sampled_from(["json", "yaml"]))
def test_export_then_import_is_lossless_for_random_plans(plan, fmt):
    text = export_plan(plan, fmt)
    assert import_plan(text, fmt) == plan
    assert import_plan(text) == plan  # detected
    assert export_plan(import_plan(text, fmt), fmt) == text


@pytest.mark.parametrize(
    "tricky",
    ["\x85", "x\x85y", "\u2028", "\ufeff", "a\r\nb", " lead", "trail ", "\t", "null", "~", "yes",
     "0x10", "1e3", "- x", ": x", "#c", "\x00", "\x1b[31m", "a\n\nb\n", "'\"\\", "🌳"],
)  # fmt: skip
def test_yaml_round_trips_strings_that_yaml_reads_specially(tricky):
    plan = Plan(
        task=tricky,
        root=Node(id="r", title=f"x{tricky}", instruction=tricky, difficulty_reason=tricky),
    )
    assert import_plan(export_plan(plan, "yaml"), "yaml") == plan


def test_yaml_export_keeps_model_order_and_readable_unicode():
    text = export_plan(_plan(), "yaml")
    assert list(yaml.safe_load(text)) == ["format", "version", *Plan.model_fields]
    assert text.startswith(f"format: {PLAN_FORMAT}\nversion: 1\n")
    assert "ünïcödé, 🌳" in text and "\\u" not in text


def test_json_export_is_the_plan_file_format():
    assert export_plan(_plan(), "json") == _plan().to_json()
    assert import_plan(export_plan(_plan(), "json"), "json") == _plan()


def test_hand_written_yaml_without_defaults_or_format_marker_is_read():
    text = """
task: Plan a trip
root:
  id: root
  title: Trip
  children:
    - id: go
      title: Book travel
    - id: stay
      title: Book a room
      depends_on: [go]
      difficulty: 2
"""
    plan = import_plan(text, source="trip.yaml")
    assert plan.node("stay").depends_on == ["go"] and plan.node("stay").difficulty == 2
    assert diff_plans(plan, import_plan(export_plan(plan, "yaml"))).empty


def test_unknown_format_is_refused():
    with pytest.raises(PlanError, match=r"Unknown plan format 'toml'"):
        export_plan(_plan(), "toml")  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=r"Unknown plan format 'toml'"):
        import_plan("{}", "toml")  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------------------


def test_malformed_yaml_names_the_source_and_line():
    text = "task: t\nroot:\n  id: root\n  title: [unclosed\n  children: []\n"
    with pytest.raises(PlanError, match=r"^trip\.yaml is not valid YAML \(line 5, column \d+"):
        import_plan(text, source="trip.yaml")


def test_bad_indentation_names_the_line():
    text = "task: t\nroot:\n  id: root\n   title: x\n"
    with pytest.raises(PlanError, match=r"trip\.yaml is not valid YAML \(line 4"):
        import_plan(text, "yaml", source="trip.yaml")


def test_a_value_of_the_wrong_shape_names_the_field_and_its_line():
    text = export_plan(_plan(), "yaml").replace("difficulty: 4", "difficulty: 9")
    line = text.splitlines().index("    difficulty: 9") + 1
    with pytest.raises(PlanError) as info:
        import_plan(text, source="edited.yaml")
    message = str(info.value)
    assert message.startswith("edited.yaml is not a valid plan: at root.children.1.difficulty")
    assert message.endswith(f"see line {line}.")


def test_a_missing_field_points_at_its_parent_mapping():
    text = "task: t\nroot:\n  id: root\n  children:\n    - id: a\n      title: A\n"
    with pytest.raises(PlanError, match=r"at root\.title: Field required.*see line 3\."):
        import_plan(text, source="f.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"s\.yaml is not a plan: expected a mapping at the top level, found NoneType"),
        ("- a\n- b\n", r"s\.yaml is not a plan: expected a mapping.*found list"),
        ("just words", r"s\.yaml is not a plan: expected a mapping.*found str"),
        ("format: arbor-session\n", r"s\.yaml is not a plan: its format is 'arbor-session'"),
        ("a: 1\n---\nb: 2\n", r"s\.yaml is not valid YAML \(line 2.*another document"),
        ("a: &x [1]\nb: *x\n", r"s\.yaml is not valid YAML \(line 2.*aliases are not allowed"),
        ("a: !!python/object:os.system x\n", r"s\.yaml is not valid YAML \(line 1"),
        ("a: \x07\n", r"s\.yaml is not valid YAML \(line 1: character U\+0007 is not allowed"),
    ],
)
def test_yaml_that_is_not_a_plan_is_refused_naming_the_source(text, expected):
    with pytest.raises(PlanError, match=expected):
        import_plan(text, source="s.yaml")


def test_corrupt_json_names_the_source_and_line():
    text = export_plan(_plan(), "json").replace('"task"', '"task" "', 1)
    with pytest.raises(PlanError, match=r"s\.json is not valid JSON \(line 4"):
        import_plan(text, "json", source="s.json")


def test_json_like_text_that_is_not_json_is_read_as_yaml_when_undeclared():
    payload = json.loads(_plan().to_json())
    relaxed = (
        json.dumps(payload, ensure_ascii=False).replace('"format": "arbor-plan", ', "")
        + "\n# a comment\n"
    )
    assert import_plan(relaxed, source="relaxed") == _plan()


def test_a_cyclic_or_dangling_plan_file_is_refused_naming_the_nodes():
    payload = json.loads(_plan().to_json())
    payload["root"]["children"][0]["depends_on"] = ["b"]
    with pytest.raises(CycleError, match=r"a -> b -> a|b -> a -> b"):
        import_plan(yaml.safe_dump(payload), source="loop.yaml")
    payload["root"]["children"][0]["depends_on"] = ["ghost"]
    with pytest.raises(PlanError, match=r"'a'.*depends on 'ghost'"):
        import_plan(yaml.safe_dump(payload), source="dangling.yaml")


HANGING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_plan_file_with_a_hanging_template_is_refused_at_import(fmt):
    plan = tree({"id": "root", "children": [{"id": "s1"}, {"id": "s2", "instruction": HANGING}]})
    with pytest.raises(TemplateProblem) as info:
        import_plan(export_plan(plan, fmt), source="plan.json")
    assert str(info.value).startswith("plan.json: Instruction of node 's2' took longer than")
    assert info.value.node_id == "s2"


def test_a_plan_file_whose_template_builds_a_huge_string_is_refused_at_import():
    text = "{{ 'x'|center(10**8) }}"
    plan = tree({"id": "root", "children": [{"id": "s1", "instruction": text}]})
    with pytest.raises(PlanError, match="node 's1' builds a string over"):
        import_plan(export_plan(plan, "json"), source="plan.json")


def test_a_plan_file_with_working_templates_is_imported():
    text = "Use {{ deps.s1 }} for {{ task }}"
    second = {"id": "s2", "instruction": text, "depends_on": ["s1"]}
    plan = tree({"id": "root", "children": [{"id": "s1"}, second]})
    assert import_plan(export_plan(plan, "json")) == plan


def test_an_ordinary_template_mistake_does_not_stop_an_import():
    # A syntax error is shown in the editor and fails its node at once in a run; only a
    # template that would hang or build a huge string is refused when the file is read.
    plan = tree({"id": "root", "children": [{"id": "s1", "instruction": "Use {% the braces"}]})
    assert import_plan(export_plan(plan, "json")) == plan
    [problem] = check_templates(plan, "plan.json")
    assert "node 's1' has a template syntax error" in problem
