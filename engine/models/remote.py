"""Remote OpenAI-compatible endpoints through the ``openai`` client.

Every call streams (``stream=True`` with ``stream_options.include_usage``), so text reaches
``on_token`` as it is generated and a cancelled call can be dropped between two chunks. The API
key is read from the environment variable the model reference names, at call time, and sent as a
per-request header: no key is stored in a plan, session, trace, log or error message.

Transient failures (connection errors, timeouts, 429 and 5xx) are retried by tenacity with
exponential backoff and jitter, honouring ``Retry-After`` up to ``RETRY_AFTER_CAP_S``; the waits
end early when the call is cancelled. Everything else fails at once with a named error that says
which endpoint refused what, and what to do about it.

Cancelling a call that is still waiting for the server's first byte cannot be done by checking a
flag between chunks: the thread is blocked in ``recv``. So each backend's HTTP pool connects
through ``_TrackedBackend``, which remembers which socket the calling thread is using, and one
watcher thread shuts that socket down when the call's ``cancel`` event is set. The blocked read
returns at once, the server sees the connection close (the request is dropped, not abandoned),
and the call raises ``CallCancelled`` with whatever text had arrived.

One backend class on purpose (~800 lines): streaming, retries, cancel and the error explanations
share one call's state and read best together.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

# openai >= 3 (the only major pyproject allows) ships on httpx2, a fork with httpx's API.
import httpcore2 as httpcore
import httpx2 as httpx
import openai
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from engine.errors import CallCancelled, ModelCallFailed, ModelUnavailable
from engine.models.base import (
    RAW_PROMPT_FORMATS,
    Backend,
    ChatMessage,
    Completion,
    TokenCallback,
    Usage,
)
from engine.plan import GenerationConfig
from engine.redaction import redact

# A local server without a key still wants a non-empty bearer token from the client.
NO_KEY_PLACEHOLDER = "not-needed"
#: A ``Retry-After`` longer than this is cut to it: a run should not sit idle for minutes.
RETRY_AFTER_CAP_S = 30.0
#: Exponential backoff never waits longer than this between two attempts.
BACKOFF_MAX_S = 8.0
#: Connecting is quick or not happening; a long ``timeout_s`` is for slow generation.
CONNECT_TIMEOUT_CAP_S = 10.0
#: How often the watcher looks at in-flight calls' cancel events (the cancel latency).
CANCEL_POLL_S = 0.02
#: Chat templates add a few tokens per message; used only when the server reports no usage.
TEMPLATE_TOKENS_PER_MESSAGE = 4
#: Connections beyond ``max_concurrent`` the pool may open (a call being torn down while the
#: next one starts), so a pool slot never becomes the bottleneck.
POOL_HEADROOM = 4

#: Endpoints known to refuse OpenAI's ``json_schema`` response format (llama_cpp.server answers
#: 500 with a validation error); they get ``{"type": "json_object", "schema": ...}`` instead.
_NO_JSON_SCHEMA_FORMAT: set[str] = set()
#: Endpoints that refused ``stream_options``; they are streamed without it (usage estimated).
_NO_STREAM_OPTIONS: set[str] = set()

_T = TypeVar("_T")


# -- errors -------------------------------------------------------------------------------------
def _rejects(exc: BaseException | None, parameter: str) -> bool:
    """True for an error response that complains about the request ``parameter`` itself."""
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422, 500)
        and parameter in str(exc)
    )


def _rejects_response_format(exc: BaseException | None) -> bool:
    return _rejects(exc, "response_format")


def _is_transient(exc: BaseException) -> bool:
    """Worth another attempt: the same request may well succeed in a moment."""
    if _rejects_response_format(exc) or _rejects(exc, "stream_options"):
        return False  # the server will refuse it again; the caller changes the request
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    # APIConnectionError covers APITimeoutError and a stream cut mid-way.
    return isinstance(exc, openai.APIConnectionError)


def _retry_after_s(exc: BaseException | None) -> float | None:
    """The server's requested wait from ``Retry-After`` / ``retry-after-ms``, if it sent one."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own explanation (``error.message`` in OpenAI's format), one line."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:500]
    return " ".join(str(exc.message).split())[:500]


def _mentions_model(exc: openai.APIStatusError) -> bool:
    body = exc.body
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code") or code
    text = _server_message(exc).lower()
    return code == "model_not_found" or (
        "model" in text and any(w in text for w in ("not found", "does not exist", "unknown"))
    )


# -- cancelling a call that is blocked on the network ------------------------------------------
class _Call:
    """One call's network activity, so that a cancel from another thread can drop it."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self._lock = threading.Lock()
        self._stream: Any = None
        self._aborted = False
        self._done = False

    def attach(self, stream: Any) -> None:
        """The calling thread is about to read or write ``stream`` for this call."""
        with self._lock:
            if self._done:
                return
            self._stream = stream
            aborted = self._aborted
        if aborted:
            _shutdown(stream)

    def abort(self) -> None:
        """Shut the call's socket down: a blocked ``recv`` returns and the server sees EOF."""
        with self._lock:
            if self._aborted or self._done:
                return
            self._aborted = True
            stream = self._stream
        if stream is not None:
            _shutdown(stream)

    def finish(self) -> None:
        """The call is over; its connection may go back to the pool and must not be touched."""
        with self._lock:
            self._done = True
            self._stream = None


def _shutdown(stream: Any) -> None:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed: nothing left to drop
            sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


class _TrackedStream(httpcore.NetworkStream):
    """A connection that tells the calling thread's ``_Call`` it is in use."""

    def __init__(self, inner: Any):
        self._inner = inner

    def _track(self) -> None:
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._track()
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._track()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        return _TrackedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TrackedBackend(httpcore.NetworkBackend):
    """The pool's network backend, handing out ``_TrackedStream`` connections."""

    def __init__(self, inner: Any):
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _TrackedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:
        stream = self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _TrackedStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _track_connections(client: Any) -> bool:
    """Route ``client``'s connection pools through ``_TrackedBackend``; False if not possible.

    httpx has no public hook for the network backend of the pool its transport builds, so this
    reaches into ``HTTPTransport._pool``; if a future release moves it, calls still work and
    cancel falls back to between-chunk checks (tests/engine/models/test_remote_backend.py notices).
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    tracked = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.ConnectionPool) and hasattr(pool, "_network_backend"):
            pool._network_backend = _TrackedBackend(pool._network_backend)
            tracked = True
    return tracked


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: building one loads the CA store (about 30 ms here),
    which a run would otherwise pay for each backend it creates. Contexts are thread-safe."""
    return httpx.create_ssl_context()


class _CancelWatcher:
    """One daemon thread that aborts in-flight calls whose cancel event has been set.

    A ``threading.Event`` cannot be waited on together with a socket, so the watcher polls the
    in-flight calls every ``CANCEL_POLL_S``; it runs only while there are some.
    """

    def __init__(self) -> None:
        self._calls: set[_Call] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, call: _Call) -> None:
        with self._lock:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="arbor-remote-cancel", daemon=True
                )
                self._thread.start()

    def discard(self, call: _Call) -> None:
        with self._lock:
            self._calls.discard(call)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    self._thread = None
                    return
                calls = list(self._calls)
            for call in calls:
                if call.cancel.is_set():
                    call.abort()
            time.sleep(CANCEL_POLL_S)


_watcher = _CancelWatcher()


# -- the backend --------------------------------------------------------------------------------
class _Dropped(Exception):
    """Raised inside a stream to leave it when the call is cancelled."""


@dataclass
class _Streamed:
    """What one streamed attempt produced."""

    pieces: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None


def _sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined; comments skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def _absorb(payload: Any, out: _Streamed, on_token: TokenCallback | None, *, whole: bool) -> None:
    """Add one chunk (or, ``whole``, a complete non-streamed answer) to ``out``."""
    if not isinstance(payload, dict):
        return
    if isinstance(payload.get("usage"), dict):
        out.usage = payload["usage"]
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue  # only one sample is asked for
        part = choice.get("message" if whole else "delta") or {}
        piece = part.get("content") if isinstance(part, dict) else None
        if piece is None and isinstance(choice.get("text"), str):
            piece = choice["text"]  # the completions endpoint (raw prompts)
        if piece:
            out.pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        if choice.get("finish_reason"):
            out.finish_reason = choice["finish_reason"]


class RemoteBackend(Backend):
    """One model on one OpenAI-compatible endpoint.

    ``max_concurrent``, the prices and ``timeout_s`` are plain attributes: the registry may set
    them after construction. The HTTP client is built on the first call (sized for
    ``max_concurrent`` then) and reused by every later call from any thread.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        attempts: int = 3,
        max_concurrent: int = 4,
        price_in_per_m: float = 0.0,
        price_out_per_m: float = 0.0,
        backoff_s: float = 0.5,
    ):
        """``timeout_s`` bounds connecting (at most ``CONNECT_TIMEOUT_CAP_S``) and each wait for
        the next bytes, not the whole call: a long answer streamed steadily is not cut.
        ``attempts`` counts the first try; ``backoff_s`` is the first retry's wait, doubling.
        """
        if not base_url:
            raise ModelUnavailable(
                "A remote model needs a base URL, e.g. http://127.0.0.1:8000/v1."
            )
        if not model:
            raise ModelUnavailable(f"A remote model at {redact(base_url)} needs a model name.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.max_concurrent = max_concurrent
        self.price_in_per_m = price_in_per_m
        self.price_out_per_m = price_out_per_m
        self.backoff_s = backoff_s
        #: The URL as shown in labels, errors and traces: credentials an older file left in
        #: it are masked (new entries with credentials are refused, ``engine.redaction``).
        self.shown_url = redact(self.base_url)
        self.label = f"{model}@{self.shown_url}"
        self._client_lock = threading.Lock()
        self._client: openai.OpenAI | None = None
        self._pool_size = 0
        self._retired: list[openai.OpenAI] = []
        #: False when the HTTP pool could not be instrumented (see ``_track_connections``).
        self.drops_waiting_requests = False

    @property
    def resource_key(self) -> str:
        """The endpoint: every model behind one server shares its ``max_concurrent`` slots.

        The limit protects the server (one llama_cpp.server process answers one request at a
        time whatever the model name; a vLLM or hosted API shares its capacity or rate limit
        across models), so two model names on one URL must not each get the full limit.
        """
        return self.base_url

    # -- client --------------------------------------------------------------------------------
    def client(self) -> openai.OpenAI:
        """The backend's one ``openai.OpenAI``, created on first use; safe to share by threads.

        Its pool keeps ``max_concurrent`` connections alive for reuse. If ``max_concurrent`` is
        raised after the first call, the next call builds a bigger client (the old one is
        closed by ``close``).
        """
        size = max(1, int(self.max_concurrent))
        with self._client_lock:
            if self._client is None or size > self._pool_size:
                if self._client is not None:
                    self._retired.append(self._client)
                http_client = httpx.Client(
                    limits=httpx.Limits(
                        max_connections=size + POOL_HEADROOM,
                        max_keepalive_connections=size,
                        keepalive_expiry=30.0,
                    ),
                    timeout=self._timeout(),
                    follow_redirects=True,
                    verify=_ssl_context(),
                )
                self.drops_waiting_requests = _track_connections(http_client)
                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=NO_KEY_PLACEHOLDER,  # the real key goes per request, see _headers
                    max_retries=0,  # retries are ours: backoff, Retry-After, cancel
                    http_client=http_client,
                    # The SDK would send OPENAI_ORG_ID / OPENAI_PROJECT_ID to any endpoint;
                    # Arbor sends nothing from the environment but the named key variable.
                    # (The SDK types the argument Mapping[str, str], but its own merge of
                    # default headers drops Omit values: that is how a default is removed.)
                    default_headers={
                        "OpenAI-Organization": openai.omit,  # type: ignore[dict-item]
                        "OpenAI-Project": openai.omit,  # type: ignore[dict-item]
                    },
                )
                self._pool_size = size
            return self._client

    def close(self) -> None:
        """Close the HTTP connections. The backend stays usable: a later call reconnects."""
        with self._client_lock:
            clients = [*self._retired, *([self._client] if self._client else [])]
            self._client, self._pool_size, self._retired = None, 0, []
        for client in clients:
            client.close()

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_CAP_S))

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ModelUnavailable(
                f"Environment variable {self.api_key_env} is not set; it should hold the API "
                f"key for {self.shown_url}. Set it and try again."
            )
        return key

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    # -- calls ---------------------------------------------------------------------------------
    def check(self) -> str:
        """Ask the endpoint for its model list: proves the URL, the server and the key."""
        headers = self._headers()
        client = self.client()
        self._run(
            lambda: client.models.list(extra_headers=headers, timeout=self._timeout()), None, None
        )
        return self.label

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Stream one chat completion; see the module docstring for retries and cancel.

        Usage comes from the server's final usage chunk. Servers that send none (llama_cpp.server
        ignores ``stream_options``) get an estimate: one output token per streamed content
        delta (llama.cpp-based and OpenAI servers send one token per delta) and the input counted
        by ``count_tokens`` plus ``TEMPLATE_TOKENS_PER_MESSAGE`` a message.

        A failure after text has reached ``on_token`` is not retried (the callback would see the
        text twice); without ``on_token`` a broken stream is retried like any transient error.
        """
        if cancel is not None and cancel.is_set():
            raise CallCancelled(f"Call to {self.label} cancelled before it started.")
        headers = self._headers()
        client = self.client()
        kwargs = self._request(messages, config, json_schema)
        streamed = _Streamed()
        started = time.perf_counter()

        def attempt() -> _Streamed:
            nonlocal streamed
            streamed = _Streamed()
            self._stream_once(client, kwargs, headers, streamed, on_token, cancel)
            return streamed

        while True:
            try:
                result = self._run(attempt, cancel, on_token, lambda: streamed.pieces)
                break
            except (ModelCallFailed, ModelUnavailable) as exc:
                cause = exc.__cause__
                fmt = kwargs.get("response_format", {}).get("type")
                if fmt == "json_schema" and _rejects_response_format(cause):
                    _NO_JSON_SCHEMA_FORMAT.add(self.base_url)
                    kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
                elif "stream_options" in kwargs and _rejects(cause, "stream_options"):
                    _NO_STREAM_OPTIONS.add(self.base_url)
                    kwargs.pop("stream_options")
                else:
                    raise
        latency = time.perf_counter() - started
        text = "".join(result.pieces)
        if result.usage is not None:
            usage = Usage(
                int(result.usage.get("prompt_tokens") or 0),
                int(result.usage.get("completion_tokens") or 0),
            )
        else:
            prompt = "\n".join(message["content"] for message in messages)
            usage = Usage(
                self.count_tokens(prompt) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages),
                len(result.pieces),
            )
        return Completion(
            text=text,
            usage=usage,
            latency_s=latency,
            model=self.label,
            finish_reason=result.finish_reason,
        )

    def _request(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        json_schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
            "stream": True,
        }
        if config.prompt_format in RAW_PROMPT_FORMATS and json_schema is None:
            # A base model's prompt goes out as text to the completions endpoint, no template.
            kwargs["prompt"] = "\n\n".join(message["content"] for message in messages)
        else:
            kwargs["messages"] = messages
        if self.base_url not in _NO_STREAM_OPTIONS:
            kwargs["stream_options"] = {"include_usage": True}
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "arbor_output", "schema": json_schema},
            }
            if self.base_url in _NO_JSON_SCHEMA_FORMAT:
                kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        return kwargs

    def _stream_once(
        self,
        client: openai.OpenAI,
        kwargs: dict[str, Any],
        headers: dict[str, str],
        out: _Streamed,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        """One attempt: open the stream and read it to its end into ``out``.

        The SSE lines are read here rather than through the SDK's ``Stream``, which stops at
        ``[DONE]`` and closes the response before the body's last bytes: the connection would
        then be closed instead of going back to the pool, and every call would reconnect.
        """
        create: Callable[..., Any] = (
            client.completions.with_streaming_response.create
            if "prompt" in kwargs
            else client.chat.completions.with_streaming_response.create
        )
        with create(**kwargs, extra_headers=headers, timeout=self._timeout()) as response:
            request = response.http_request
            try:
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A server that ignores stream=True and answers with one JSON body.
                    try:
                        answer = json.loads(response.read())
                    except ValueError as exc:
                        raise ModelCallFailed(
                            f"{self.shown_url} answered with neither an event stream nor JSON "
                            f"({response.headers.get('content-type')}). Check the base URL."
                        ) from exc
                    _absorb(answer, out, on_token, whole=True)
                    return
                for data in _sse_data(response.iter_lines()):
                    if cancel is not None and cancel.is_set():
                        raise _Dropped  # leaving closes the response: the request is dropped
                    if data.startswith("[DONE]"):
                        continue  # read on to the end of the body so the connection is reused
                    try:
                        payload = json.loads(data)
                    except ValueError as exc:
                        raise ModelCallFailed(
                            f"{self.shown_url} sent a stream chunk that is not JSON: {data[:200]!r}"
                            ". Is this an OpenAI-compatible endpoint?"
                        ) from exc
                    if isinstance(payload, dict) and payload.get("error"):
                        error = payload["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise openai.APIError(
                            f"error in the stream: {message}", request, body=payload["error"]
                        )
                    _absorb(payload, out, on_token, whole=False)
            except httpx.TimeoutException as exc:
                raise openai.APITimeoutError(request=request) from exc
            except httpx.TransportError as exc:  # the connection broke mid-stream
                raise openai.APIConnectionError(message=str(exc), request=request) from exc

    def _run(
        self,
        fn: Callable[[], _T],
        cancel: threading.Event | None,
        on_token: TokenCallback | None,
        partial: Callable[[], list[str]] = list,
    ) -> _T:
        """Call ``fn`` with retries, cancel support and errors translated to Arbor's."""
        call = _Call(cancel) if cancel is not None else None

        def cancelled() -> CallCancelled:
            return CallCancelled(f"Call to {self.label} cancelled.", "".join(partial()))

        def guarded() -> _T:
            if cancel is not None and cancel.is_set():
                raise cancelled()
            _current.call = call
            try:
                result = fn()
            except BaseException as exc:
                if cancel is not None and cancel.is_set():
                    raise cancelled() from exc
                raise
            finally:
                _current.call = None
            return result  # a call that finished as the cancel came keeps its answer

        def should_retry(exc: BaseException) -> bool:
            # Text already shown through on_token must not be shown twice by a retry.
            return _is_transient(exc) and not (on_token is not None and partial())

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            after = _retry_after_s(exc)
            if after is not None:
                return min(after, RETRY_AFTER_CAP_S)
            # ``initial`` rather than 9.2's ``multiplier``: arize-phoenix's google-genai pins
            # tenacity below 9.2, so the test environment resolves to 9.1.
            backoff = wait_exponential_jitter(
                initial=self.backoff_s, max=BACKOFF_MAX_S, jitter=self.backoff_s
            )
            return backoff(state)

        def sleep(seconds: float) -> None:
            if cancel is None:
                time.sleep(seconds)
            elif cancel.wait(seconds):
                raise cancelled()

        retrying = Retrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=wait,
            sleep=sleep,
            reraise=False,
        )
        if call is not None:
            _watcher.add(call)
        try:
            return retrying(guarded)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise self._explain(last, exc.last_attempt.attempt_number) from last
        except openai.OpenAIError as exc:  # not worth retrying: a 401, 404, 400 ...
            if on_token is not None and partial() and _is_transient(exc):
                raise ModelCallFailed(
                    f"The answer from {self.shown_url} broke off after {len(partial())} pieces "
                    f"({self._redact(str(exc))}); not retried, as that text was already "
                    "streamed."
                ) from exc
            raise self._explain(exc, retrying.statistics.get("attempt_number", 1)) from exc
        finally:
            if call is not None:
                _watcher.discard(call)
                call.finish()

    def _explain(self, exc: BaseException | None, attempts: int) -> Exception:
        """An Arbor error for a failed call: which endpoint, what went wrong, what to do."""
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable(
                f"{self.shown_url} did not answer within {self.timeout_s:g} s ({tries}). "
                "Is the server overloaded, or does this model need a longer timeout?"
            )
        if isinstance(exc, openai.APIConnectionError) and "peer closed" in str(exc):
            return ModelCallFailed(
                f"{self.shown_url} closed the connection mid-answer ({tries}): "
                f"{self._redact(str(exc))}. llama_cpp.server does this to a streaming request "
                "when another request arrives: start it with --interrupt_requests False, or "
                "set this endpoint's max concurrent requests to 1."
            )
        if isinstance(exc, openai.APIConnectionError) and isinstance(
            exc.__cause__, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError
        ):
            # Connected, then dropped before an answer: not an unreachable server.
            return ModelUnavailable(
                f"{self.shown_url} closed the connection before answering ({tries}): "
                f"{self._redact(str(exc.__cause__))}. Is the server crashing or overloaded, or "
                "a proxy in between cutting requests?"
            )
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable(
                f"Cannot reach {self.shown_url} ({tries}): {self._redact(str(exc))}. "
                "Is the server running and the URL right?"
            )
        if not isinstance(exc, openai.APIStatusError):
            return ModelCallFailed(f"{self.shown_url} failed ({tries}): {self._redact(str(exc))}")
        status = exc.status_code
        message = self._redact(_server_message(exc))
        if status in (401, 403):
            # The server's message is left out: OpenAI's echoes part of the key.
            if self.api_key_env:
                return ModelUnavailable(
                    f"{self.shown_url} refused the API key ({status}). Check the key in "
                    f"environment variable {self.api_key_env}."
                )
            return ModelUnavailable(
                f"{self.shown_url} wants an API key ({status}). Name the environment variable "
                "that holds it in the model's API key setting (api_key_env)."
            )
        if status == 404 and _mentions_model(exc):
            return ModelUnavailable(
                f"{self.shown_url} does not serve model {self.model!r} (404: {message}). Check "
                f"the model name; {self.shown_url}/models lists the ones it serves."
            )
        if status == 404:
            return ModelUnavailable(
                f"{self.shown_url} has no chat completions endpoint (404: {message}). Check the "
                "base URL; OpenAI-compatible servers usually end it in /v1."
            )
        if status in (400, 422) and _mentions_model(exc):
            return ModelUnavailable(
                f"{self.shown_url} does not know model {self.model!r} ({status}: {message}). "
                "Check the model name."
            )
        if status in (400, 422):
            return ModelCallFailed(
                f"{self.shown_url} rejected the request as invalid ({status}: {message}). "
                "Check the node's generation settings (max tokens, stop strings) for this model."
            )
        if _is_transient(exc):
            return ModelCallFailed(
                f"{self.shown_url} kept failing: gave up after {tries}; the last answer was "
                f"{status}: {message}. Try again later or lower the endpoint's parallel calls."
            )
        return ModelCallFailed(f"{self.shown_url} rejected the request ({status}: {message}).")

    def _redact(self, text: str) -> str:
        """``text`` without the API key (should a server echo it back) or URL credentials."""
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        text = text.replace(self.base_url, self.shown_url)
        return redact(text.replace(key, "***") if len(key) >= 4 else text)
