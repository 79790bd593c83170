"""A tiny OTLP/HTTP traces receiver on 127.0.0.1 (standard library HTTP server, the official
protobuf definitions to read what arrives), and Arize Phoenix started on loopback.

``OtlpReceiver`` answers ``POST /v1/traces`` with 200 and keeps the decoded spans; set
``status`` (e.g. 500) to make it refuse, ``delay_s`` to make it slow. ``closed_port()`` is a
port nothing listens on (a receiver that is down)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.servers import free_port


class OtlpReceiver:
    """``with OtlpReceiver() as receiver: ... receiver.endpoint`` (the full traces URL)."""

    def __init__(self, *, status: int = 200, delay_s: float = 0.0):
        self.status = status
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []  # path, headers, content type
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.status != 200:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with receiver._lock:
                    for resource_spans in request.resource_spans:
                        attrs = {
                            a.key: a.value.string_value for a in resource_spans.resource.attributes
                        }
                        receiver.resources.append(attrs)
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def wait_for_spans(self, count: int, timeout_s: float = 30.0) -> list[Span]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.05)
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    return free_port()


# -- Arize Phoenix ---------------------------------------------------------------------------
def phoenix_executable() -> str | None:
    """The ``phoenix`` command of this environment, or None when arize-phoenix is missing."""
    found = Path(sys.executable).with_name("phoenix")
    if found.exists():
        return str(found)
    return shutil.which("phoenix")


@contextlib.contextmanager
def serve_phoenix(working_dir: Path, log_path: Path, *, start_s: float = 180.0) -> Iterator[str]:
    """Arize Phoenix on loopback (its own SQLite database in ``working_dir``, no telemetry, no
    MCP server); yields its base URL (OTLP/HTTP at ``/v1/traces``, REST API at ``/v1/...``)."""
    executable = phoenix_executable()
    assert executable, "arize-phoenix is not installed"
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(working_dir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
    }
    for name in list(env):  # the test's own OTLP settings are not Phoenix's
        if name.startswith("OTEL_"):
            env.pop(name)
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + start_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"Phoenix exited at start; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Phoenix did not start within {start_s:.0f} s; {log_path}")
                time.sleep(0.5)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
