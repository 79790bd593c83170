"""Instruction templates: what they can refer to, what is refused, and how runs use them.

No model is involved: rendering is pure, and the run test uses an echo backend so the assertions
are about the prompt a node got, not about what a model made of it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import PlanError
from engine.models.base import Backend, ChatMessage, Completion, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan, templates
from engine.plan.templates import (
    MAX_RENDERED_CHARS,
    TEMPLATE_TIME_LIMIT_S,
    TemplateProblem,
    check_instruction,
    preview_instruction,
    render_instruction,
)
from engine.prompts import MAX_UPSTREAM_CHARS, node_messages, preview_messages
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from engine.run.scheduler import NodeStatus

TASK = "Plan a weekend in Porto"


def _plan(**instructions: str) -> Plan:
    """root -> (a, b -> depends on a, c); ``instructions`` overrides any node's instruction."""

    def node(node_id: str, **extra: Any) -> Node:
        text = instructions.get(node_id, f"do {node_id}")
        return Node(id=node_id, title=f"Step {node_id.upper()}", instruction=text, **extra)

    root = node(
        "root",
        children=[node("a"), node("b", depends_on=["a"]), node("c")],
    )
    # Chat prompts on purpose: these tests read the chat prompt's sections ("Your step",
    # "### Step A"); the bundled model's default (base prompts) is tested in test_base_prompts.
    return Plan(task=TASK, root=root, default_generation=GenerationConfig(prompt_format="chat"))


def _render(plan: Plan, node_id: str, outputs: dict[str, str] | None = None) -> str:
    return render_instruction(plan, plan.node(node_id), outputs or {})


# -- plain text ------------------------------------------------------------------------------
PLAIN = [
    'Answer in JSON like {"name": 1} with $dollars and 100% honesty.  \n',
    "Two lines\nwith {single} braces and a } stray one",
    "",
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_instructions_render_exactly_as_written_and_pass_the_check(text):
    plan = _plan(b=text)
    assert _render(plan, "b", {"a": "A out"}) == text
    assert preview_instruction(plan, "b") == text
    assert check_instruction(plan, "b") == []


def test_node_messages_of_a_plain_instruction_carry_it_verbatim():
    plan = _plan(b="Use {x} and $task literally")
    content = node_messages(plan, plan.node("b"), {"a": "A out"})[0]["content"]
    assert "Your step: Step B\nUse {x} and $task literally\n" in content
    assert "### Step A\nA out" in content


# -- what a template can refer to ------------------------------------------------------------
def test_task_node_parent_and_ancestors_render():
    plan = _plan(
        a="{{ task }} | {{ node.id }}: {{ node.title }} | parent {{ parent.id }} {{ parent.title }}"
        " | {% for n in ancestors %}{{ n.id }}={{ n.title }}{% endfor %}",
    )
    assert _render(plan, "a") == (f"{TASK} | a: Step A | parent root Step ROOT | root=Step ROOT")


LEAF_TEMPLATE = "{{ ancestors | map(attribute='instruction') | join(' / ') }}"


def test_an_ancestors_instruction_is_rendered_with_placeholders_for_its_own_deps():
    plan = _plan(root="Combine for {{ task }}", a="Context: {{ parent.instruction }}")
    assert _render(plan, "a") == f"Context: Combine for {TASK}"
    deep = Plan(
        task=TASK,
        root=Node(
            id="root",
            title="Root",
            instruction="Top",
            children=[
                Node(id="x", title="X", instruction="x"),
                Node(
                    id="mid",
                    title="Mid",
                    instruction="Mid uses {{ deps.x }}",
                    depends_on=["x"],
                    children=[
                        Node(
                            id="leaf",
                            title="Leaf",
                            instruction=LEAF_TEMPLATE,
                        )
                    ],
                ),
            ],
        ),
    )
    assert _render(deep, "leaf", {"x": "REAL X"}) == "Top / Mid uses <output of x: X>"


def test_the_root_has_no_parent_and_can_test_for_it():
    plan = _plan(root="{% if parent is none %}I am the root{% endif %} of {{ ancestors | length }}")
    assert _render(plan, "root") == "I am the root of 0"


def test_deps_render_by_attribute_subscript_and_iteration():
    plan = _plan(
        b="[{{ deps.a }}] [{{ deps['a'] }}] "
        "{% for id, out in deps.items() %}{{ id }}->{{ out }}{% endfor %} {{ 'a' in deps }}"
    )
    assert _render(plan, "b", {"a": "Alpha", "c": "Gamma"}) == "[Alpha] [Alpha] a->Alpha True"


def test_a_missing_dependency_output_is_a_clear_problem():
    plan = _plan(b="{{ deps.a }}")
    with pytest.raises(TemplateProblem, match="output of 'a', which has not been produced"):
        _render(plan, "b", {})


def test_template_problem_is_a_plan_error_naming_the_node():
    plan = _plan(b="{{ nope }}")
    with pytest.raises(PlanError) as caught:
        _render(plan, "b", {"a": "x"})
    assert isinstance(caught.value, TemplateProblem)
    assert caught.value.node_id == "b"
    assert "'nope' is undefined" in str(caught.value)
    assert "node 'b'" in str(caught.value)


# -- edit-time checks ------------------------------------------------------------------------
def test_check_names_an_unknown_variable():
    problems = check_instruction(_plan(b="Use {{ deps.a }} and {{ answer }}"), "b")
    assert problems == [
        "Instruction of node 'b' uses unknown variable 'answer'; "
        "available variables: task, node, parent, ancestors, deps."
    ]


def test_check_reports_a_syntax_error_with_its_line_number():
    problems = check_instruction(_plan(b="line one\nline two {{ deps.a }\n"), "b")
    assert problems == [
        "Instruction of node 'b' has a template syntax error at line 2: unexpected '}'"
    ]
    with pytest.raises(TemplateProblem) as caught:
        _render(_plan(b="ok\nok\n{% if %}"), "b", {"a": "x"})
    assert caught.value.line == 3
    assert "template syntax error at line 3" in str(caught.value)


@pytest.mark.parametrize("ref", ["deps.c", "deps['c']", "deps.get('c')"])
def test_using_the_output_of_a_node_that_is_not_a_dependency_is_refused(ref):
    plan = _plan(b="{{ deps.a }} {{ " + ref + " }}")
    expected = (
        "Node 'b' uses the output of 'c', which is not one of its dependencies; "
        "add the dependency first."
    )
    assert check_instruction(plan, "b") == [expected]
    with pytest.raises(TemplateProblem) as caught:
        _render(plan, "b", {"a": "A", "c": "C is finished but not a dependency"})
    assert str(caught.value) == expected


def test_a_dynamic_reference_to_a_non_dependency_is_caught_by_the_trial_render():
    plan = _plan(b="{{ deps[node.id | replace('b', 'c')] }}")
    problems = check_instruction(plan, "b")
    assert len(problems) == 1 and "which is not one of its dependencies" in problems[0]


def test_a_reference_to_a_node_that_does_not_exist_says_so():
    problems = check_instruction(_plan(b="{{ deps.zz }}"), "b")
    assert problems == [
        "Node 'b' uses the output of 'zz', but the plan has no node 'zz'; its dependencies are: a."
    ]


def test_check_can_check_a_draft_without_touching_the_plan():
    plan = _plan(b="fine {{ deps.a }}")
    assert check_instruction(plan, "b") == []
    assert check_instruction(plan, "b", "{{ deps.c }}") != []
    assert plan.node("b").instruction == "fine {{ deps.a }}"


def test_check_and_preview_accept_a_draft_that_adds_the_dependency_in_the_same_edit():
    plan = _plan(b="{{ deps.a }}")
    draft = "{{ deps.a }} and {{ deps.c }}"
    assert check_instruction(plan, "b", draft) != []
    assert check_instruction(plan, "b", draft, depends_on=["a", "c"]) == []
    assert preview_instruction(plan, "b", draft, depends_on=["a", "c"]) == (
        "<output of a: Step A> and <output of c: Step C>"
    )
    content = preview_messages(plan, "b", draft, depends_on=["a", "c"])[0]["content"]
    assert "### Step C\n<output of c: Step C>" in content
    assert plan.node("b").depends_on == ["a"]
    assert check_instruction(plan, "b", depends_on=[]) == [
        "Node 'b' uses the output of 'a', which is not one of its dependencies; "
        "add the dependency first."
    ]


def test_check_finds_runtime_problems_by_a_trial_render():
    problems = check_instruction(_plan(root="{{ parent.title }}"), "root")
    assert len(problems) == 1
    assert "'None' has no attribute 'title'" in problems[0]
    assert "root node has no parent" in problems[0]


# -- the sandbox -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ deps.__class__ }}",
        "{{ node.__init__.__globals__ }}",
        "{{ parent._plan }}",
    ],
)
def test_the_sandbox_blocks_internal_attributes_with_a_clear_problem(text):
    plan = _plan(a=text)
    with pytest.raises(TemplateProblem) as caught:
        _render(plan, "a")
    message = str(caught.value)
    assert message.startswith("Instruction of node 'a' ")
    assert "sandbox forbids" in message or "undefined" in message
    assert check_instruction(plan, "a") == [message]


def test_the_sandbox_message_names_the_forbidden_attribute():
    with pytest.raises(TemplateProblem, match=r"sandbox forbids at line 1: .*'__class__'"):
        _render(_plan(a="{{ ''.__class__.__mro__ }}"), "a")


def test_huge_repetition_and_runaway_loops_are_refused_quickly():
    started = time.perf_counter()
    with pytest.raises(TemplateProblem, match="sandbox forbids"):
        _render(_plan(a="{{ 'x' * 10**9 }}"), "a")
    with pytest.raises(TemplateProblem, match="sandbox forbids"):
        _render(_plan(a="{{ 2 ** 100000000 }}"), "a")
    loop = "{% for i in range(100000) %}{% for j in range(1000) %}xy{% endfor %}{% endfor %}"
    with pytest.raises(TemplateProblem, match="renders to more than"):
        _render(_plan(a=loop), "a")
    assert time.perf_counter() - started < 5


# -- previews --------------------------------------------------------------------------------
def test_preview_shows_placeholders_for_dependency_outputs():
    plan = _plan(b="Improve this: {{ deps.a }}")
    assert preview_instruction(plan, "b") == "Improve this: <output of a: Step A>"
    assert preview_instruction(plan, "b", "Draft {{ deps['a'] }}") == (
        "Draft <output of a: Step A>"
    )


def test_preview_raises_the_problem_of_a_broken_template():
    with pytest.raises(TemplateProblem, match="'missing' is undefined"):
        preview_instruction(_plan(b="{{ missing }}"), "b")


def test_preview_messages_are_the_run_messages_with_placeholders():
    plan = _plan(b="Shorten {{ deps.a }} for {{ task }}", root="Merge {{ node.title }}")
    leaf = preview_messages(plan, "b")[0]["content"]
    assert f"Shorten <output of a: Step A> for {TASK}" in leaf
    assert "### Step A\n<output of a: Step A>" in leaf
    parent = preview_messages(plan, "root")[0]["content"]
    assert "Merge Step ROOT" in parent
    for child in "abc":
        assert f"<output of {child}: Step {child.upper()}>" in parent
    outputs = {n: f"<output of {n}: Step {n.upper()}>" for n in "abc"}
    assert preview_messages(plan, "root") == node_messages(plan, plan.node("root"), outputs)


def test_preview_messages_of_a_draft_leave_the_plan_alone():
    plan = _plan()
    content = preview_messages(plan, "b", "New {{ deps.a }}")[0]["content"]
    assert "New <output of a: Step A>" in content
    assert plan.node("b").instruction == "do b"


# -- prompts and runs ------------------------------------------------------------------------
def test_node_messages_render_the_template_with_real_outputs():
    plan = _plan(b="Edit <{{ deps.a }}> for {{ task }}")
    content = node_messages(plan, plan.node("b"), {"a": "  the draft  "})[0]["content"]
    assert f"Your step: Step B\nEdit <the draft> for {TASK}\n" in content
    assert "{{" not in content


def test_node_messages_clip_a_long_dependency_output_inside_the_template_too():
    plan = _plan(b="<{{ deps.a }}>")
    content = node_messages(plan, plan.node("b"), {"a": "w" * (MAX_UPSTREAM_CHARS + 50)})[0][
        "content"
    ]
    assert "<" + "w" * MAX_UPSTREAM_CHARS + " [...]>" in content


def test_node_messages_raise_the_template_problem():
    plan = _plan(b="{{ deps.c }}")
    with pytest.raises(TemplateProblem, match="not one of its dependencies"):
        node_messages(plan, plan.node("b"), {"a": "A", "c": "C"})


class EchoBackend(Backend):
    """Answers every call with the prompt it was given."""

    label = "echo"

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: Any = None,
        cancel: Any = None,
    ) -> Completion:
        prompt = "\n".join(message["content"] for message in messages)
        return Completion(f"echo: {prompt}", Usage(len(prompt) // 4, 5), 0.0, self.label)


def _echo_factory(ref: ModelRef) -> Backend:
    return EchoBackend()


def test_a_run_puts_the_dependency_output_where_the_template_says():
    plan = _plan(b="Quote <<{{ deps.a }}>> for {{ node.id }}")
    result = execute_plan(plan, RunCaps(total_tokens=100_000), backend_factory=_echo_factory)
    # The backend echoes its prompt, which the output check flags: a finished, "suspect" run.
    assert result.status in ("completed", "suspect") and result.answered
    a_output = result.nodes["a"].output
    assert a_output.startswith("echo: ")
    assert f"Quote <<{a_output.strip()}>> for b" in result.nodes["b"].output


def test_a_broken_template_fails_its_node_alone_and_an_independent_branch_completes():
    plan = _plan(b="Use {{ deps.a }}", c="Broken {{ deps.a }}")  # c does not depend on a
    expected = (
        "Node 'c' uses the output of 'a', which is not one of its dependencies; "
        "add the dependency first."
    )
    result = execute_plan(plan, RunCaps(total_tokens=100_000), backend_factory=_echo_factory)
    statuses = {node_id: r.status for node_id, r in result.nodes.items()}
    assert statuses == {
        "a": NodeStatus.DONE,
        "b": NodeStatus.DONE,
        "c": NodeStatus.FAILED,
        "root": NodeStatus.BLOCKED,
    }
    assert result.nodes["c"].error == expected
    assert result.nodes["c"].input_tokens == 0  # no model call was made for it
    assert result.status == "failed" and expected in (result.stop_reason or "")


# -- bounds on time and size -----------------------------------------------------------------
HANGING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.timeout(60)
def test_loops_with_no_output_are_stopped_at_the_time_limit_with_the_node_named():
    plan = _plan(b=HANGING)
    message = f"Instruction of node 'b' took longer than {TEMPLATE_TIME_LIMIT_S:g} s to render"
    with pytest.raises(TemplateProblem, match=message) as info:
        _render(plan, "b")
    assert info.value.node_id == "b"
    [problem] = check_instruction(plan, "b")  # the edit-time check is bounded the same way
    assert problem.startswith(message)


@pytest.mark.timeout(60)
def test_a_render_deadline_earlier_than_the_limit_counts_and_says_it_is_the_runs():
    plan = _plan(b=HANGING)
    with pytest.raises(TemplateProblem, match="the time left under the run's time cap"):
        render_instruction(plan, plan.node("b"), {}, deadline=time.monotonic() + 0.2)


DOUBLING = [  # each builds a string of about 134 million characters without printing it
    "{% set ns = namespace(s='x') %}{% for i in range(27) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(27) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% set s = 'x' * 99999 %}{{ ([s] * 1000)|join|length }}",
    "{{ ([[1] * 99999] * 300)|sum(start=[])|length }}",
    "{% set s = 'x' * 99999 %}{{ ''.join([s] * 1000)|length }}",
    "{% set s = 'x' * 99999 %}{% set t %}{% for i in range(1000) %}{{ s }}{% endfor %}{% endset %}"
    "{{ t|length }}",
    "{% set l = [1] %}{% for i in range(27) %}{% if l.extend(l) %}{% endif %}{% endfor %}",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", DOUBLING)
def test_building_a_huge_string_or_list_without_output_is_refused(text):
    with pytest.raises(
        TemplateProblem, match=r"Instruction of node 'b' builds a .* over 1,000,000"
    ):
        _render(_plan(b=text), "b")


HUGE_WIDTHS = [
    "{{ 'x'|center(10**8) }}",
    "{{ 'x'.center(10**8) }}",
    "{{ 'x'.ljust(10**8) }}",
    "{{ 'x'|indent(10**8, true) }}",
    "{{ '%100000000s'|format('x') }}",
    "{{ '%*s'|format(10**8, 'x') }}",
    "{{ '%100000000s' % 'x' }}",
    "{{ '{:>100000000}'.format('x') }}",
    "{{ '{:.100000000f}'.format(1.5) }}",
    "{{ ('x' * 1000)|replace('', 'y' * 99999) }}",
    "{{ ('x' * 1000).replace('', 'y' * 99999) }}",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", HUGE_WIDTHS)
def test_filters_and_methods_with_huge_widths_are_refused_before_they_run(text):
    with pytest.raises(TemplateProblem, match="Instruction of node 'b' builds a string over"):
        _render(_plan(b=text), "b")


def test_a_huge_number_is_refused_before_it_is_computed():
    with pytest.raises(TemplateProblem, match="builds a number over"):
        _render(_plan(b="{{ ((10**9000)**9000)**9000 }}"), "b")


def test_an_ordinary_template_renders_exactly_as_before():
    text = (
        "{{ task }} / {{ node.title|upper }}: {% for i in range(3) %}{{ i }},{% endfor %}"
        "{% set ns = namespace(s='') %}{% for w in ['a', 'b'] %}{% set ns.s = ns.s ~ w %}"
        "{% endfor %}[{{ ns.s }}] [{{ 'ab'|center(6) }}] [{{ '%5s'|format('x') }}] "
        "[{{ '{:>4}'.format('y') }}] [{{ 'p\nq'|indent(2, true) }}] [{{ [1, 2]|join('-') }}] "
        "[{{ [[1], [2]]|sum(start=[]) }}] [{{ 'a-b'|replace('-', '+') }}] {{ 2 ** 10 }} "
        "{{ deps.a|length }}{% set t %}x{{ 1 + 1 }}{% endset %} {{ t }}"
    )
    expected = (
        f"{TASK} / STEP B: 0,1,2,[ab] [  ab  ] [    x] [   y] [  p\n  q] [1-2] [[1, 2]] "
        "[a+b] 1024 5 x2"
    )
    assert _render(_plan(b=text), "b", {"a": "A out"}) == expected


@pytest.mark.timeout(120)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 100_000), min_size=1, max_size=4),
    body=st.sampled_from(["", "x", "{{ i0 }}", "{% set ns.s = ns.s ~ 'ab' %}"]),
)
def test_nested_loops_render_within_bounds_or_are_refused(monkeypatch, sizes, body):
    monkeypatch.setattr(templates, "TEMPLATE_TIME_LIMIT_S", 0.25)
    opening = "".join(f"{{% for i{d} in range({n}) %}}" for d, n in enumerate(sizes))
    text = "{% set ns = namespace(s='') %}" + opening + body + "{% endfor %}" * len(sizes)
    try:
        out = _render(_plan(b=text), "b")
    except TemplateProblem as exc:
        assert exc.node_id == "b"
    else:
        assert isinstance(out, str) and len(out) <= MAX_RENDERED_CHARS


def test_an_instruction_is_compiled_once_and_renders_each_nodes_own_outputs(monkeypatch):
    compiles: list[str] = []
    compile_for_real = templates._ENV.from_string
    monkeypatch.setattr(
        templates._ENV,
        "from_string",
        lambda source: compiles.append(source) or compile_for_real(source),
    )
    templates._compiled.cache_clear()
    source = "Use {{ deps.a }} for {{ task }}"
    plan = _plan(b=source)
    assert _render(plan, "b", {"a": "first"}) == f"Use first for {TASK}"
    assert _render(plan, "b", {"a": "second"}) == f"Use second for {TASK}"
    assert compiles == [source]
    # A syntax error is reported every time, not remembered as a template.
    broken = _plan(b="{{ deps.a ")
    for _ in range(2):
        with pytest.raises(TemplateProblem, match="syntax error"):
            _render(broken, "b", {"a": "x"})
