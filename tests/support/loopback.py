"""A tiny, real OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It speaks the wire format the ``openai`` client speaks (``POST /v1/chat/completions`` as JSON or
as a server-sent-event stream with a usage chunk, ``GET /v1/models``), and it misbehaves on
request: a fixed latency before the reply, a slow token stream, the first N calls failing with
429/5xx (with ``Retry-After``), a bearer key it insists on, model names it does not know, and
injected faults (connection resets, bodies that are not JSON, bytes trickled slowly). In
proxy mode it forwards to a real upstream (``llama_cpp.server``) once its failures are spent, so
retries are exercised against the real model server rather than against a script.

It counts what it sees (requests, TCP connections, the most calls in flight at once, clients
that hung up early), which is how tests prove connection reuse, parallelism and dropped requests
without mocking the client. Usage::

    with LoopbackServer(latency_s=0.2) as server:
        backend = RemoteBackend(server.base_url, "loopback")
        ...
        assert server.stats.requests == 1

Change ``server.behaviour`` fields between calls; each request reads them when it arrives.
Standard library only, so it runs wherever the tests run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: How often a waiting handler looks for a client that hung up or a server that is stopping.
POLL_S = 0.02
DEFAULT_REPLY = "Hello from the loopback server, one word at a time."


@dataclass
class Behaviour:
    """What the server does with each chat request. Fields are read per request."""

    #: Seconds before anything (status line included) is sent: the "fixed latency" of a call,
    #: or a server that has not produced its first byte yet. Large values model a hung server.
    latency_s: float = 0.0
    #: Seconds between streamed chunks (a slow token stream).
    token_interval_s: float = 0.0
    #: The answer; streamed as words (each with its leading space) and cut at ``max_tokens``.
    reply: str = DEFAULT_REPLY
    #: The first ``fail_first`` chat requests get ``fail_status`` instead of an answer.
    fail_first: int = 0
    fail_status: int = 503
    #: Sent as the ``Retry-After`` header on failures when set (seconds, or an HTTP date).
    retry_after: str | None = None
    #: When set, requests must carry ``Authorization: Bearer <api_key>`` or get a 401.
    api_key: str | None = None
    #: When set, other model names get OpenAI's 404 ``model_not_found``; None accepts any name.
    models: tuple[str, ...] | None = None
    #: Send the final usage chunk when the client asks (``stream_options.include_usage``).
    stream_usage: bool = True
    #: Request parameters answered with a 400 "unrecognized argument" (e.g. ``stream_options``),
    #: as some OpenAI-compatible servers do with parameters they do not know.
    reject_params: tuple[str, ...] = ()
    #: Proxy mode: forward chat and model requests to this base URL (e.g. a llama_cpp.server's
    #: ``http://127.0.0.1:PORT/v1``) once the failures are spent.
    upstream: str | None = None
    #: Fault injection (all off by default). ``reset``: the connection is reset (TCP RST) with
    #: nothing sent (``reset_after_chunks`` 0) or after that many stream chunks.
    reset: bool = False
    reset_after_chunks: int = 0
    #: ``"chunk"``: a 200 event stream whose chunk is not JSON; ``"body"``: a 200
    #: ``application/json`` answer whose body is not JSON.
    malformed: str | None = None
    #: When positive: the headers go out at once, then the body one byte per this many seconds.
    trickle_interval_s: float = 0.0


@dataclass
class Stats:
    """What the server saw. Read it after the calls; ``lock`` guards updates."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Chat requests received, failed ones included.
    requests: int = 0
    #: TCP connections accepted (fewer than ``requests`` means keep-alive reuse).
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    #: Requests whose client hung up before the answer was complete (a dropped request).
    disconnects: int = 0
    #: ``time.perf_counter()`` when each chat request arrived and when its reply ended.
    arrivals: list[float] = field(default_factory=list)
    finishes: list[float] = field(default_factory=list)
    #: Parsed JSON body of each chat request (model, stream_options, max_tokens ...).
    bodies: list[dict[str, Any]] = field(default_factory=list)
    #: Status code answered to each chat request, in arrival order of the answers.
    statuses: list[int] = field(default_factory=list)


class _ClientGone(Exception):
    """The client closed its connection while the handler was waiting or writing."""


class _QuietHTTPServer(ThreadingHTTPServer):
    """Does not print a traceback when a client drops its connection (tests do that)."""

    daemon_threads = True  # a hung handler must not keep the process alive
    request_queue_size = 128  # a burst of parallel connects must not be refused
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """A ``ThreadingHTTPServer`` in a background thread; a context manager yielding itself."""

    def __init__(self, behaviour: Behaviour | None = None, **fields: Any):
        if behaviour is not None and fields:
            raise TypeError("pass either a Behaviour or its fields, not both")
        self.behaviour = behaviour or Behaviour(**fields)
        self.stats = Stats()
        self._stopping = threading.Event()
        self._httpd: _QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the loopback server is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LoopbackServer:
        handler = type("Handler", (_Handler,), {"loopback": self})
        httpd = _QuietHTTPServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake every waiting handler and close the socket."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------
    def wait_for(self, predicate: Any, timeout_s: float = 2.0) -> bool:
        """Poll ``predicate(stats)`` until it holds or ``timeout_s`` passes; return its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.stats.lock:
                if predicate(self.stats):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)


class _Handler(BaseHTTPRequestHandler):
    loopback: LoopbackServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    # Without TCP_NODELAY each small write after the headers waits for the client's delayed
    # ACK: about 40 ms a call, which real servers (uvicorn, asyncio) do not add.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.loopback.stats.lock:
            self.loopback.stats.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request lines http.server writes to stderr."""

    # -- routing ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        behaviour = self.loopback.behaviour
        if not self._authorised(behaviour):
            return
        if self.path.rstrip("/") == "/v1/models":
            if behaviour.upstream:
                self._proxy(behaviour.upstream, "GET", b"")
                return
            names = behaviour.models or ("loopback",)
            data = [{"id": name, "object": "model", "owned_by": "loopback"} for name in names]
            self._send_json(200, {"object": "list", "data": data})
            return
        self._send_error(404, f"no route for GET {self.path}", "not_found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route for POST {self.path}", "not_found")
            return
        stats = self.loopback.stats
        behaviour = self.loopback.behaviour
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        with stats.lock:
            stats.requests += 1
            number = stats.requests
            stats.arrivals.append(time.perf_counter())
            stats.bodies.append(body)
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        status = 0
        try:
            status = self._chat(behaviour, body, raw, number)
        except _ClientGone:
            with stats.lock:
                stats.disconnects += 1
            self.close_connection = True
        finally:
            with stats.lock:
                stats.in_flight -= 1
                stats.finishes.append(time.perf_counter())
                stats.statuses.append(status)

    def _chat(self, behaviour: Behaviour, body: dict[str, Any], raw: bytes, number: int) -> int:
        """Answer one chat request; returns the status sent."""
        self._wait(behaviour.latency_s)
        if not self._authorised(behaviour):
            return 401
        if number <= behaviour.fail_first:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            self._send_error(
                behaviour.fail_status,
                f"loopback: failing request {number} of {behaviour.fail_first} on purpose",
                "server_error" if behaviour.fail_status >= 500 else "rate_limit_exceeded",
                headers,
            )
            return behaviour.fail_status
        for name in behaviour.reject_params:
            if name in body:
                self._send_error(400, f"Unrecognized request argument supplied: {name}", "")
                return 400
        fault = self._fault(behaviour, body)
        if fault is not None:
            return fault
        if behaviour.upstream:
            return self._proxy(behaviour.upstream, "POST", raw)
        model = str(body.get("model", ""))
        if behaviour.models is not None and model not in behaviour.models:
            self._send_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found",
            )
            return 404
        pieces = _pieces(behaviour.reply, int(body.get("max_tokens") or 1 << 30))
        finish = "length" if "".join(pieces) != behaviour.reply else "stop"
        usage = {
            "prompt_tokens": _prompt_tokens(body.get("messages") or []),
            "completion_tokens": len(pieces),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            options = body.get("stream_options") or {}
            send_usage = behaviour.stream_usage and bool(options.get("include_usage"))
            self._stream(model, pieces, finish, usage if send_usage else None, behaviour)
        else:
            self._send_json(200, _completion(model, "".join(pieces), finish, usage))
        return 200

    # -- injected faults -------------------------------------------------------------------
    def _fault(self, behaviour: Behaviour, body: dict[str, Any]) -> int | None:
        """Misbehave as ``behaviour`` asks; the status sent (0: none), or None for no fault."""
        model = str(body.get("model", ""))
        if behaviour.reset and behaviour.reset_after_chunks <= 0:
            self._reset()
            return 0
        if behaviour.malformed == "body":
            self._send_raw_json(200, b'{"id": "chatcmpl-x", "choices": [{"message": {"con')
            return 200
        if behaviour.malformed == "chunk":
            self._start_chunked(200, "text/event-stream")
            self._chunk(b'data: {"choices": [{"delta": {"content": "Hel\n\n')
            self._chunk(b"data: [DONE]\n\n")
            self._write(b"0\r\n\r\n")
            return 200
        if behaviour.reset:  # after some chunks of a real stream
            self._start_chunked(200, "text/event-stream")
            pieces = _pieces(behaviour.reply, behaviour.reset_after_chunks)
            for piece in pieces:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                chunk = _envelope("chatcmpl-r", model, "chat.completion.chunk", choices=[choice])
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._reset()
            return 200
        if behaviour.trickle_interval_s > 0:
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            data = json.dumps(_completion(model, behaviour.reply, "stop", usage)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(b"")
            for index in range(len(data)):
                self._wait(behaviour.trickle_interval_s)
                self._write(data[index : index + 1])
            return 200
        return None

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing proxy does."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _send_raw_json(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write(data)

    # -- pieces of a reply -----------------------------------------------------------------
    def _authorised(self, behaviour: Behaviour) -> bool:
        if behaviour.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {behaviour.api_key}":
            return True
        self._send_error(401, "Incorrect API key provided.", "invalid_api_key")
        return False

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` but notice at once a client that hangs up or a server stopping."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.loopback._stopping.is_set():
                raise _ClientGone
            readable, _, _ = select.select([sock], [], [], min(remaining, POLL_S))
            if readable:
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK)
                except OSError as exc:
                    raise _ClientGone from exc
                if not peeked:
                    raise _ClientGone
                time.sleep(min(remaining, POLL_S))  # a pipelined request: just keep waiting

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:  # BrokenPipe, ConnectionReset
            raise _ClientGone from exc

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._write(data)

    def _send_error(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        error = {"message": message, "type": "loopback_error", "code": code, "param": None}
        self._send_json(status, {"error": error}, headers)

    def _start_chunked(self, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self._write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def _stream(
        self,
        model: str,
        pieces: list[str],
        finish: str,
        usage: dict[str, int] | None,
        behaviour: Behaviour,
    ) -> None:
        call_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = _envelope(call_id, model, "chat.completion.chunk", choices=[choice])
            return f"data: {json.dumps(chunk)}\n\n".encode()

        self._start_chunked(200, "text/event-stream")
        self._chunk(event({"role": "assistant", "content": ""}))
        for piece in pieces:
            self._wait(behaviour.token_interval_s)
            self._chunk(event({"content": piece}))
        self._chunk(event({}, finish))
        if usage is not None:
            chunk = _envelope(call_id, model, "chat.completion.chunk", choices=[], usage=usage)
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")

    def _proxy(self, upstream: str, method: str, raw: bytes) -> int:
        """Forward this request to ``upstream`` and relay the answer, streaming as it comes."""
        parts = urlsplit(upstream)
        suffix = self.path.split("/v1", 1)[-1]  # our path after /v1, appended to upstream's
        target = parts.path.rstrip("/") + suffix
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        try:
            headers = {"Content-Type": "application/json"}
            if self.headers.get("Authorization"):
                headers["Authorization"] = self.headers["Authorization"]
            connection.request(method, target, body=raw or None, headers=headers)
            answer = connection.getresponse()
            content_type = answer.getheader("Content-Type", "application/json")
            if "text/event-stream" in content_type:
                self._start_chunked(answer.status, content_type)
                while data := answer.read1(65536):
                    self._chunk(data)
                self._write(b"0\r\n\r\n")
            else:
                data = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self._write(data)
            return answer.status
        finally:
            connection.close()


def _pieces(reply: str, max_tokens: int) -> list[str]:
    """The reply as stream deltas: the first word, then each later word with its space."""
    words = reply.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])] if reply else []
    return pieces[: max(0, max_tokens)]


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic stand-in for a tokenizer: words plus a few template tokens a message."""
    return sum(len(str(m.get("content", "")).split()) + 3 for m in messages)


def _envelope(call_id: str, model: str, kind: str, **rest: Any) -> dict[str, Any]:
    return {"id": call_id, "object": kind, "created": int(time.time()), "model": model, **rest}


def _completion(model: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": finish}
    call_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    return _envelope(call_id, model, "chat.completion", choices=[choice], usage=usage)


__all__ = ["Behaviour", "LoopbackServer", "Stats"]
