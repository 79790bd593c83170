"""The model registry: list, add, edit, remove and test the models plans can use.

Everything goes through ``engine.models.registry``; this page only renders and dispatches, so
``run.py models`` does exactly the same.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.model_discovery import discovery_section
from engine.errors import ArborError
from engine.models.entry_checks import EntryCheck, check_entry
from engine.models.model_kind import DECLARED_KINDS
from engine.models.registry import (
    DEFAULT_REMOTE_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    ModelEntry,
    Registry,
)

NEW_ENDPOINT = "New endpoint"

st.title("Models")


def _flash(kind: str, text: str) -> None:
    st.session_state.setdefault("models_flash", []).append((kind, text))


for kind, text in st.session_state.pop("models_flash", []):
    getattr(st, kind)(text)

try:
    registry: Registry = state.registry()
except ArborError as exc:
    st.error(str(exc))
    st.stop()

st.caption(
    f"Registry file: `{registry.path}`. GGUF files in `{registry.models_dir}` are listed "
    "automatically (set ARBOR_MODELS_DIR to use another folder)."
)

# -- table -------------------------------------------------------------------------------------
rows = registry.rows()
st.dataframe(
    pd.DataFrame(rows).drop(columns=["problem"]),
    hide_index=True,
    width="stretch",
    column_config={
        "size_mb": st.column_config.NumberColumn("size (MB)", format="%.1f"),
        "price_in_per_m": st.column_config.NumberColumn("$ in / M tok", format="%.2f"),
        "price_out_per_m": st.column_config.NumberColumn("$ out / M tok", format="%.2f"),
        "max_concurrent": st.column_config.NumberColumn("concurrent"),
        "model_kind": st.column_config.TextColumn(
            "model kind",
            help="base models get few-shot completion prompts, instruct models"
            " chat prompts (when a node's prompt style is auto)",
        ),
    },
)
for row in rows:
    if row["problem"]:
        st.warning(f"{row['name']}: {row['problem']}")

# -- per entry: test and remove ----------------------------------------------------------------
checks: dict[str, EntryCheck] = st.session_state.setdefault("model_checks", {})


def _show_check(check: EntryCheck) -> None:
    for step in check.steps:
        mark = ":material/check_circle:" if step.ok else ":material/cancel:"
        st.markdown(f"{mark} **{step.name}** ({step.seconds:.2f} s): {step.detail}")
    (st.success if check.ok else st.error)(check.summary())


def _entry_row(entry: ModelEntry) -> None:
    name_col, test_col, remove_col = st.columns([6, 1, 1])
    origin = " · found in the models folder" if entry.discovered else ""
    name_col.markdown(f"**{entry.name}** ({entry.kind}{origin})  \n`{entry.target}`")
    if test_col.button("Test", key=f"test_model_{entry.name}"):
        with st.spinner(f"Testing {entry.name}..."):
            checks[entry.name] = check_entry(entry)
    removable = entry.kind != "bundled" and not entry.discovered
    if remove_col.button("Remove", key=f"remove_model_{entry.name}", disabled=not removable):
        try:
            registry.remove(entry.name)
            checks.pop(entry.name, None)
            _flash("success", f"Removed {entry.name!r}.")
        except ArborError as exc:
            _flash("error", str(exc))
        st.rerun()
    _kind_row(entry)
    if entry.name in checks:
        _show_check(checks[entry.name])


KIND_HELP = (
    "base: a pretrained text continuer (no chat template); nodes with prompt style auto send it"
    " few-shot completion prompts (worked question/answer pairs). instruct: a chat model, sent"
    " chat prompts. auto: detected from the GGUF header (a chat template or an '-it' /"
    " 'instruct' tag means instruct); remote endpoints count as instruct."
)


def _kind_row(entry: ModelEntry) -> None:
    """The entry's detected or declared kind, and the override."""
    kind_col, pick_col = st.columns([6, 2])
    kind_col.caption(f"Model kind: {registry.kind_of(entry).describe()}")
    options = list(DECLARED_KINDS)
    chosen = pick_col.selectbox(
        "Kind",
        options,
        index=options.index(entry.model_kind),
        key=f"model_kind_{entry.name}",
        help=KIND_HELP,
        label_visibility="collapsed",
    )
    if chosen != entry.model_kind:
        try:
            registry.update(entry.name, model_kind=chosen)
            _flash("success", f"{entry.name!r} is now declared {chosen}.")
        except ArborError as exc:
            _flash("error", str(exc))
        st.rerun()


st.subheader("Entries")
for entry in registry.entries():
    with st.container(border=True):
        _entry_row(entry)

discovery_section(registry, _flash)

# -- add a local file --------------------------------------------------------------------------
st.subheader("Add a local GGUF file")
with st.form("add_local_form"):
    path = st.text_input("GGUF file path", key="add_local_path", placeholder="/path/model.gguf")
    name = st.text_input("Name (optional)", key="add_local_name", help="Default: the file name.")
    add_local = st.form_submit_button("Add local model")
if add_local:
    try:
        added = registry.add_local(path.strip(), name.strip() or None)
        _flash("success", f"Added {added.name!r} ({registry.info(added).summary()}).")
        del st.session_state["add_local_path"], st.session_state["add_local_name"]
        st.rerun()
    except ArborError as exc:
        st.error(str(exc))

# -- add or edit a remote endpoint -------------------------------------------------------------
st.subheader("Add or edit a remote endpoint")
remotes = {entry.name: entry for entry in registry.entries() if entry.kind == "remote"}
if "remote_pick_next" in st.session_state:  # set by a rename on the previous run
    st.session_state["remote_pick"] = st.session_state.pop("remote_pick_next")
if st.session_state.get("remote_pick", NEW_ENDPOINT) not in remotes:
    st.session_state["remote_pick"] = NEW_ENDPOINT
picked = st.selectbox("Endpoint", [NEW_ENDPOINT, *remotes], key="remote_pick")
current = remotes.get(picked)
# Widget keys per endpoint, so switching endpoints shows that endpoint's values.
suffix = "new" if current is None else f"edit_{picked}"
with st.form(f"remote_form_{suffix}"):
    remote_name = st.text_input(
        "Name", value=current.name if current else "", key=f"remote_name_{suffix}"
    )
    base_url = st.text_input(
        "Base URL",
        value=current.base_url if current else "",
        placeholder="http://127.0.0.1:8000/v1",
        key=f"remote_url_{suffix}",
    )
    model = st.text_input(
        "Model name",
        value=current.model if current else "",
        help="As the endpoint lists it under GET /models.",
        key=f"remote_model_{suffix}",
    )
    key_env = st.text_input(
        "API key environment variable",
        value=(current.api_key_env or "") if current else "",
        help="The NAME of the variable (e.g. OPENAI_API_KEY), never the key itself. "
        "Leave empty for servers without a key.",
        key=f"remote_key_env_{suffix}",
    )
    price_col, out_col, conc_col, timeout_col = st.columns(4)
    price_in = price_col.number_input(
        "$ per M input tokens",
        min_value=0.0,
        value=current.price_in_per_m if current else 0.0,
        key=f"remote_price_in_{suffix}",
    )
    price_out = out_col.number_input(
        "$ per M output tokens",
        min_value=0.0,
        value=current.price_out_per_m if current else 0.0,
        key=f"remote_price_out_{suffix}",
    )
    max_concurrent = conc_col.number_input(
        "Max concurrent requests",
        min_value=1,
        max_value=256,
        value=current.max_concurrent if current else DEFAULT_REMOTE_CONCURRENCY,
        key=f"remote_concurrency_{suffix}",
    )
    timeout_s = timeout_col.number_input(
        "Timeout (s)",
        min_value=1.0,
        max_value=3600.0,
        value=current.timeout_s if current else DEFAULT_TIMEOUT_S,
        key=f"remote_timeout_{suffix}",
    )
    save_remote = st.form_submit_button("Save endpoint")
if save_remote:
    fields = {
        "api_key_env": key_env.strip() or None,
        "price_in_per_m": float(price_in),
        "price_out_per_m": float(price_out),
        "max_concurrent": int(max_concurrent),
        "timeout_s": float(timeout_s),
    }
    try:
        if current is None:
            saved = registry.add_remote(remote_name, base_url, model, **fields)
        else:
            saved = registry.update(
                current.name, name=remote_name, base_url=base_url, model=model, **fields
            )
        _flash("success", f"Saved endpoint {saved.name!r}: {saved.target}. Press Test to try it.")
        for key in [k for k in st.session_state if str(k).endswith(f"_{suffix}")]:
            del st.session_state[key]  # an emptied form for the next endpoint
        if current is not None and saved.name != current.name:
            st.session_state["remote_pick_next"] = saved.name
        st.rerun()
    except ArborError as exc:
        st.error(str(exc))
