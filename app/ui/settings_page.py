"""Settings: live export of finished runs to an OpenTelemetry (OTLP/HTTP) receiver, and
sending one recorded run now.

The standard ``OTEL_EXPORTER_OTLP_*`` environment variables (or the same names at the top level
of ``.streamlit/secrets.toml``, which Streamlit turns into environment variables) configure it
at start. What this page sets replaces them for this server process only: it lives in memory
(``storage.otlp_live.set_override``), never in a session file, a trace or an export, and header
values (API keys) are never shown back.
"""

from __future__ import annotations

import streamlit as st

from app.services import otlp
from app.ui import plan_panel, state
from app.ui.widgets import show_flash
from engine.errors import ArborError

st.title("Settings")
show_flash()

st.subheader("Live export (OpenTelemetry)")
st.caption(
    "Finished runs and planner actions are sent in the background over OTLP/HTTP (protobuf) to "
    "Arize Phoenix, Langfuse, Jaeger or an OpenTelemetry Collector. A receiver that is down or "
    "slow never affects a run; the trace store keeps every run either way."
)

where = otlp.live_target_description()
if where:
    st.markdown(f"Finished runs go to **{where}**.")
else:
    st.markdown("Live export is **off**.")
sent, dropped, problem = otlp.live_status()
if sent or dropped:
    st.caption(f"Spans sent: {sent:,}; not delivered: {dropped:,}.")
if problem:
    st.warning(problem)

# no form: "Send this run" below uses the URL and headers as typed
url = st.text_input(
    "Receiver URL",
    key="otlp_url",
    placeholder="http://127.0.0.1:6006/v1/traces",
    help="The traces URL (…/v1/traces) or a base URL, to which /v1/traces is added.",
)
headers = st.text_input(
    "Headers",
    key="otlp_headers",
    type="password",
    placeholder="authorization=Bearer%20KEY,x-project-name=arbor",
    help="name=value pairs separated by commas, percent-encoded as in "
    "OTEL_EXPORTER_OTLP_HEADERS (empty: the environment's). Kept in memory only.",
)
use = st.button("Use for this server", key="otlp_use", type="primary")
if use:
    try:
        described = otlp.use_for_this_process(url, headers or None)
    except ValueError as exc:
        st.error(str(exc))
    else:
        message = f"Finished runs now go to {described}." if described else "Live export is off."
        plan_panel.flash("success", message)
        st.rerun()

left, right = st.columns(2)
if left.button("Turn live export off", key="otlp_off"):
    otlp.use_for_this_process(None)
    plan_panel.flash("success", "Live export is off for this server.")
    st.rerun()
if right.button("Back to the environment variables", key="otlp_env"):
    described = otlp.use_environment()
    plan_panel.flash("success", f"From the environment: {described or 'live export is off'}.")
    st.rerun()

st.subheader("Send a recorded run")
run_id = st.text_input("Run id", key="otlp_run_id", placeholder="run-…")
if st.button("Send this run", key="otlp_send", disabled=not (run_id.strip() and url.strip())):
    try:
        summary = otlp.send_recorded_run(
            state.workspace().traces, run_id.strip(), url, headers or None
        )
    except (ArborError, ValueError) as exc:
        st.error(str(exc))
    else:
        st.success(summary)
st.caption("Sends to the receiver URL above (the command line: run.py export-run RUN_ID --to URL).")
