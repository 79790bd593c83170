"""``engine.run.playground`` with the in-process fake model: what under test is which prompt a
variant sends, which calls its strategy makes and how they are totalled, not model quality (the
real bundled model is in tests/app/services/test_playground.py)."""

from __future__ import annotations

import threading

from engine.models import ChatMessage
from engine.plan.compute_config import SelectorConfig, StrategyConfig
from engine.run.playground import Variant, is_hand_edited, render_prompt, run_variant
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

OUTPUTS = {"a": "Paris is the capital.", "b": "The Seine runs through it."}


def _plan():
    return fake_models(tree({"id": "root", "children": [{"id": "a"}, {"id": "b"}]}))


def _variant(plan, **changes) -> Variant:
    root = plan.root
    base = Variant(
        model=plan.model_for(root),
        generation=plan.generation_for(root),
        strategy=StrategyConfig(kind="single", samples=1),
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_the_prompt_quotes_the_given_outputs_and_a_hand_edit_is_sent_as_it_is():
    plan = _plan()
    rendered = render_prompt(plan, "root", OUTPUTS, _variant(plan))
    text = rendered[-1]["content"]
    assert OUTPUTS["a"] in text and OUTPUTS["b"] in text
    edited: list[ChatMessage] = [{"role": "user", "content": "Just say hello."}]
    factory, recorder = fake_factory({"root": Behaviour(stream=("hel", "lo"))})
    streamed: list[str] = []
    result = run_variant(
        plan, "root", OUTPUTS, _variant(plan, messages=edited), 0, factory,
        on_text=streamed.append,
    )  # fmt: skip
    assert result.ok and result.output == "hello"
    assert recorder.prompts["root"] == "Just say hello."
    assert streamed == ["hel", "hello"]
    assert is_hand_edited(edited, rendered) and not is_hand_edited(rendered, rendered)


def test_a_strategy_variant_makes_its_calls_and_totals_them():
    plan = _plan()
    strategy = StrategyConfig(
        kind="best_of_n", samples=3, selector=SelectorConfig(kind="regex", pattern="output")
    )
    factory, recorder = fake_factory()
    result = run_variant(plan, "root", OUTPUTS, _variant(plan, strategy=strategy), 1, factory)
    assert result.ok and result.output == "output of root"
    assert len(result.records) == 3 == len(recorder.calls)
    assert result.output_tokens == sum(r.output_tokens for r in result.records) == 30
    assert result.summary()["variant"] == 2 and "best-of-N ×3" in result.summary()["settings"]


def test_a_failing_or_cancelled_variant_says_so_and_never_raises():
    plan = _plan()
    factory, _ = fake_factory({"root": Behaviour(error=RuntimeError("endpoint down"))})
    failed = run_variant(plan, "root", OUTPUTS, _variant(plan), 0, factory)
    assert not failed.ok and "endpoint down" in (failed.error or "")
    cancel = threading.Event()
    cancel.set()
    factory, _ = fake_factory({"root": Behaviour(stream=("a", "b"), sleep_s=0.2)})
    stopped = run_variant(plan, "root", OUTPUTS, _variant(plan), 0, factory, cancel=cancel)
    assert stopped.cancelled and not stopped.ok
    broken = _variant(plan, instruction="{{ deps.nope")
    bad = run_variant(plan, "root", OUTPUTS, broken, 0, factory)
    assert bad.error and "template" in bad.error and not bad.records
