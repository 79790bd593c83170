"""Small reusable inputs: model pickers, sliders built from pydantic field bounds, and a
selectbox that keeps its choice when option labels change."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

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


def choice_box(
    label: str,
    options: Sequence[Any],
    *,
    key: str,
    format_func: Callable[[Any], str] = str,
    **kwargs: Any,
) -> Any:
    """A selectbox whose choice lives in ``st.session_state[key]`` and survives label changes.

    Streamlit stores a selectbox's value as the *label* of the chosen option. When a label
    changes while the page shows it (a node renamed, a run added), the browser sends the old
    label back with the next click; Streamlit cannot map it to an option and hands the raw
    label string to the script. That lost the first click after "Apply changes" (issue 19):
    the node picker's value became "n2: New subtask 2", not a node, the page fell back to the
    root and the pressed button was drawn disabled. So the widget is keyed by its labels: a
    label change makes a fresh widget that starts at the remembered choice, and a choice
    changed by code (a click on the graph, a new node) is written to the widget before it is
    drawn, which also tells the browser.
    """
    options = list(options)
    labels = "\n".join(format_func(option) for option in options)
    widget_key = f"{key}__{hashlib.sha1(labels.encode()).hexdigest()[:10]}"
    current = st.session_state.get(key)
    if current not in options:
        current = options[0] if options else None
    index_kwargs: dict[str, Any] = {}
    if widget_key in st.session_state:
        if st.session_state[widget_key] != current:
            st.session_state[widget_key] = current
    elif current in options:
        index_kwargs["index"] = options.index(current)

    def remember() -> None:
        st.session_state[key] = st.session_state[widget_key]

    value = st.selectbox(
        label,
        options,
        key=widget_key,
        format_func=format_func,
        on_change=remember,
        **index_kwargs,
        **kwargs,
    )
    st.session_state[key] = value
    return value


#: Toast icon and how long it stays, per message kind. Success and info go after the short
#: default; a refusal or warning stays long enough to read a sentence.
_TOAST_STYLE: dict[str, tuple[str, Literal["short", "long"]]] = {
    "success": (":material/check_circle:", "short"),
    "info": (":material/info:", "short"),
    "warning": (":material/warning:", "long"),
    "error": (":material/error:", "long"),
}


def show_flash() -> None:
    """Show the messages actions left in ``st.session_state.flash`` before their rerun.

    As toasts: they appear where the eye is, whatever part of the page the analyst scrolled to
    when pressing the button (issue 19 found them at the top of the page, out of view).
    """
    for kind, text in st.session_state.pop("flash", []):
        icon, duration = _TOAST_STYLE.get(kind, _TOAST_STYLE["info"])
        st.toast(text, icon=icon, duration=duration)
