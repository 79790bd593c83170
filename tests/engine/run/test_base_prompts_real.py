"""The bundled base model answers facts under its default (base) prompts, locally and through
a real ``llama_cpp.server`` on loopback; under chat prompts it is a different call.

Facts were picked by measuring: each of these came back right for seeds 1, 2 and 3 at the
default temperature (0.2) with ``assets/prompts/base/answer.json``.
"""

from __future__ import annotations

import json

import pytest

from engine.plan import GenerationConfig, ModelRef, single_node_plan
from engine.prompts import few_shot, prompt_style
from engine.run.budget import RunCaps
from storage.workspace import Workspace

pytestmark = pytest.mark.model

FACTS = [
    ("What is the capital of Japan?", "Tokyo"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("Wie heißt die Hauptstadt von Spanien?", "Madrid"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, bundled_path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("base-prompts"))


def _fact_plan(question: str, **generation):
    plan = single_node_plan(question)
    return plan.model_copy(update={"default_generation": GenerationConfig(seed=1, **generation)})


@pytest.mark.parametrize(("question", "fact"), FACTS)
def test_a_factual_leaf_answers_with_the_fact_under_default_settings(workspace, question, fact):
    plan = _fact_plan(question)
    assert plan.default_generation.prompt_format == "auto"
    result = workspace.run_plan(plan, RunCaps(total_tokens=4000), use_cache=False)
    assert result.status in ("completed", "suspect"), result.stop_reason
    answer = result.answer.strip()
    assert fact.lower() in answer.lower(), answer
    assert question.lower() not in answer.lower()  # not the question echoed
    assert "Question:" not in answer and len(answer) < 80
    [call] = workspace.traces.model_calls(result.run_id)
    assert call["input_tokens"] < 400  # the few-shot prompt stays small


def test_the_default_for_the_bundled_model_is_not_chat(workspace):
    question, fact = FACTS[0]
    plan = _fact_plan(question)
    assert prompt_style(ModelRef(), plan.default_generation) == "base"
    # Short: under chat prompts the base model echoes the prompt until the token limit.
    chat = _fact_plan(question, prompt_format="chat", max_tokens=12)
    assert prompt_style(ModelRef(), chat.default_generation) == "chat"
    result = workspace.run_plan(chat, RunCaps(total_tokens=4000), use_cache=False)
    [call] = workspace.traces.model_calls(result.run_id)
    # The chat prompt is the old one (framing included), and a different call.
    assert "careful assistant" in call["prompt"]
    base = workspace.run_plan(plan, RunCaps(total_tokens=4000), use_cache=False)
    [base_call] = workspace.traces.model_calls(base.run_id)
    assert "careful assistant" not in base_call["prompt"]
    assert fact in base.answer


@pytest.mark.server
def test_a_remote_base_prompt_goes_out_raw_and_gets_the_fact(llama_server):
    from engine.models.remote import RemoteBackend

    backend = RemoteBackend(llama_server, "bundled")
    prompt, stops = few_shot("answer", "What is the capital of Japan?")
    config = GenerationConfig(
        prompt_format="base", stop=stops, temperature=0.0, max_tokens=16, seed=1
    )
    request = backend._request([{"role": "user", "content": prompt}], config, None)
    assert request["prompt"] == prompt and "messages" not in request
    completion = backend.complete([{"role": "user", "content": prompt}], config)
    assert "Tokyo" in completion.text and "Question" not in completion.text


@pytest.mark.server
def test_a_registry_entry_declared_base_gets_base_prompts_over_the_endpoint(llama_server, tmp_path):
    from engine.models.registry import Registry

    workspace = Workspace(tmp_path / "data")
    registry = Registry.in_data_dir(workspace.root)
    entry = registry.add_remote("loopback", llama_server, "bundled", model_kind="base")
    assert registry.kind_of(entry).describe() == "base (set in the model registry)"
    plan = single_node_plan("What is the capital of Japan?", entry.ref)
    plan = plan.model_copy(update={"default_generation": GenerationConfig(seed=1)})
    result = workspace.run_plan(plan, RunCaps(total_tokens=4000), use_cache=False)
    assert "Tokyo" in result.answer, result.answer
    [call] = workspace.traces.model_calls(result.run_id)
    [message] = json.loads(call["prompt"])
    assert message["content"].endswith("Question: What is the capital of Japan?\nAnswer:")
