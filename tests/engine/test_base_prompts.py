"""Base-model prompts: the few-shot renderer, the style a call resolves to, node prompts,
NodeRunner.prepare, and the judge / critique / revise calls of strategies in base style."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from assets import asset_path
from engine.models.base import Backend, ChatMessage, Completion, Usage
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.plan.compute_config import SelectorConfig, StrategyConfig
from engine.prompts import (
    MAX_STOPS,
    few_shot,
    load_base_prompt,
    merge_stops,
    node_messages,
    preview_messages,
    prompt_style,
)
from engine.run.budget import Meter
from engine.run.node_calls import Caller, NodeCalls
from engine.run.strategies import (
    BestOfN,
    SelfRefine,
    _base_question,
    call_style,
    parse_base_critique,
    parse_score,
)

BASE_DIR = asset_path("prompts") / "base"
NAMES = ["answer", "synthesis", "judge", "critique", "revise", "difficulty"]
REMOTE = ModelRef(kind="remote", base_url="http://127.0.0.1:9/v1", model="m")


@pytest.mark.parametrize("name", NAMES)
def test_every_base_prompt_is_well_formed(name):
    spec = json.loads((BASE_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert spec["header"] and spec["input_label"] and spec["output_label"]
    assert 3 <= len(spec["examples"]) <= 8
    assert all(ex["input"].strip() and ex["output"].strip() for ex in spec["examples"])
    assert 1 <= len(spec["stop"]) <= 2  # room for the node's own stops
    for example in spec["examples"]:
        # A blank line inside an example would end it early; a stop inside an output would
        # teach the model answers that the stop then cuts.
        assert "\n\n" not in example["input"] + example["output"]
        assert not any(stop in "\n" + example["output"] for stop in spec["stop"] if stop != "\n")


@pytest.mark.parametrize("name", ["answer", "synthesis"])
def test_answer_and_synthesis_examples_cover_five_languages(name):
    # The base model answers in the language its examples use: each example names its own.
    languages = {example["lang"] for example in load_base_prompt(name)["examples"]}
    assert {"en", "fr", "de", "es", "it"} <= languages


def test_few_shot_renders_header_examples_and_the_open_answer():
    text, stops = few_shot("answer", "What is the capital of Japan?\n\n  Be brief.")
    spec = load_base_prompt("answer")
    blocks = text.split("\n\n")
    assert blocks[0] == spec["header"]
    first = spec["examples"][0]
    assert blocks[1] == f"Question: {first['input']}\nAnswer: {first['output']}"
    # The blank line inside the input is gone: it would end the example.
    assert text.endswith("\n\nQuestion: What is the capital of Japan?\n  Be brief.\nAnswer:")
    assert stops == spec["stop"] and "\n" not in stops  # lists (one item a line) survive


def test_merge_stops_keeps_the_nodes_own_first_and_at_most_four():
    assert merge_stops(["END"], ["\nQuestion:", "\n\n"]) == ["END", "\nQuestion:", "\n\n"]
    assert merge_stops(["\n\n"], ["\nQuestion:", "\n\n"]) == ["\n\n", "\nQuestion:"]
    merged = merge_stops(["a", "b", "c"], ["d", "e"])
    assert merged == ["a", "b", "c", "d"] and len(merged) == MAX_STOPS


def test_prompt_style_resolves_auto_by_the_models_kind_and_keeps_explicit_choices():
    auto = GenerationConfig()
    assert auto.prompt_format == "auto"
    assert prompt_style(REMOTE, auto) == "chat"
    assert prompt_style(REMOTE, auto, "base") == "base"  # the registry says base
    for chosen in ("chat", "base", "completion"):
        assert prompt_style(REMOTE, GenerationConfig(prompt_format=chosen)) == chosen
    local = ModelRef(path="/nonexistent/model-it.gguf")  # unreadable: chat, as before
    assert prompt_style(local, auto) == "chat"
    assert prompt_style(local, auto, "base") == "base"


def _plan() -> Plan:
    return Plan(
        task="Describe Japan.",
        root=Node(
            id="root",
            title="Describe Japan",
            instruction="Describe Japan in two sentences.",
            children=[
                Node(id="cap", title="Capital", instruction="What is the capital of Japan?"),
                Node(
                    id="sight",
                    title="Sight",
                    instruction="Name one sight in {{ deps.cap }}.",
                    depends_on=["cap"],
                ),
            ],
        ),
        default_model=REMOTE,
    )


def test_a_leaf_gets_the_answer_prompt_with_upstream_outputs_as_given_lines():
    plan = _plan()
    plan.node("sight").instruction = "Name one sight there."
    outputs = {"cap": "Tokyo.\n\nIt is large. " + "x" * 2000}
    [message] = node_messages(plan, plan.node("sight"), outputs, style="base")
    text = message["content"]
    assert text.startswith(load_base_prompt("answer")["header"])
    last = text.rsplit("\n\n", 1)[-1]
    assert last.startswith("Question: Name one sight there.\nGiven (Capital): Tokyo.\nIt is")
    assert " [...]" in last and last.endswith("\nAnswer:")
    assert len(last) < 700  # clipped for the small context
    # An output the instruction already quotes is not given twice.
    [quoted] = node_messages(_plan(), _plan().node("sight"), {"cap": "Tokyo"}, style="base")
    assert quoted["content"].endswith("Question: Name one sight in Tokyo.\nAnswer:")
    assert "careful assistant" not in text


def test_a_parent_gets_the_synthesis_prompt_with_its_childrens_results():
    plan = _plan()
    outputs = {"cap": "Tokyo.", "sight": "- Senso-ji\n- Tokyo Tower"}
    [message] = node_messages(plan, plan.root, outputs, style="base")
    last = message["content"].rsplit("\n\n", 1)[-1]
    assert last == (
        "Task: Describe Japan in two sentences.\nStep results:\n- Capital: Tokyo.\n"
        "- Sight: - Senso-ji\n- Tokyo Tower\nCombined answer:"
    )


def test_a_decomposed_root_is_asked_the_task_itself_in_a_base_prompt():
    from engine.planner.decompose import ROOT_INSTRUCTION, build_plan

    task = "Plan a picnic for six friends in a city park."
    subtasks = [
        {"title": t, "instruction": f"{t} for the picnic.", "deps": []}
        for t in ("Choose the place", "Plan the food")
    ]
    plan = build_plan(task, subtasks, ModelRef())
    assert plan.root.instruction == ROOT_INSTRUCTION
    outputs = {"s1": "The park by the lake.", "s2": "Sandwiches and fruit."}
    [message] = node_messages(plan, plan.root, outputs, style="base")
    last = message["content"].rsplit("\n\n", 1)[-1]
    assert last.startswith(f"Task: {task}\nStep results:\n- Choose the place: The park")
    assert ROOT_INSTRUCTION not in last


def test_chat_and_completion_styles_are_unchanged():
    plan = _plan()
    chat = node_messages(plan, plan.node("cap"), {}, style="chat")
    assert "careful assistant" in chat[0]["content"]
    assert node_messages(plan, plan.node("cap"), {})[0]["content"] == chat[0]["content"]
    raw = node_messages(plan, plan.node("cap"), {}, style="completion")
    assert raw == [{"role": "user", "content": "What is the capital of Japan?"}]


def test_preview_shows_the_base_prompt():
    plan = _plan()
    [message] = preview_messages(plan, "sight", "Name one sight there.", style="base")
    assert "Given (Capital): <output of cap: Capital>" in message["content"]
    declared = plan.model_copy(
        update={"default_generation": GenerationConfig(prompt_format="base")}
    )
    [message] = preview_messages(declared, "cap")
    assert message["content"].endswith("Question: What is the capital of Japan?\nAnswer:")


# -- NodeRunner.prepare ---------------------------------------------------------------------
class Scripted(Backend):
    """Answers from a list, recording each call's messages and config."""

    def __init__(self, answers: list[str], label: str = "scripted", kind: str = "auto"):
        self.answers = list(answers)
        self.label = label
        self.declared_kind = kind
        self.seen: list[tuple[list[ChatMessage], GenerationConfig, Any]] = []

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def complete(self, messages, config, *, json_schema=None, on_token=None, cancel=None):
        self.seen.append((messages, config, json_schema))
        text = self.answers.pop(0) if self.answers else "OK"
        return Completion(text, Usage(10, 5), 0.01, self.label, "stop")


def _prepare(plan: Plan, backend: Backend, strategy: StrategyConfig | None = None):
    from engine.run.allocation import allocate
    from engine.run.budget import RunCaps
    from engine.run.node_runner import NodeRunner

    if strategy is not None:
        plan = plan.model_copy(deep=True)
        plan.root.strategy = strategy
    allocation = allocate(plan, RunCaps(total_tokens=10_000))
    runner = NodeRunner(plan, allocation, lambda ref: backend, Meter(10_000), None, [])
    return runner.prepare(plan.root, {})


def _single(prompt_format: str = "auto", stop: list[str] | None = None) -> Plan:
    return Plan(
        task="What is the capital of Japan?",
        root=Node(id="root", title="Capital", instruction="What is the capital of Japan?"),
        default_model=REMOTE,
        default_generation=GenerationConfig(prompt_format=prompt_format, stop=stop or []),
    )


def test_prepare_resolves_the_style_merges_stops_and_keys_the_call_by_them():
    chat = _prepare(_single(stop=["END"]), Scripted([]))
    assert chat.generation is not None and chat.generation.prompt_format == "chat"
    assert chat.generation.stop == ["END"]
    base = _prepare(_single(stop=["END"]), Scripted([], kind="base"))
    assert base.generation is not None and base.generation.prompt_format == "base"
    assert base.generation.stop == ["END", "\nQuestion:", "\n\n"]
    assert base.messages[0]["content"].endswith("Question: What is the capital of Japan?\nAnswer:")
    assert base.cache_key != chat.cache_key
    explicit = _prepare(_single("chat"), Scripted([], kind="base"))
    assert explicit.generation is not None and explicit.generation.prompt_format == "chat"


def test_a_judge_of_another_kind_gets_its_own_style():
    strategy = StrategyConfig(
        kind="best_of_n", samples=2, selector=SelectorConfig(kind="judge", judge_model=REMOTE)
    )
    plan = _single().model_copy(update={"default_model": ModelRef(path="/nowhere/x.gguf")})
    backends = {"remote": Scripted([], kind="base"), "local": Scripted([])}

    from engine.run.allocation import allocate
    from engine.run.budget import RunCaps
    from engine.run.node_runner import NodeRunner

    plan.root.strategy = strategy
    runner = NodeRunner(
        plan, allocate(plan, RunCaps(total_tokens=10_000)),
        lambda ref: backends[ref.kind], Meter(10_000), None, [],
    )  # fmt: skip
    prepared = runner.prepare(plan.root, {})
    assert prepared.error is None and prepared.generation is not None
    assert prepared.generation.prompt_format == "chat"  # the unreadable local file: as before
    assert prepared.judge is not None and prepared.judge.style == "base"


# -- strategies in base style ---------------------------------------------------------------
def _calls(backend: Backend, prompt_format: str, stop: list[str] | None = None) -> NodeCalls:
    config = GenerationConfig(prompt_format=prompt_format, stop=stop or [], max_tokens=16)
    return NodeCalls(Caller(backend, REMOTE), config, Meter(100_000), halt=threading.Event())


def test_the_base_question_is_found_in_a_few_shot_prompt():
    text, _ = few_shot("answer", "What is 2 + 2?\nGiven (Step): four")
    assert _base_question(text) == "What is 2 + 2?\nGiven (Step): four"
    text, _ = few_shot("synthesis", "Plan a trip.\nStep results:\n- A: b")
    assert _base_question(text) == "Plan a trip.\nStep results:\n- A: b"


def test_best_of_n_judges_base_samples_with_the_few_shot_judge_prompt():
    question, _ = few_shot("answer", "What is the capital of Japan?")
    messages: list[ChatMessage] = [{"role": "user", "content": question}]
    backend = Scripted(["Tokyo.", "Osaka.", "9", "2"])
    calls = _calls(backend, "base", ["\nQuestion:", "\n\n"])
    judge = StrategyConfig(kind="best_of_n", samples=2, selector=SelectorConfig(kind="judge"))
    result = BestOfN(judge).run(calls, messages)
    assert result.output == "Tokyo."
    judged = [seen for seen in backend.seen if seen[0][0]["content"].startswith("Answers graded")]
    assert len(judged) == 2
    prompt, config, schema = judged[0]
    assert schema is None and config.prompt_format == "base" and config.stop == ["\n"]
    assert prompt[0]["content"].endswith(
        "Question: What is the capital of Japan?\nProposed answer: Tokyo.\nScore:"
    )
    assert [r.score for r in calls.records if r.role == "sample"] == [9.0, 2.0]


def test_self_refine_in_base_style_critiques_and_revises_with_few_shot_prompts():
    question, stops = few_shot("answer", "What is the capital of Australia?")
    messages: list[ChatMessage] = [{"role": "user", "content": question}]
    backend = Scripted(["Sydney.", "Wrong: it is Canberra.", "Canberra.", "OK"])
    calls = _calls(backend, "base", stops)
    result = SelfRefine(StrategyConfig(kind="self_refine", refine_rounds=2)).run(calls, messages)
    assert result.output == "Canberra."
    roles = [r.role for r in calls.records]
    assert roles == ["answer", "critique", "revise", "critique"]
    critique, revise = backend.seen[1], backend.seen[2]
    assert critique[0][0]["content"].endswith(
        "Question: What is the capital of Australia?\nProposed answer: Sydney.\nReview:"
    )
    assert critique[2] is None and critique[1].stop == ["\n"]
    assert revise[0][0]["content"].endswith(
        "Proposed answer: Sydney.\nProblem: Wrong: it is Canberra.\nCorrected answer:"
    )
    assert revise[1].prompt_format == "base" and "\nQuestion:" in revise[1].stop
    assert "critic found no problems in round 2" in (result.note or "")


def test_chat_style_strategies_keep_their_json_prompts():
    backend = Scripted(["12", '{"ok": true, "problems": ""}'])
    calls = _calls(backend, "chat")
    SelfRefine(StrategyConfig(kind="self_refine", refine_rounds=1)).run(
        calls, [{"role": "user", "content": "What is 7 + 5?"}]
    )
    critique = backend.seen[1]
    assert critique[2] is not None and critique[1].prompt_format == "chat"
    assert "Reply with JSON only" in critique[0][0]["content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OK", (True, "")),
        (" ok.", (True, "")),
        ("Okay", (False, "Okay")),
        ("Wrong: it is Canberra.", (False, "Wrong: it is Canberra.")),
        ("", (False, "the critic gave no review")),
    ],
)
def test_parse_base_critique(text, expected):
    assert parse_base_critique(text) == expected


def test_scores_parse_from_a_base_judges_text():
    assert parse_score(" 8") == 8.0 and parse_score("12") == 10.0
    assert parse_score("no idea") is None


def test_call_style_of_a_completion_node_asks_the_models_kind():
    backend = Scripted([], kind="base")
    assert call_style(Caller(backend, REMOTE), "completion") == "base"
    assert call_style(Caller(Scripted([]), REMOTE), "completion") == "chat"
    assert call_style(Caller(Scripted([]), REMOTE, "base"), "chat") == "base"
