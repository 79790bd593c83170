"""Model backends behind one interface, GGUF headers, the bundled model and the registry.

``base.py`` is the interface (``Backend.complete``); ``local.py`` (llama-cpp-python, with
``batch_decode.py`` for N samples decoded together) and ``remote.py`` (any OpenAI-compatible
endpoint) implement it; ``gguf.py`` reads GGUF headers and picks chat formats without loading
a model; ``registry.py`` keeps named models and checks them; ``factory.backend_for`` is the one
function that turns a ``ModelRef`` into a backend. Only this package imports ``llama_cpp`` and
``openai``, and only when a backend is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.models.base import Backend, ChatMessage, Completion, TokenCallback, Usage
from engine.models.factory import BackendFactory, backend_for, registry_backend_factory

if TYPE_CHECKING:
    from engine.models.local import LocalBackend
    from engine.models.remote import RemoteBackend

__all__ = [
    "Backend",
    "BackendFactory",
    "ChatMessage",
    "Completion",
    "LocalBackend",
    "RemoteBackend",
    "TokenCallback",
    "Usage",
    "backend_for",
    "registry_backend_factory",
]


def __getattr__(name: str) -> Any:
    # The backends import their model libraries (openai is ~0.5 s); load them on first use.
    if name == "LocalBackend":
        from engine.models.local import LocalBackend

        return LocalBackend
    if name == "RemoteBackend":
        from engine.models.remote import RemoteBackend

        return RemoteBackend
    raise AttributeError(f"module 'engine.models' has no attribute {name!r}")
