"""The one place a model reference becomes a backend.

``backend_for(ref, registry)`` builds the local or remote backend for ``ref`` and, when the
registry has an entry for it, applies that entry's prices, concurrency and timeout.
``registry_backend_factory(data_dir)`` is what runs use: the registry of a data directory, or,
when its file cannot be read, plain backends and the reason (a broken registry must not stop a
run). Backends are imported here lazily, so reading a plan never loads llama_cpp or openai.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import RegistryError
from engine.models.base import Backend
from engine.models.bundled import bundled_model_path
from engine.plan import ModelRef

if TYPE_CHECKING:
    from engine.models.registry import Registry

#: Makes the backend of a model reference; an executor's ``backend_factory``.
BackendFactory = Callable[[ModelRef], Backend]


def backend_for(ref: ModelRef, registry: Registry | None = None) -> Backend:
    """The backend that serves ``ref``. Local models load lazily on their first call.

    The backend takes the reference's label, so traces name a model the same way in every
    table. With ``registry``, the entry behind ``ref`` (if any) sets prices, concurrency and
    timeout; a reference with no entry gets the backend's defaults.
    """
    backend: Backend
    if ref.kind == "remote":
        from engine.models.remote import RemoteBackend

        backend = RemoteBackend(ref.base_url or "", ref.model or "", api_key_env=ref.api_key_env)
    else:
        from engine.models.local import LocalBackend

        backend = LocalBackend(ref.path or bundled_model_path())
    backend.label = ref.label
    entry = registry.entry_for(ref) if registry is not None else None
    if entry is not None:
        from engine.models.registry import apply_entry_settings

        backend = apply_entry_settings(backend, entry)
    return backend


def registry_backend_factory(data_dir: Path | str) -> tuple[BackendFactory, str | None]:
    """Backends with the data directory's registry settings, and why the registry was ignored
    (None when it was read)."""
    from engine.models.registry import Registry

    try:
        registry = Registry.in_data_dir(data_dir)
    except RegistryError as exc:
        return backend_for, f"model registry ignored: {exc}"
    return registry.backend_for, None
