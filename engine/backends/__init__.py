"""Model backends behind one interface, and the function that picks one for a model reference."""

from __future__ import annotations

from engine.backends.base import Backend, ChatMessage, Completion, Usage
from engine.backends.local import LocalBackend
from engine.backends.remote import RemoteBackend
from engine.bundled import bundled_model_path
from engine.plan import ModelRef

__all__ = [
    "Backend",
    "ChatMessage",
    "Completion",
    "LocalBackend",
    "RemoteBackend",
    "Usage",
    "backend_for",
]


def backend_for(ref: ModelRef) -> Backend:
    """The backend that serves ``ref``. Local models load lazily on their first call.

    The backend takes the reference's label, so traces name a model the same way in every table.
    """
    backend: Backend
    if ref.kind == "remote":
        backend = RemoteBackend(ref.base_url or "", ref.model or "", api_key_env=ref.api_key_env)
    else:
        backend = LocalBackend(ref.path or bundled_model_path())
    backend.label = ref.label
    return backend
