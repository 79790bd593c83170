"""Small reusable inputs: model pickers and sliders built from pydantic field bounds."""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import BaseModel

from engine.plan import ModelRef

MODEL_KINDS = ["Bundled Gemma 3 270M", "Local GGUF file", "Remote endpoint"]


def field_bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    """The (ge, le) bounds pydantic declares for ``model.name``."""
    low = high = None
    for constraint in model.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


def field_slider(model: type[BaseModel], name: str, value: int, *, step: int, key: str) -> int:
    low, high = field_bounds(model, name)
    info = model.model_fields[name]
    return st.slider(
        name.replace("_", " ").capitalize(),
        min_value=low,
        max_value=high,
        value=min(max(value, low), high),
        step=step,
        help=info.description,
        key=key,
    )


def model_picker(
    current: ModelRef | None, *, key: str, allow_inherit: bool = False
) -> ModelRef | None:
    """Inputs for a model reference; returns None for "inherit the plan's default"."""
    options = (["Plan default"] if allow_inherit else []) + MODEL_KINDS
    if current is None:
        index = 0
    elif current.kind == "remote":
        index = options.index("Remote endpoint")
    elif current.path:
        index = options.index("Local GGUF file")
    else:
        index = options.index("Bundled Gemma 3 270M")
    choice = st.selectbox("Model", options, index=index, key=f"{key}_kind")
    if choice == "Plan default":
        return None
    if choice == "Local GGUF file":
        path = st.text_input(
            "GGUF file path",
            value=(current.path if current and current.path else ""),
            key=f"{key}_path",
            placeholder="/path/to/model.gguf",
        )
        return ModelRef(kind="local", path=path.strip() or None)
    if choice == "Remote endpoint":
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
        return ModelRef(
            kind="remote",
            base_url=base_url.strip() or None,
            model=model.strip() or None,
            api_key_env=key_env.strip() or None,
        )
    return ModelRef()
