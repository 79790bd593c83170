"""Small reusable inputs: model pickers and sliders built from pydantic field bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import BaseModel

from engine.errors import ArborError
from engine.models.registry import ModelEntry
from engine.plan import ModelRef
from engine.redaction import credentials_refusal

MODEL_KINDS = ["Bundled Gemma 3 270M", "Local GGUF file", "Remote endpoint"]


def field_bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    """The (ge, le) bounds pydantic declares for ``model.name``."""
    low = high = None
    for constraint in model.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


def field_slider(
    model: type[BaseModel], name: str, value: Any, *, step: Any, key: str, label: str | None = None
) -> Any:
    """A slider bounded by the field's ``ge``/``le``, its description as help."""
    low, high = field_bounds(model, name)
    info = model.model_fields[name]
    return st.slider(
        label or name.replace("_", " ").capitalize(),
        min_value=low,
        max_value=high,
        value=min(max(value, low), high),
        step=step,
        help=info.description,
        key=key,
    )


REGISTRY_PREFIX = "Registry: "


def _registry_entries() -> list[ModelEntry]:
    """Non-bundled registry entries; a broken registry file leaves only the manual options."""
    from app.ui import state  # deferred: state pulls in the job manager and the stores

    try:
        return [entry for entry in state.registry().entries() if entry.kind != "bundled"]
    except ArborError as exc:
        st.caption(f"Model registry unavailable: {exc}")
        return []


def model_picker(
    current: ModelRef | None, *, key: str, allow_inherit: bool = False
) -> ModelRef | None:
    """Inputs for a model reference; returns None for "inherit the plan's default".

    Registry entries (Models page) are offered by name next to the manual choices (the bundled
    model, a GGUF path, an endpoint typed in), which keep working without a registry.
    """
    entries = {REGISTRY_PREFIX + entry.name: entry for entry in _registry_entries()}
    bundled_option, local_option, remote_option = MODEL_KINDS
    options = (["Plan default"] if allow_inherit else []) + [
        bundled_option,
        *entries,
        local_option,
        remote_option,
    ]
    if current is None:
        index = 0
    elif current.kind == "local" and not current.path:
        index = options.index(bundled_option)
    else:
        match = next((o for o, e in entries.items() if _refers_to(current, e)), None)
        if match is not None:
            index = options.index(match)
        else:
            index = options.index(remote_option if current.kind == "remote" else local_option)
    choice = st.selectbox("Model", options, index=index, key=f"{key}_kind")
    if choice == "Plan default":
        return None
    if choice in entries:
        entry = entries[choice]
        st.caption(
            f"{entry.kind}: `{entry.target}` · {entry.price_in_per_m:g} / "
            f"{entry.price_out_per_m:g} USD per M tokens in / out · {entry.max_concurrent} at once"
        )
        return entry.ref
    if choice == local_option:
        path = st.text_input(
            "GGUF file path",
            value=(current.path if current and current.path else ""),
            key=f"{key}_path",
            placeholder="/path/to/model.gguf",
        )
        return ModelRef(kind="local", path=path.strip() or None)
    if choice == remote_option:
        remote = current if current is not None and current.kind == "remote" else ModelRef()
        base_url = st.text_input(
            "Base URL",
            value=remote.base_url or "",
            key=f"{key}_url",
            placeholder="http://127.0.0.1:8000/v1",
        )
        model = st.text_input("Model name", value=remote.model or "", key=f"{key}_model")
        key_env = st.text_input(
            "API key environment variable",
            value=remote.api_key_env or "",
            key=f"{key}_keyenv",
            help="The name of the variable, not the key. Leave empty for servers without a key.",
        )
        refusal = credentials_refusal(base_url)
        if refusal:
            st.error(f"Not applied: {refusal}.")
            return current
        return ModelRef(
            kind="remote",
            base_url=base_url.strip() or None,
            model=model.strip() or None,
            api_key_env=key_env.strip() or None,
        )
    return ModelRef()


def _refers_to(ref: ModelRef, entry: ModelEntry) -> bool:
    """True when ``ref`` names the entry's model (same file, or same URL, model and key name)."""
    if ref.kind != entry.ref.kind:
        return False
    if ref.kind == "remote":
        return (
            (ref.base_url or "").rstrip("/") == entry.base_url
            and ref.model == entry.model
            and ref.api_key_env == entry.api_key_env
        )
    if not (ref.path and entry.path):
        return False
    return Path(ref.path).expanduser().absolute() == Path(entry.path)
