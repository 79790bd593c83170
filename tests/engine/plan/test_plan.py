"""Plan validation, the JSON format and execution order (pure logic, no model)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.errors import CycleError, PlanError
from engine.plan import (
    PLAN_FORMAT,
    PLAN_FORMAT_VERSION,
    GenerationConfig,
    ModelRef,
    Node,
    Plan,
    single_node_plan,
)
from tests.support.fake_backend import tree

# -- validation -----------------------------------------------------------------------------


def test_duplicate_ids_are_refused_and_named():
    plan = tree({"id": "root", "children": [{"id": "a"}, {"id": "b", "children": [{"id": "a"}]}]})
    with pytest.raises(PlanError, match=r"'a' is used more than once"):
        plan.validate_graph()


def test_dangling_dependency_is_refused_and_names_both_ends():
    plan = tree({"id": "root", "children": [{"id": "a", "depends_on": ["ghost"]}]})
    with pytest.raises(PlanError) as info:
        plan.validate_graph()
    message = str(info.value)
    assert "'a'" in message and "'ghost'" in message and "not in the plan" in message
    assert not isinstance(info.value, CycleError)


def test_cycle_between_siblings_is_refused_and_named():
    plan = tree(
        {
            "id": "root",
            "children": [
                {"id": "a", "depends_on": ["c"]},
                {"id": "b", "depends_on": ["a"]},
                {"id": "c", "depends_on": ["b"]},
            ],
        }
    )
    with pytest.raises(CycleError) as info:
        plan.validate_graph()
    assert set(info.value.cycle) == {"a", "b", "c"}
    message = str(info.value)
    assert "cycle" in message
    for node_id in ("a", "b", "c"):
        assert node_id in message
    # The message reads as a closed path: first id repeated at the end.
    path = message.split("cycle: ")[1].split(".")[0].split(" -> ")
    assert path[0] == path[-1] and len(path) == 4


def test_depending_on_own_parent_is_a_cycle():
    plan = tree({"id": "root", "children": [{"id": "kid", "depends_on": ["root"]}]})
    with pytest.raises(CycleError) as info:
        plan.validate_graph()
    assert set(info.value.cycle) == {"kid", "root"}


def test_self_dependency_is_refused_as_a_cycle_naming_the_node():
    plan = tree({"id": "root", "children": [{"id": "loner", "depends_on": ["loner"]}]})
    with pytest.raises(CycleError) as info:
        plan.validate_graph()
    assert info.value.cycle == ["loner"]
    assert "loner -> loner" in str(info.value)


@pytest.mark.parametrize(
    "bad_id", ["", "has space", "a/b", "x" * 65, "trailing\n", "ümlaut", "semi;colon"]
)
def test_bad_node_id_is_refused(bad_id):
    with pytest.raises(ValidationError, match="must be 1-64 characters"):
        Node(id=bad_id, title="t")


def test_bad_node_id_in_a_file_becomes_plan_error_naming_the_field():
    text = json.dumps({"task": "t", "root": {"id": "bad id", "title": "t"}})
    with pytest.raises(PlanError, match=r"root\.id"):
        Plan.from_json(text)


def test_blank_title_is_refused_and_titles_are_trimmed():
    with pytest.raises(ValidationError, match="blank"):
        Node(id="a", title="   ")
    assert Node(id="a", title="  spaced  ").title == "spaced"


def test_valid_plan_validates_and_returns_graph_with_every_node():
    plan = tree({"id": "root", "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]})
    graph = plan.validate_graph()
    assert set(graph.nodes) == {"root", "a", "b"}
    assert graph.edges["a", "b"]["kind"] == "dependency"
    assert graph.edges["a", "root"]["kind"] == "child"


# -- JSON format ----------------------------------------------------------------------------


def _rich_plan() -> Plan:
    return Plan(
        task='Compare two cities — with ünïcödé and "quotes"',
        root=Node(
            id="root",
            title="Answer",
            instruction="Combine.",
            children=[
                Node(id="a", title="City A", instruction="Describe A."),
                Node(
                    id="b",
                    title="City B",
                    instruction="Describe B.",
                    depends_on=["a"],
                    model=ModelRef(
                        kind="remote",
                        base_url="http://127.0.0.1:9/v1",
                        model="m",
                        api_key_env="SOME_KEY",
                    ),
                    generation=GenerationConfig(temperature=0.0, top_p=0.5, max_tokens=33, seed=3),
                ),
            ],
        ),
        default_model=ModelRef(path="/models/x.gguf"),
        default_generation=GenerationConfig(temperature=1.25, max_tokens=99),
    )


def test_json_round_trip_is_lossless_and_carries_format_and_version():
    plan = _rich_plan()
    text = plan.to_json()
    payload = json.loads(text)
    assert payload["format"] == PLAN_FORMAT and payload["version"] == PLAN_FORMAT_VERSION
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this is not json {", r"my\.json is not valid JSON \(line 1"),
        ("[1, 2, 3]", r"my\.json is not a plan: expected a JSON object"),
        ("null", r"my\.json is not a plan: expected a JSON object"),
        ('{"format": "arbor-session", "version": 1}', r"its format is 'arbor-session'"),
        ('{"format": "arbor-plan", "version": 1, "task": "t"}', r"not a valid plan: at root"),
        ('{"task": "t", "root": {"id": "r", "title": "t", "children": 5}}', r"root\.children"),
    ],
)
def test_from_json_on_garbage_or_wrong_format_raises_plan_error(text, expected):
    with pytest.raises(PlanError, match=expected):
        Plan.from_json(text, source="my.json")


@pytest.mark.parametrize("version", [PLAN_FORMAT_VERSION + 1, 99, "1", 1.5])
def test_from_json_on_newer_or_odd_version_asks_to_update(version):
    payload = json.loads(_rich_plan().to_json())
    payload["version"] = version
    with pytest.raises(PlanError) as info:
        Plan.from_json(json.dumps(payload), source="new.json")
    message = str(info.value)
    assert "new.json" in message and repr(version) in message and "Update Arbor" in message


def test_from_json_refuses_a_cyclic_plan_file():
    plan = tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]})
    payload = json.loads(plan.to_json())
    payload["root"]["children"][0]["depends_on"] = ["b"]
    payload["root"]["children"][1]["depends_on"] = ["a"]
    with pytest.raises(CycleError):
        Plan.from_json(json.dumps(payload))


# -- random valid trees ---------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
_text = st.text(max_size=40)
_title = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())
_generation = st.builds(
    GenerationConfig,
    temperature=st.floats(0.0, 2.0, allow_nan=False),
    top_p=st.floats(0.01, 1.0, allow_nan=False),
    max_tokens=st.integers(1, 8192),
    seed=st.none() | st.integers(-(2**63), 2**63 - 1),
)
_model = st.one_of(
    st.builds(ModelRef, kind=st.just("local"), path=st.none() | _text),
    st.builds(
        ModelRef,
        kind=st.just("remote"),
        base_url=st.none() | _text,
        model=st.none() | _text,
        api_key_env=st.none() | _text,
    ),
)


@st.composite
def valid_plans(draw) -> Plan:
    """Random trees whose extra edges all point from a later-created node to an earlier one.

    Tree edges run child -> parent and a child is created after its parent, so every edge goes
    from a higher creation index to a lower one: the graph is acyclic by construction.
    """
    ids = draw(st.lists(_ids, min_size=1, max_size=10, unique=True))
    count = len(ids)
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, count)]
    deps = [
        draw(st.lists(st.integers(i + 1, count - 1), max_size=3, unique=True))
        if i < count - 1
        else []
        for i in range(count)
    ]
    fields = [
        {
            "title": draw(_title),
            "instruction": draw(_text),
            "model": draw(st.none() | _model),
            "generation": draw(st.none() | _generation),
        }
        for _ in range(count)
    ]

    def build(index: int) -> Node:
        return Node(
            id=ids[index],
            depends_on=[ids[d] for d in deps[index]],
            children=[build(c) for c in range(count) if parents[c] == index],
            **fields[index],
        )

    return Plan(
        task=draw(_text),
        root=build(0),
        default_model=draw(_model),
        default_generation=draw(_generation),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans())
def test_random_valid_plans_round_trip_losslessly_through_json(plan):
    plan.validate_graph()
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text
    assert Plan.from_json(plan.to_json(indent=None)) == plan


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans())
def test_execution_order_of_random_plans_respects_every_edge(plan):
    order = plan.execution_order()
    assert sorted(order) == sorted(plan.nodes())
    position = {node_id: i for i, node_id in enumerate(order)}
    for node, parent in plan.iter_nodes():
        if parent is not None:
            assert position[node.id] < position[parent.id]
        for dep in node.depends_on:
            assert position[dep] < position[node.id]
    assert order[-1] == plan.root.id


# -- order ----------------------------------------------------------------------------------


def test_execution_order_puts_dependencies_first_and_breaks_ties_by_tree_order():
    plan = tree(
        {
            "id": "root",
            "children": [
                {"id": "summary", "depends_on": ["facts", "numbers"]},
                {"id": "facts"},
                {"id": "numbers", "children": [{"id": "n1"}, {"id": "n2"}]},
            ],
        }
    )
    assert plan.execution_order() == ["facts", "n1", "n2", "numbers", "summary", "root"]


def test_single_node_plan_is_valid_and_carries_the_task():
    plan = single_node_plan("  Write   a haiku\nabout trees  ")
    assert plan.execution_order() == ["root"]
    assert plan.root.title == "Write a haiku about trees"
    assert plan.root.instruction == plan.task
