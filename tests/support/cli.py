"""Running ``run.py`` as a user would: a subprocess over a data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.servers import ROOT


def run_cli(data_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` with ``ARBOR_DATA_DIR=data_dir``; output captured as text."""
    env = {**os.environ, "ARBOR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
