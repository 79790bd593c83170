"""Identity of a model call, and the cache that lets a re-run skip calls that did not change.

A call is identified by everything that determines its output: the rendered messages (which
include upstream nodes' outputs, so an edit upstream changes every key downstream), the model
(for a local file also its size and modification time), the generation parameters, the seed and
the sample index. The trace store answers lookups from its recorded calls, so whatever finished
before a crash is reusable too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.plan import GenerationConfig, ModelRef

#: Bumped when the key's ingredients change, so old keys stop matching.
KEY_VERSION = 1


@dataclass(frozen=True)
class CachedCall:
    """A finished call whose output a new run may reuse."""

    call_id: str
    run_id: str
    output: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None


class CallCache(Protocol):
    def lookup(self, keys: Sequence[str]) -> dict[str, CachedCall]:
        """The newest successful call for each key that has one."""
        ...


def _model_identity(ref: ModelRef) -> dict[str, object]:
    identity: dict[str, object] = ref.model_dump(exclude={"api_key_env"})
    if ref.kind == "local" and ref.path:
        try:
            stat = os.stat(ref.path)
            identity["file"] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            identity["file"] = None
    return identity


def call_cache_key(
    messages: Sequence[dict[str, str]] | Sequence[object],
    ref: ModelRef,
    config: GenerationConfig,
    sample_index: int = 0,
    json_schema: dict[str, object] | None = None,
) -> str:
    """A stable hex digest of everything that determines a call's output."""
    payload = {
        "v": KEY_VERSION,
        "messages": list(messages),
        "model": _model_identity(ref),
        "generation": config.model_dump(),
        "sample": sample_index,
        "schema": json_schema,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["KEY_VERSION", "CachedCall", "CallCache", "call_cache_key"]
