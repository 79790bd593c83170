"""OpenAI-compatible servers already running on this machine, found by their usual ports.

Each port gets ``GET http://127.0.0.1:<port>/v1/models`` with a short timeout (a closed port
on loopback answers "connection refused" at once; the timeout only bounds a port where
something listens and does not answer). The answers say which models each server offers, or
why a port that answered cannot be used (not OpenAI-compatible, wants a key). Ports where
nothing listens are only counted. httpx2 is the same client the remote backend uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2 as httpx

from engine.errors import RegistryError
from engine.models.registry import ModelEntry, Registry

#: The servers analysts run, on their default ports.
KNOWN_PORTS: dict[int, str] = {
    11434: "Ollama",
    1234: "LM Studio",
    8080: "llama.cpp server",
    8000: "vLLM or llama_cpp.server",
}
#: Overrides the probed ports: comma-separated numbers (tests, servers on other ports).
PORTS_ENV = "ARBOR_SERVER_PORTS"
PROBE_TIMEOUT_S = 1.5
CONNECT_TIMEOUT_S = 0.5


@dataclass
class ServerFinding:
    """One port that answered: its models, or why they cannot be used."""

    port: int
    label: str
    base_url: str
    models: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None and bool(self.models)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}


def _model_ids(payload: Any) -> list[str] | None:
    """The ids in an OpenAI ``/models`` answer (``{"data": [{"id": ...}]}``); None if not one."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [
        item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def probe(port: int, label: str | None = None, host: str = "127.0.0.1") -> ServerFinding | None:
    """What answers on ``port``; None when nothing listens there."""
    base_url = f"http://{host}:{port}/v1"
    finding = ServerFinding(port, label or KNOWN_PORTS.get(port, "server"), base_url)
    timeout = httpx.Timeout(PROBE_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    try:
        response = httpx.get(f"{base_url}/models", timeout=timeout)
    except httpx.ConnectError:
        return None
    except httpx.TimeoutException:
        finding.problem = (
            f"port {port} accepted a connection but did not answer within {PROBE_TIMEOUT_S:g} s."
        )
        return finding
    except httpx.HTTPError as exc:
        finding.problem = f"port {port} answered but not over HTTP ({type(exc).__name__})."
        return finding
    if response.status_code in (401, 403):
        finding.problem = (
            f"the server on port {port} wants an API key (HTTP {response.status_code}): add it "
            "under 'Add or edit a remote endpoint' with the key's environment variable."
        )
        return finding
    if response.status_code != 200:
        finding.problem = (
            f"port {port} answered HTTP {response.status_code} on /v1/models: not an "
            "OpenAI-compatible server."
        )
        return finding
    try:
        ids = _model_ids(response.json())
    except ValueError:
        ids = None
    if ids is None:
        finding.problem = f"port {port} answered /v1/models without an OpenAI model list."
    elif not ids:
        finding.problem = (
            f"the server on port {port} serves no model yet (its model list is empty)."
        )
    else:
        finding.models = ids
    return finding


def ports_from_env(env: dict[str, str] | None = None) -> list[int] | None:
    """The ports ``$ARBOR_SERVER_PORTS`` names; None when unset. Bad parts are skipped."""
    value = (os.environ if env is None else env).get(PORTS_ENV, "")
    if not value.strip():
        return None
    return [int(part) for part in value.replace(" ", "").split(",") if part.isdigit()]


def detect_servers(
    ports: dict[int, str] | list[int] | None = None, host: str = "127.0.0.1"
) -> list[ServerFinding]:
    """Probe ``ports`` at once; the ports that answered, in order.

    Default: ``$ARBOR_SERVER_PORTS`` when set, else ``KNOWN_PORTS``.
    """
    chosen = (ports_from_env() or KNOWN_PORTS) if ports is None else ports
    labelled = (
        chosen if isinstance(chosen, dict) else {p: KNOWN_PORTS.get(p, "server") for p in chosen}
    )
    if not labelled:
        return []
    with ThreadPoolExecutor(max_workers=len(labelled)) as pool:
        results = pool.map(lambda item: probe(item[0], item[1], host), labelled.items())
        return [finding for finding in results if finding is not None]


def server_model_name(finding: ServerFinding, model: str) -> str:
    """A short registry name: the model id's last path part (llama_cpp.server serves paths)."""
    short = model.rstrip("/").rsplit("/", 1)[-1]
    short = short[: -len(".gguf")] if short.lower().endswith(".gguf") else short
    return f"{short or model} @ {finding.port}"


def mark_server_models(
    findings: list[ServerFinding], registry: Registry
) -> dict[tuple[str, str], str]:
    """``(base_url, model) -> entry name`` for the offered models already registered."""
    offered = {(f.base_url, model) for f in findings for model in f.models}
    return {
        (entry.base_url or "", entry.model or ""): entry.name
        for entry in registry.entries()
        if entry.kind == "remote" and (entry.base_url, entry.model) in offered
    }


def add_server_model(registry: Registry, finding: ServerFinding, model: str) -> ModelEntry:
    """Register ``model`` of a found server as a remote endpoint under a free name."""
    from engine.models.discovery import free_name

    if model not in finding.models:
        raise RegistryError(f"{finding.label} on port {finding.port} does not offer {model!r}.")
    return registry.add_remote(
        free_name(registry, server_model_name(finding, model)), finding.base_url, model
    )


__all__ = [
    "KNOWN_PORTS",
    "ServerFinding",
    "add_server_model",
    "detect_servers",
    "mark_server_models",
    "ports_from_env",
    "probe",
    "server_model_name",
]
