"""Arbor's data files: prompts, shipped datasets, example tasks and plans, SQL examples.

Shipped as package data and found with ``importlib.resources``, so a normal (non-editable)
``pip install .`` finds them as well as a checkout does.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def asset_path(*parts: str) -> Path:
    """The path of a file or folder under ``assets/`` (installed or in a checkout)."""
    return Path(str(files(__name__).joinpath(*parts)))
