"""Where Arbor keeps its data: one directory, chosen by ``ARBOR_DATA_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "ARBOR_DATA_DIR"


def data_dir() -> Path:
    """``$ARBOR_DATA_DIR``, else ``$XDG_DATA_HOME/arbor``, else ``~/.local/share/arbor``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        path = Path(base) / "arbor"
    path.mkdir(parents=True, exist_ok=True)
    return path


def traces_path() -> Path:
    return data_dir() / "traces.duckdb"


def sessions_path() -> Path:
    return data_dir() / "sessions.sqlite"
