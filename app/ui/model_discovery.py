"""The Models page's "Found on this machine" section: GGUF files and local servers, one click
to register each, and what could not be used with why.

The scanning is ``engine.models.discovery`` and the probing ``engine.models.local_servers``
(``run.py models discover`` calls the same functions). The scan runs once per browser session
and again on "Look again"; its result is kept in the session state between reruns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from engine.errors import ArborError
from engine.models.discovery import (
    EXTRA_FOLDERS_ENV,
    Candidate,
    Discovery,
    add_candidate,
    discover,
    mark_registered,
)
from engine.models.local_servers import (
    KNOWN_PORTS,
    ServerFinding,
    add_server_model,
    detect_servers,
    mark_server_models,
    server_model_name,
)
from engine.models.registry import Registry

RESULT_KEY = "model_discovery"
FOLDERS_KEY = "discovery_folders"

SOURCE_LABELS = {
    "huggingface": "Hugging Face cache",
    "lm-studio": "LM Studio",
    "gpt4all": "GPT4All",
    "ollama": "Ollama",
    "folder": "your folder",
}


def _scan() -> tuple[Discovery, list[ServerFinding]]:
    folders = [
        Path(line.strip()).expanduser()
        for line in st.session_state.get(FOLDERS_KEY, "").splitlines()
        if line.strip()
    ]
    return discover(folders=folders), detect_servers()


def _candidate_row(registry: Registry, candidate: Candidate, index: int, flash) -> None:
    text_col, add_col = st.columns([6, 1])
    source = SOURCE_LABELS.get(candidate.source, candidate.source)
    state = f" · registered as **{candidate.registered_as}**" if candidate.registered_as else ""
    text_col.markdown(
        f"**{candidate.name}** · {source}{state}  \n{candidate.facts()}  \n`{candidate.path}`"
    )
    if candidate.kind_reason:
        text_col.caption(f"{candidate.model_kind}: {candidate.kind_reason}")
    if add_col.button(
        "Add",
        key=f"discover_add_{index}",
        disabled=bool(candidate.registered_as),
        icon=":material/add:",
    ):
        try:
            entry = add_candidate(registry, candidate)
            flash("success", f"Added {entry.name!r} from {source}.")
        except ArborError as exc:
            flash("error", str(exc))
        st.rerun()


def _server_rows(registry: Registry, servers: list[ServerFinding], flash) -> None:
    registered = mark_server_models(servers, registry)
    for server_index, server in enumerate(servers):
        st.markdown(f"**{server.label}** at `{server.base_url}`")
        if server.problem:
            st.warning(server.problem, icon=":material/warning:")
        for model_index, model in enumerate(server.models):
            text_col, add_col = st.columns([6, 1])
            name = server_model_name(server, model)
            known = registered.get((server.base_url, model))
            text_col.markdown(
                f"{name}" + (f" · registered as **{known}**" if known else "") + f"  \n`{model}`"
            )
            if add_col.button(
                "Add",
                key=f"discover_server_{server_index}_{model_index}",
                disabled=known is not None,
                icon=":material/add:",
            ):
                try:
                    entry = add_server_model(registry, server, model)
                    flash("success", f"Added {entry.name!r}: {entry.target}. Press Test to try it.")
                except ArborError as exc:
                    flash("error", str(exc))
                st.rerun()


def discovery_section(registry: Registry, flash: Callable[[str, str], None]) -> None:
    """Render the section; ``flash(kind, text)`` queues a message for the next rerun."""
    st.subheader("Found on this machine")
    st.caption(
        "GGUF files in the Hugging Face cache, LM Studio's, GPT4All's and Ollama's model "
        f"folders and the folders below (also ${EXTRA_FOLDERS_ENV}), read from their headers; "
        "OpenAI-compatible servers on localhost ports "
        + ", ".join(f"{port} ({label})" for port, label in KNOWN_PORTS.items())
        + "."
    )
    st.text_area(
        "More folders to scan (one per line, searched recursively)",
        key=FOLDERS_KEY,
        height=68,
        placeholder="/home/me/models",
    )
    look = st.button("Look for models", key="discover_models", icon=":material/travel_explore:")
    if look or RESULT_KEY not in st.session_state:
        with st.spinner("Looking for models..."):
            st.session_state[RESULT_KEY] = _scan()
    found, servers = st.session_state[RESULT_KEY]
    mark_registered(found, registry)

    where = ", ".join(
        f"{SOURCE_LABELS.get(root.source, root.source)} (`{root.path}`)" for root in found.scanned
    )
    st.caption(
        f"Scanned {found.files_seen} file(s) in {where}."
        if found.scanned
        else "None of the usual model folders exists here."
    )
    usable = found.usable
    if usable:
        for index, candidate in enumerate(found.candidates):
            if candidate.usable:
                with st.container(border=True):
                    _candidate_row(registry, candidate, index, flash)
    else:
        st.info("No usable GGUF file found.", icon=":material/info:")
    if found.unusable:
        with st.expander(f"{len(found.unusable)} file(s) could not be used"):
            for candidate in found.unusable:
                st.markdown(f"- **{candidate.name}** ({candidate.source}): {candidate.problem}")
    if servers:
        _server_rows(registry, servers, flash)
    else:
        st.caption("No OpenAI-compatible server answered on the probed localhost ports.")
