"""RemoteBackend against real servers: llama_cpp.server and the loopback server
(tests/support/loopback.py).

The loopback server is a real HTTP server speaking the OpenAI wire format; it fails, stalls and
counts on request, and in proxy mode forwards to the real llama_cpp.server, so retries end in a
real model's answer. Nothing here mocks the ``openai`` client or the network.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from engine.errors import CallCancelled, ModelCallFailed, ModelUnavailable
from engine.models import RemoteBackend
from engine.models.remote import RETRY_AFTER_CAP_S
from engine.plan import GenerationConfig
from tests.support.loopback import LoopbackServer

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
TINY = GenerationConfig(temperature=0.0, max_tokens=12, seed=1)
LOOPBACK_REPLY = "Hello from the loopback server, one word at a time."
#: How soon after ``cancel.set()`` a call must have returned.
CANCEL_DEADLINE_S = 0.5


class _TimedCancel(threading.Event):
    """A cancel event that remembers when it was set, to time the call's reaction."""

    set_at: float = float("inf")

    def set(self) -> None:
        self.set_at = time.monotonic()
        super().set()


def _cancel_after(seconds: float) -> _TimedCancel:
    event = _TimedCancel()
    timer = threading.Timer(seconds, event.set)
    timer.daemon = True
    timer.start()
    return event


def _gaps(arrivals: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


# -- streaming against the real model server -------------------------------------------------


@pytest.mark.server
def test_stream_pieces_reach_on_token_and_join_to_the_text(llama_server):
    backend = RemoteBackend(llama_server, "gemma")
    pieces: list[str] = []
    completion = backend.complete(QUESTION, TINY, on_token=pieces.append)
    assert len(pieces) > 1  # streamed, not delivered in one block
    assert "".join(pieces) == completion.text and completion.text.strip()
    # llama_cpp.server sends no usage chunk: one token per delta, input estimated.
    assert completion.usage.output_tokens == len(pieces) <= TINY.max_tokens
    assert completion.usage.input_tokens > 5
    assert completion.finish_reason in {"stop", "length"}


@pytest.mark.server
def test_cost_uses_the_entrys_prices_on_a_real_call(llama_server):
    backend = RemoteBackend(llama_server, "gemma", price_in_per_m=2.0, price_out_per_m=8.0)
    usage = backend.complete(QUESTION, TINY).usage
    expected = (usage.input_tokens * 2.0 + usage.output_tokens * 8.0) / 1e6
    assert backend.cost(usage) == pytest.approx(expected) and expected > 0


def test_server_reported_usage_is_used_and_priced():
    with LoopbackServer() as server:
        backend = RemoteBackend(
            server.base_url, "loopback", price_in_per_m=1.0, price_out_per_m=3.0
        )
        completion = backend.complete([{"role": "user", "content": "one two three"}], TINY)
        assert server.stats.bodies[0]["stream"] is True
        assert server.stats.bodies[0]["stream_options"] == {"include_usage": True}
    # The loopback server counts 3 words + 3 template tokens in, 10 words out.
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (6, 10)
    assert completion.text == LOOPBACK_REPLY and completion.finish_reason == "stop"
    assert backend.cost(completion.usage) == pytest.approx((6 * 1.0 + 10 * 3.0) / 1e6)


def test_usage_is_estimated_when_the_stream_carries_none():
    with LoopbackServer(stream_usage=False) as server:
        pieces: list[str] = []
        completion = RemoteBackend(server.base_url, "m").complete(
            QUESTION, TINY, on_token=pieces.append
        )
    assert completion.usage.output_tokens == len(pieces) == 10
    assert completion.usage.input_tokens > 0


def test_a_server_refusing_stream_options_is_asked_again_without_them():
    with LoopbackServer(reject_params=("stream_options",)) as server:
        backend = RemoteBackend(server.base_url, "m")
        assert backend.complete(QUESTION, TINY).text == LOOPBACK_REPLY
        assert backend.complete(QUESTION, TINY).text == LOOPBACK_REPLY
        # refused once, then remembered: 1 refusal + 2 answers
        assert server.stats.requests == 3
        assert "stream_options" not in server.stats.bodies[-1]


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.server
def test_503s_are_retried_with_growing_backoff_until_the_real_server_answers(llama_server):
    with LoopbackServer(fail_first=2, fail_status=503, upstream=llama_server) as proxy:
        backend = RemoteBackend(proxy.base_url, "gemma", attempts=3, backoff_s=0.2)
        completion = backend.complete(QUESTION, TINY)
        assert completion.text.strip()
        assert proxy.stats.requests == 3
        assert proxy.wait_for(lambda stats: stats.statuses == [503, 503, 200])
        first, second = _gaps(proxy.stats.arrivals)
    # waits are backoff_s * 2**n plus up to backoff_s of jitter
    assert 0.2 <= first < 0.2 + 0.2 + 0.3
    assert 0.4 <= second < 0.4 + 0.2 + 0.3


def test_retry_after_on_429_is_honoured():
    with LoopbackServer(fail_first=1, fail_status=429, retry_after="1") as server:
        backend = RemoteBackend(server.base_url, "m", backoff_s=0.01)
        assert backend.complete(QUESTION, TINY).text == LOOPBACK_REPLY
        (gap,) = _gaps(server.stats.arrivals)
    assert 1.0 <= gap < 1.4  # the header's second, not the 10 ms backoff


def test_retry_after_is_capped():
    assert 1 <= RETRY_AFTER_CAP_S <= 60
    with LoopbackServer(fail_first=1, fail_status=503, retry_after="3600") as server:
        cancel = _cancel_after(0.3)  # the capped wait is still long; cancel cuts it short
        started = time.monotonic()
        with pytest.raises(CallCancelled):
            RemoteBackend(server.base_url, "m").complete(QUESTION, TINY, cancel=cancel)
        assert time.monotonic() - started < 0.3 + CANCEL_DEADLINE_S
        assert server.stats.requests == 1


def test_exhausted_retries_name_the_endpoint_attempts_and_last_status():
    with LoopbackServer(fail_first=100, fail_status=500) as server:
        backend = RemoteBackend(server.base_url, "m", attempts=3, backoff_s=0.01)
        with pytest.raises(ModelCallFailed) as info:
            backend.complete(QUESTION, TINY)
        assert server.stats.requests == 3
    message = str(info.value)
    assert server.base_url in message and "3 attempts" in message and "500" in message


def test_a_bad_request_is_not_retried_and_says_so():
    with LoopbackServer(fail_first=1, fail_status=400) as server:
        with pytest.raises(ModelCallFailed, match=r"rejected the request as invalid \(400") as info:
            RemoteBackend(server.base_url, "m", backoff_s=0.01).complete(QUESTION, TINY)
        assert server.stats.requests == 1
    assert server.base_url in str(info.value)


def test_a_server_that_never_answers_times_out_within_timeout_times_attempts():
    with LoopbackServer(latency_s=60) as server:
        backend = RemoteBackend(server.base_url, "m", timeout_s=0.4, attempts=2, backoff_s=0.05)
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match=r"did not answer within 0\.4 s") as info:
            backend.complete(QUESTION, TINY)
        elapsed = time.monotonic() - started
        assert server.stats.requests == 2
    assert 0.8 <= elapsed < 0.4 * 2 + 0.1 + 0.5  # two timeouts, one short backoff, slack
    assert "2 attempts" in str(info.value) and server.base_url in str(info.value)


# -- errors that are not retried -------------------------------------------------------------


@pytest.mark.server
def test_wrong_key_is_refused_naming_the_variable_never_the_key(keyed_llama_server, monkeypatch):
    base_url, key = keyed_llama_server
    wrong = "sk-arbor-WRONG-0123456789"
    monkeypatch.setenv("ARBOR_REMOTE_TEST_KEY", wrong)
    backend = RemoteBackend(base_url, "gemma", api_key_env="ARBOR_REMOTE_TEST_KEY")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match=r"refused the API key \(401\)") as info:
        backend.complete(QUESTION, TINY)
    assert time.monotonic() - started < 5  # not retried
    message = str(info.value)
    assert "ARBOR_REMOTE_TEST_KEY" in message and base_url in message
    assert wrong not in message and key not in message and "WRONG" not in message
    monkeypatch.setenv("ARBOR_REMOTE_TEST_KEY", key)  # read at call time: the same backend
    assert backend.complete(QUESTION, TINY).text.strip()


def test_a_key_the_endpoint_wants_but_none_configured_says_how_to_set_one():
    with (
        LoopbackServer(api_key="sk-loopback") as server,
        pytest.raises(ModelUnavailable, match="wants an API key") as info,
    ):
        RemoteBackend(server.base_url, "m").complete(QUESTION, TINY)
    assert "api_key_env" in str(info.value)


def test_unknown_model_on_an_openai_style_server_is_a_clear_404():
    with LoopbackServer(models=("small", "large")) as server:
        backend = RemoteBackend(server.base_url, "nonexistent-model")
        with pytest.raises(ModelUnavailable, match="does not serve model 'nonexistent-model'"):
            backend.complete(QUESTION, TINY)
        assert server.stats.requests == 1
        assert RemoteBackend(server.base_url, "small").complete(QUESTION, TINY).text


def test_a_base_url_without_the_api_path_is_a_clear_404():
    with LoopbackServer() as server:
        wrong = server.base_url.removesuffix("/v1")
        with pytest.raises(ModelUnavailable, match="no chat completions endpoint") as info:
            RemoteBackend(wrong, "m").complete(QUESTION, TINY)
    assert "/v1" in str(info.value)


@pytest.mark.server
def test_llama_cpp_server_answers_any_model_name_with_its_one_model(llama_server):
    """A documented limitation, not a wish: llama_cpp.server (0.3.x) falls back to its default
    model for an unknown name and echoes the name back, so a typo cannot be detected there.
    If this starts failing, the server began refusing unknown names: update the README.
    """
    backend = RemoteBackend(llama_server, "no-such-model-anywhere")
    assert backend.complete(QUESTION, GenerationConfig(max_tokens=4, seed=1)).text


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_mid_stream_returns_promptly_with_the_partial_text():
    with LoopbackServer(token_interval_s=0.25) as server:
        backend = RemoteBackend(server.base_url, "m")
        pieces: list[str] = []
        cancel = _cancel_after(0.4)
        with pytest.raises(CallCancelled) as info:
            backend.complete(QUESTION, TINY, on_token=pieces.append, cancel=cancel)
        cancelled_at = time.monotonic()
        assert cancel.is_set()
        assert server.wait_for(lambda stats: stats.disconnects == 1)  # the request was dropped
    assert info.value.partial == "".join(pieces)
    assert LOOPBACK_REPLY.startswith(info.value.partial) and info.value.partial
    assert len(pieces) < 10
    assert cancelled_at - cancel.set_at < CANCEL_DEADLINE_S


def test_cancel_while_waiting_for_the_first_byte_drops_the_request_promptly():
    with LoopbackServer() as server:
        backend = RemoteBackend(server.base_url, "m")
        backend.complete(QUESTION, TINY)  # leaves a kept-alive connection in the pool
        server.behaviour.latency_s = 10  # far longer than the cancel deadline
        cancel = _cancel_after(0.3)
        started = time.monotonic()
        with pytest.raises(CallCancelled) as info:
            backend.complete(QUESTION, TINY, cancel=cancel)
        elapsed = time.monotonic() - started
        assert time.monotonic() - cancel.set_at < CANCEL_DEADLINE_S
        assert server.wait_for(lambda stats: stats.disconnects == 1, timeout_s=1)
        assert server.stats.connections == 1  # the pooled connection was the one dropped
        server.behaviour.latency_s = 0
        assert backend.complete(QUESTION, TINY).text == LOOPBACK_REPLY  # still usable
    assert info.value.partial == ""
    assert 0.3 <= elapsed < 0.3 + CANCEL_DEADLINE_S
    assert backend.drops_waiting_requests


def test_a_cancel_set_before_the_call_sends_nothing():
    with LoopbackServer() as server:
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(CallCancelled):
            RemoteBackend(server.base_url, "m").complete(QUESTION, TINY, cancel=cancel)
        assert server.stats.requests == 0


# -- one client, reused, in parallel ---------------------------------------------------------


def test_one_client_serves_every_call_over_kept_alive_connections():
    with LoopbackServer() as server:
        backend = RemoteBackend(server.base_url, "m")
        client = backend.client()
        for _ in range(3):
            backend.complete(QUESTION, TINY)
        assert backend.client() is client
        assert (server.stats.requests, server.stats.connections) == (3, 1)


def test_parallel_calls_share_the_client_up_to_max_concurrent():
    with LoopbackServer(latency_s=0.3) as server:
        backend = RemoteBackend(server.base_url, "m", max_concurrent=6)
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(backend.complete(QUESTION, TINY).text))
            for _ in range(6)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        elapsed = time.monotonic() - started
        assert results == [LOOPBACK_REPLY] * 6
        assert server.stats.max_in_flight == 6 and server.stats.connections == 6
    assert elapsed < 0.3 * 2  # overlapped, not 6 x 0.3 s one after another


def test_resource_key_is_the_endpoint_and_limits_are_plain_attributes():
    a = RemoteBackend("http://127.0.0.1:9/v1/", "a")
    b = RemoteBackend("http://127.0.0.1:9/v1", "b", max_concurrent=8, price_in_per_m=1.5)
    assert a.resource_key == b.resource_key == "http://127.0.0.1:9/v1"
    a.max_concurrent, a.price_out_per_m, a.timeout_s = 2, 4.0, 5.0  # what the registry does
    assert (a.max_concurrent, b.max_concurrent, b.price_in_per_m) == (2, 8, 1.5)
