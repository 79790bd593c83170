"""Grammar-constrained (JSON schema) sampling on the real bundled model: the lazy check (sample,
check the one token against the grammar, resample only when refused) must give output that is
always valid, repeatable for a seed, and identical to the full check when decoding greedily."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.errors import ModelCallFailed
from engine.models import batch_decode, local
from engine.models.base import ChatMessage

#: Nested objects, an enum, bounded arrays and strings: the kinds of limit the planner relies on.
PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "kind": {"type": "string", "enum": ["river", "mountain", "city"]},
        "facts": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "maxLength": 20},
                    "score": {"type": "integer", "enum": [1, 2, 3]},
                },
                "required": ["label", "score"],
            },
        },
    },
    "required": ["name", "kind", "facts"],
}
PROFILE_PROMPT: list[ChatMessage] = [
    {"role": "user", "content": "Describe the river Danube as JSON: its name, kind and facts."}
]
#: Strings no model would write unprompted: its first picks are refused, forcing resamples.
ODD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "enum": ["zqx-17 vortal", "blorp~~tastic 9"]}},
    "required": ["code"],
}
ODD_PROMPT: list[ChatMessage] = [
    {"role": "user", "content": "What is the weather like in Paris today? Answer in JSON."}
]
MAX_TOKENS = 160


def _decode(
    path: Path,
    messages: list[ChatMessage],
    schema: dict[str, Any],
    params: Sequence[batch_decode.SampleParams],
    check: batch_decode.GrammarCheck,
    grammar: str | None = None,
) -> list[batch_decode.SequenceOutput]:
    """Run ``decode`` as ``LocalBackend.complete`` does, holding the model's lock."""
    with local._using(path) as entry:
        prompt = local.render_prompt(entry.llama, messages, (), schema)
        local._ensure_context(
            entry, path, len(prompt.tokens) + len(params) * MAX_TOKENS, "grammar test"
        )
        return batch_decode.decode(
            entry.llama,
            prompt.tokens,
            list(params),
            max_tokens=MAX_TOKENS,
            stop=prompt.stop,
            grammar=prompt.grammar if grammar is None else grammar,
            grammar_check=check,
        )


def _warm(seed: int) -> batch_decode.SampleParams:
    return batch_decode.SampleParams(temperature=1.0, top_p=0.95, seed=seed)


GREEDY = batch_decode.SampleParams(temperature=0.0, top_p=1.0, seed=1)


def _valid(text: str, schema: dict[str, Any]) -> Any:
    payload = json.loads(text)
    jsonschema.validate(payload, schema)
    return payload


@pytest.mark.model
def test_lazy_check_output_is_valid_json_for_the_schema_for_every_seed(bundled_path):
    seeds = [1, 2, 3, 4, 5, 6]
    # Six sequences in one batch: every sequence keeps its own grammar state.
    outputs = _decode(
        bundled_path, PROFILE_PROMPT, PROFILE_SCHEMA, [_warm(s) for s in seeds], "lazy"
    )
    for seed, output in zip(seeds, outputs, strict=True):
        assert output.finish_reason == "stop", f"seed {seed} ran out of tokens: {output.text!r}"
        payload = _valid(output.text, PROFILE_SCHEMA)
        assert 1 <= len(payload["facts"]) <= 3
        # Every generated token was sampled under the grammar, plus the end-of-turn token.
        assert output.grammar_steps == output.completion_tokens + 1
        assert 0 <= output.grammar_resamples < output.grammar_steps
    assert len({o.text for o in outputs}) >= 3, "seeds at temperature 1 should differ"


@pytest.mark.model
def test_the_same_seed_gives_the_same_output_under_the_lazy_check(bundled_path):
    first = _decode(bundled_path, PROFILE_PROMPT, PROFILE_SCHEMA, [_warm(41)], "lazy")[0]
    _decode(bundled_path, ODD_PROMPT, ODD_SCHEMA, [_warm(3)], "lazy")  # something in between
    again = _decode(bundled_path, PROFILE_PROMPT, PROFILE_SCHEMA, [_warm(41)], "lazy")[0]
    assert again == first  # text, token count and resample count alike
    _valid(first.text, PROFILE_SCHEMA)


@pytest.mark.model
def test_refused_picks_are_resampled_under_the_grammar_and_stay_valid(bundled_path):
    seeds = [7, 8, 9, 10]
    outputs = _decode(bundled_path, ODD_PROMPT, ODD_SCHEMA, [_warm(s) for s in seeds], "lazy")
    for output in outputs:
        assert _valid(output.text, ODD_SCHEMA)["code"] in ODD_SCHEMA["properties"]["code"]["enum"]
        assert output.grammar_resamples > 0, "the odd enum should force at least one resample"
        assert output.grammar_resamples < output.grammar_steps


@pytest.mark.model
@pytest.mark.parametrize(
    ("messages", "schema"), [(ODD_PROMPT, ODD_SCHEMA), (PROFILE_PROMPT, PROFILE_SCHEMA)]
)
def test_greedy_output_is_the_same_under_the_lazy_and_the_full_check(
    bundled_path, messages, schema
):
    """At temperature 0 the most likely token is kept when valid, else the most likely valid
    one: the lazy check may not change a single token."""
    lazy = _decode(bundled_path, messages, schema, [GREEDY], "lazy")[0]
    full = _decode(bundled_path, messages, schema, [GREEDY], "full")[0]
    assert lazy.text == full.text
    assert lazy.completion_tokens == full.completion_tokens
    assert lazy.finish_reason == full.finish_reason
    assert full.grammar_resamples == 0 and full.grammar_steps == lazy.grammar_steps
    _valid(lazy.text, schema)
    if schema is ODD_SCHEMA:
        assert lazy.grammar_resamples > 0  # the comparison did exercise the fallback


@pytest.mark.model
def test_a_grammar_llama_cpp_refuses_fails_the_call_and_the_model_still_answers(bundled_path):
    with pytest.raises(ModelCallFailed, match="refused the grammar"):
        _decode(bundled_path, ODD_PROMPT, ODD_SCHEMA, [_warm(1), _warm(2)], "lazy", "root ::= (")
    output = _decode(bundled_path, ODD_PROMPT, ODD_SCHEMA, [_warm(1)], "lazy")[0]
    _valid(output.text, ODD_SCHEMA)


def test_an_unknown_grammar_check_is_refused_by_name():
    params = [batch_decode.SampleParams(temperature=0.0, top_p=1.0, seed=1)]
    with pytest.raises(ValueError, match="'fast'"):
        batch_decode.decode(None, [1], params, max_tokens=1, grammar_check="fast")  # type: ignore[arg-type]
