"""Model backends against real models: the bundled GGUF in-process and llama_cpp.server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from engine.errors import ModelCallFailed, ModelUnavailable
from engine.models import LocalBackend, RemoteBackend, backend_for
from engine.models.local import detect_chat_format
from engine.plan import GenerationConfig, ModelRef
from tests.support.servers import free_port

SHORT = GenerationConfig(temperature=0.0, max_tokens=32, seed=1)
QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": 40}},
    "required": ["answer"],
}


# -- local: the real bundled model ----------------------------------------------------------


@pytest.mark.model
def test_local_bundled_model_returns_text_usage_and_latency(bundled_path):
    completion = LocalBackend(bundled_path).complete(QUESTION, SHORT)
    assert completion.text.strip()
    assert completion.usage.input_tokens > 5  # the question plus the chat template
    assert 0 < completion.usage.output_tokens <= SHORT.max_tokens
    assert completion.latency_s > 0
    assert completion.model == bundled_path.name
    assert completion.finish_reason in {"stop", "length"}


@pytest.mark.model
def test_local_model_honours_a_json_schema(bundled_path):
    completion = LocalBackend(bundled_path).complete(
        [{"role": "user", "content": "What colour is the sky? Answer as JSON."}],
        GenerationConfig(temperature=0.0, max_tokens=48, seed=1),
        json_schema=ANSWER_SCHEMA,
    )
    payload = json.loads(completion.text)
    assert isinstance(payload["answer"], str) and 1 <= len(payload["answer"]) <= 40


@pytest.mark.model
def test_local_max_tokens_bounds_the_output(bundled_path):
    completion = LocalBackend(bundled_path).complete(
        [{"role": "user", "content": "Write a long story about a dragon."}],
        GenerationConfig(temperature=0.0, max_tokens=16, seed=1),
    )
    assert completion.usage.output_tokens <= 16
    assert completion.finish_reason == "length"


@pytest.mark.model
def test_bundled_model_is_loaded_once_with_the_gemma_chat_format(bundled_path):
    first = LocalBackend(bundled_path)._model()
    second = LocalBackend(str(bundled_path))._model()
    assert first is second
    assert first.llama.chat_format == "gemma"  # the GGUF has no template of its own
    assert backend_for(ModelRef()).path == bundled_path


@pytest.mark.model
def test_local_count_tokens_uses_the_models_tokenizer(bundled_path):
    backend = LocalBackend(bundled_path)
    text = "The quick brown fox jumps over the lazy dog."
    count = backend.count_tokens(text)
    assert 5 <= count <= 15
    assert backend.count_tokens(text * 4) >= 4 * count - 4


@pytest.mark.model
def test_concurrent_calls_to_one_local_model_are_serialised_and_both_answer(bundled_path):
    backend = LocalBackend(bundled_path)
    loaded = backend._model()
    results: list = []
    errors: list = []
    holding = []

    def call() -> None:
        try:
            results.append(backend.complete(QUESTION, GenerationConfig(max_tokens=16, seed=2)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch() -> None:  # the lock must be held while a call decodes
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(results) < 2:
            holding.append(loaded.lock.locked())
            time.sleep(0.01)

    threads = [threading.Thread(target=call) for _ in range(2)] + [threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(results) == 2 and all(r.text.strip() for r in results)
    assert any(holding)


def test_missing_model_file_is_unavailable_and_names_the_path(tmp_path):
    missing = tmp_path / "models" / "absent.gguf"
    backend = LocalBackend(missing)
    with pytest.raises(ModelUnavailable, match="not found") as info:
        backend.complete(QUESTION, SHORT)
    assert str(missing) in str(info.value)
    with pytest.raises(ModelUnavailable, match=r"absent\.gguf"):
        backend.check()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file", b"PK\x03\x04 a zip archive"],
    ids=["empty", "text", "zip"],
)
def test_non_gguf_file_is_unavailable(tmp_path, content):
    fake = tmp_path / "notes.gguf"
    fake.write_bytes(content)
    with pytest.raises(ModelUnavailable, match="not a GGUF model file") as info:
        LocalBackend(fake).complete(QUESTION, SHORT)
    assert str(fake) in str(info.value)


def test_directory_instead_of_model_file_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="not a file"):
        LocalBackend(tmp_path).check()


def test_gguf_magic_with_garbage_body_is_unavailable_not_a_crash(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00garbage" * 64)
    with pytest.raises(ModelUnavailable, match="could not load") as info:
        LocalBackend(broken).check()
    assert str(broken) in str(info.value)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"general.architecture": "gemma3"}, "gemma"),
        ({"general.architecture": "qwen2"}, "chatml"),
        ({"general.architecture": "something-new"}, "chatml"),
        ({"general.architecture": "gemma3", "tokenizer.chat_template": "{{ x }}"}, None),
    ],
)
def test_chat_format_is_chosen_only_when_the_file_has_no_template(metadata, expected):
    assert detect_chat_format(metadata) == expected


# -- remote: a real llama_cpp.server on loopback --------------------------------------------


@pytest.mark.server
def test_remote_server_returns_text_and_usage(llama_server):
    backend = RemoteBackend(llama_server, "gemma")
    assert backend.check() == f"gemma@{llama_server}"
    completion = backend.complete(QUESTION, SHORT)
    assert completion.text.strip()
    assert completion.usage.input_tokens > 5
    assert 0 < completion.usage.output_tokens <= SHORT.max_tokens
    assert completion.latency_s > 0
    assert completion.model == f"gemma@{llama_server}"


@pytest.mark.server
def test_remote_json_schema_request_is_honoured_by_llama_cpp_server(llama_server, monkeypatch):
    """llama_cpp.server refuses OpenAI's json_schema format; the backend must fall back."""
    from engine.models import remote

    monkeypatch.setattr(remote, "_NO_JSON_SCHEMA_FORMAT", set())  # forget earlier tests
    backend = RemoteBackend(llama_server + "/", "gemma")  # trailing slash is normalised
    for _ in range(2):  # the second call goes straight to the accepted format
        completion = backend.complete(
            [{"role": "user", "content": "What colour is the sky? Answer as JSON."}],
            GenerationConfig(temperature=0.0, max_tokens=48, seed=1),
            json_schema=ANSWER_SCHEMA,
        )
        payload = json.loads(completion.text)
        assert isinstance(payload["answer"], str) and 1 <= len(payload["answer"]) <= 40
        assert llama_server in remote._NO_JSON_SCHEMA_FORMAT


@pytest.mark.server
def test_remote_key_is_sent_from_the_named_variable_and_a_wrong_key_is_unavailable(
    keyed_llama_server, monkeypatch
):
    base_url, key = keyed_llama_server
    monkeypatch.setenv("ARBOR_TEST_GOOD_KEY", key)
    monkeypatch.setenv("ARBOR_TEST_BAD_KEY", "sk-wrong")
    good = RemoteBackend(base_url, "gemma", api_key_env="ARBOR_TEST_GOOD_KEY")
    assert good.complete(QUESTION, GenerationConfig(max_tokens=8, seed=1)).text.strip()
    bad = RemoteBackend(base_url, "gemma", api_key_env="ARBOR_TEST_BAD_KEY")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="refused the API key") as info:
        bad.complete(QUESTION, SHORT)
    assert time.monotonic() - started < 5  # a 401 is not retried
    assert "ARBOR_TEST_BAD_KEY" in str(info.value) and "sk-wrong" not in str(info.value)


def test_unreachable_endpoint_is_unavailable_quickly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = RemoteBackend(url, "gemma", attempts=3)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="Cannot reach") as info:
        backend.complete(QUESTION, SHORT)
    assert time.monotonic() - started < 10
    assert url in str(info.value) and "3 attempts" in str(info.value)


def test_missing_api_key_variable_is_unavailable_and_names_the_variable(monkeypatch):
    monkeypatch.delenv("ARBOR_TEST_UNSET_KEY", raising=False)
    backend = backend_for(
        ModelRef(
            kind="remote",
            base_url="http://127.0.0.1:9/v1",
            model="m",
            api_key_env="ARBOR_TEST_UNSET_KEY",
        )
    )
    with pytest.raises(ModelUnavailable, match="ARBOR_TEST_UNSET_KEY is not set"):
        backend.complete(QUESTION, SHORT)
    monkeypatch.setenv("ARBOR_TEST_UNSET_KEY", "")
    with pytest.raises(ModelUnavailable, match="ARBOR_TEST_UNSET_KEY"):
        backend.check()


@pytest.mark.parametrize(
    ("base_url", "model", "message"),
    [("", "m", "needs a base URL"), ("http://127.0.0.1:9/v1", "", "needs a model name")],
)
def test_incomplete_remote_reference_is_unavailable(base_url, model, message):
    with pytest.raises(ModelUnavailable, match=message):
        RemoteBackend(base_url, model)


def test_model_errors_share_the_arbor_error_base():
    from engine.errors import ArborError

    assert issubclass(ModelUnavailable, ArborError) and issubclass(ModelCallFailed, ArborError)
