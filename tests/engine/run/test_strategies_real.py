"""Each strategy on the real bundled model, traced to a real DuckDB file.

The bundled 270M model is weak, so these tests check what the strategies did (calls, roles,
votes, scores, early stop, refine rounds, caps) and that the trace says the same, not whether
the answers are right.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.plan import GenerationConfig, Node, Plan
from engine.plan.compute_config import NodeBudget, StrategyConfig
from engine.run.budget import RunCaps
from storage.workspace import Workspace

pytestmark = pytest.mark.model


def arithmetic(strategy: StrategyConfig, max_tokens: int = 8, **node) -> Plan:
    return Plan(
        task="What is 7 + 5? Answer with a number only.",
        root=Node(
            id="root",
            title="Add the numbers",
            instruction="What is 7 + 5? Answer with a number only.",
            strategy=strategy,
            **node,
        ),
        default_generation=GenerationConfig(max_tokens=max_tokens, temperature=0.2),
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, bundled_path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("strategies"))


def _trace(workspace: Workspace, run_id: str):
    [node] = workspace.traces.node_executions(run_id)
    calls = workspace.traces.model_calls(run_id)
    return node, calls


def test_self_consistency_votes_stop_early_and_replay(workspace):
    strategy = StrategyConfig(kind="self_consistency", samples=6, min_samples=3, temperature=0.7)
    result = workspace.run_plan(arithmetic(strategy), RunCaps(total_tokens=4000))
    assert result.status == "completed", result.stop_reason
    node, calls = _trace(workspace, result.run_id)
    samples = [c for c in calls if c["role"] == "sample"]
    assert 3 <= len(samples) <= 6 == 6 and node["samples"] == len(samples)
    assert [c["sample_index"] for c in samples] == list(range(len(samples)))
    assert sum(bool(c["selected"]) for c in samples) == 1
    votes = Counter(c["vote"] for c in samples if c["vote"])
    leader, count = votes.most_common(1)[0]
    assert node["agreement"] == pytest.approx(count / len(samples))
    [chosen] = [c for c in samples if c["selected"]]
    assert chosen["vote"] == leader and chosen["output"] == result.answer
    if len(samples) < 6:
        assert "stopped after" in node["note"]
    # Run again: every sample is replayed from the store, no model is called.
    again = workspace.run_plan(arithmetic(strategy), RunCaps(total_tokens=4000))
    assert again.answer == result.answer and again.total_tokens == 0
    assert again.attempt_tokens == result.total_tokens and again.replayed


def test_best_of_n_with_the_bundled_model_as_judge(workspace):
    strategy = StrategyConfig(kind="best_of_n", samples=3, temperature=0.9)
    result = workspace.run_plan(arithmetic(strategy, max_tokens=12), RunCaps(total_tokens=6000))
    assert result.status == "completed", result.stop_reason
    node, calls = _trace(workspace, result.run_id)
    samples = [c for c in calls if c["role"] == "sample"]
    judges = [c for c in calls if c["role"] == "judge"]
    assert len(samples) == 3 and len(judges) == len([s for s in samples if s["output"].strip()])
    scored = [s for s in samples if s["score"] is not None]
    assert all(0 <= s["score"] <= 10 for s in scored)
    [chosen] = [s for s in samples if s["selected"]]
    if scored:
        assert chosen["score"] == max(s["score"] for s in scored)
    assert chosen["output"] == result.answer and node["strategy"] == "best-of-N ×3"


def test_self_refine_rounds_are_traced(workspace):
    strategy = StrategyConfig(kind="self_refine", refine_rounds=2)
    result = workspace.run_plan(arithmetic(strategy, max_tokens=16), RunCaps(total_tokens=8000))
    assert result.status == "completed", result.stop_reason
    node, calls = _trace(workspace, result.run_id)
    roles = [c["role"] for c in calls]
    assert roles[0] == "answer" and roles[1] == "critique"
    assert roles.count("critique") <= 2 and roles.count("revise") <= roles.count("critique")
    assert sum(bool(c["selected"]) for c in calls) == 1
    assert node["samples"] == 1 + roles.count("revise")
    assert node["note"]


def test_a_real_run_never_passes_its_node_or_run_cap(workspace):
    strategy = StrategyConfig(kind="self_consistency", samples=8, early_stop=False)
    plan = arithmetic(strategy, max_tokens=16, budget=NodeBudget(tokens=150))
    # The chat prompt (about 60 tokens) on purpose: the caps below are sized for it; the base
    # prompt's worked examples (about 180 tokens) would not leave room for one sample.
    plan.default_generation.prompt_format = "chat"
    result = workspace.run_plan(plan, RunCaps(total_tokens=1000), use_cache=False)
    node, calls = _trace(workspace, result.run_id)
    spent = node["input_tokens"] + node["output_tokens"]
    assert spent <= 150 and node["token_cap"] <= 150
    assert result.total_tokens <= 1000
    assert 1 <= len(calls) < 8  # the cap allowed some samples, not all
    assert "of 8 samples" in (node["note"] or "")


def test_a_completion_prompt_lets_the_base_model_answer(workspace):
    """The bundled model is a base model: in the chat format it repeats the prompt; as plain
    text continuing few-shot examples it answers."""
    from engine.prompts import node_messages
    from engine.tune.evaluation import plan_for_input

    plan = Plan.from_json(
        (Path(__file__).resolve().parents[3] / "assets" / "examples" / "eval_plans"
         / "capitals.json").read_text(encoding="utf-8")
    )  # fmt: skip
    asked = plan_for_input(plan, "What is the capital of Egypt? Answer with one word.")
    [message] = node_messages(asked, asked.root, {})
    assert message["content"].endswith("Q: What is the capital of Egypt? Answer with one word.\nA:")
    assert "careful assistant" not in message["content"]  # no chat framing
    result = workspace.run_plan(asked, RunCaps(total_tokens=2000), use_cache=False)
    answer = result.answer.strip()
    # An answer, not a continuation of the prompt: a word or two, no new question.
    assert result.status == "completed" and 1 <= len(answer.split()) <= 3, answer
    assert "capital" not in answer.lower() and not answer.startswith("Q:")


def test_a_remote_endpoint_gets_a_completion_prompt_as_raw_text():
    """Completion and base prompts go to the endpoint's completions API, untemplated (the
    real server's answer is tested in test_base_prompts_real.py)."""
    from engine.models.remote import RemoteBackend

    backend = RemoteBackend("http://127.0.0.1:9/v1", "m")
    messages = [{"role": "user", "content": "Q: 1+1\nA:"}]
    for prompt_format in ("completion", "base"):
        config = GenerationConfig(prompt_format=prompt_format, stop=["\n"])
        request = backend._request(messages, config, None)  # type: ignore[arg-type]
        assert request["prompt"] == "Q: 1+1\nA:" and "messages" not in request
    chat = backend._request(messages, GenerationConfig(prompt_format="chat"), None)  # type: ignore[arg-type]
    assert chat["messages"] == messages and "prompt" not in chat
