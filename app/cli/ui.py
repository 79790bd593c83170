"""``run.py`` with no command: start the Streamlit UI (``--host``, ``--port``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: The Streamlit entry point (the router over ``app/ui/``).
MAIN_SCRIPT = Path(__file__).resolve().parent.parent / "main.py"


def register(parser: argparse.ArgumentParser) -> None:
    """The top-level options; launching the UI is what ``run.py`` does without a command."""
    parser.add_argument("--host", default=os.environ.get("ARBOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ARBOR_PORT", "8501")))
    parser.set_defaults(handler=launch_ui)


def launch_ui(args: argparse.Namespace) -> int:
    """Start Streamlit on localhost (``--host`` to listen elsewhere)."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(MAIN_SCRIPT),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    print(f"Arbor UI on http://{args.host}:{args.port}", flush=True)
    # Replace this process so that signals (Ctrl-C, a test's terminate()) reach Streamlit itself.
    os.chdir(MAIN_SCRIPT.parent.parent)
    os.execv(sys.executable, command)
