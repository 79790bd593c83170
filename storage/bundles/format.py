"""The ``.arbor`` file format: its constants, versions and upgrades, and member checksums.

A portable session file holds one session, the runs chosen from it and their traces.

A ``.arbor`` file is a zip (bundle version 2)::

    manifest.json                   {"format": "arbor-bundle", "version": 2, "created_at",
                                     "arbor_version", "trace_schema_version", "session_id",
                                     "run_ids": [...], "members": {name: sha256 hex}}
    session.json                    ArborSession.to_file_text(), run_ids = the runs carried
    traces/runs.parquet             exactly the carried runs' rows, every column of the store
    traces/node_executions.parquet
    traces/model_calls.parquet
    traces/annotations.parquet      the carried runs' annotations (optional: older files lack it)
    models.json                     registry entries of the plan's models, nothing secret
                                    (optional; same layout as a registry file)

Importing checks everything before it writes anything: that the file is a zip, that it is an
Arbor bundle and a version this Arbor reads, every member's checksum, the trace schema and the
Parquet columns. Then the runs go into the trace store in one DuckDB transaction (``INSERT ...
BY NAME``: columns an older bundle lacks take their defaults, which is how older trace schemas
are migrated), flagged as imported: ``runs.origin`` says from which file, and the imported
model calls are never replayed as cache hits. A run already in the store is skipped, never
overwritten. Older files are upgraded in memory by ``UPGRADES`` (version -> function): version
1 is the plain JSON session file (``ArborSession.to_file_text``), which carries no runs.

No secret is ever written: a remote model names the environment variable holding its key, and
export refuses when the value of such a variable turns up anywhere in what it would write.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.plan import Plan
from storage.sessions import ArborSession

BUNDLE_FORMAT = "arbor-bundle"
#: The bundle version this Arbor writes, and the newest it reads.
BUNDLE_VERSION = 2
BUNDLE_SUFFIX = ".arbor"
MANIFEST_MEMBER = "manifest.json"
SESSION_MEMBER = "session.json"
MODELS_MEMBER = "models.json"
TRACE_TABLES = ("runs", "node_executions", "model_calls")
#: Tables carried when present: a file written before they existed has no member for them.
OPTIONAL_TRACE_TABLES = ("annotations",)
TRACE_MEMBERS = {
    table: f"traces/{table}.parquet" for table in (*TRACE_TABLES, *OPTIONAL_TRACE_TABLES)
}
#: Bytes read at a time when checksumming or extracting a member.
COPY_CHUNK = 1 << 20

# Bounds checked before anything is extracted (a 2 MB zip must not become 2 GB on disk). A real
# bundle's members are Parquet (already compressed) and JSON: ratios of 2-20.
#: Largest uncompressed size of one member, and of all members together.
MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 2 << 30
#: Largest compression ratio of a member bigger than ``RATIO_FLOOR_BYTES`` (small members
#: may compress well without harm).
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 1 << 20
#: The manifest is read whole into memory; it lists members and checksums, a few KB.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 64


def sha256(path: Path) -> str:
    """The file's sha256 as hex: a member's checksum in the manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def plan_refs(plan: Plan | None) -> list[Any]:
    """Every model reference the plan uses (default and per node), without repeats."""
    if plan is None:
        return []
    refs = [plan.default_model, *(node.model for node, _ in plan.iter_nodes() if node.model)]
    unique: list[Any] = []
    for ref in refs:
        if ref not in unique:
            unique.append(ref)
    return unique


def bundle_file_name(session: ArborSession) -> str:
    """A file name for the session's ``.arbor`` file: its name in safe characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", session.name).strip("-.")[:80]
    return f"{stem or 'arbor-session'}-{session.id}{BUNDLE_SUFFIX}"


@dataclass
class Contents:
    """A session file read and checked, upgraded step by step to ``BUNDLE_VERSION``."""

    source: str
    version: int
    kind: str
    session_text: str
    run_ids: list[str] = field(default_factory=list)
    trace_schema_version: int = 0
    #: Extracted Parquet files by table (absent for a file without runs).
    trace_files: dict[str, Path] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _upgrade_v1_to_v2(contents: Contents) -> Contents:
    """A plain JSON session file: the session alone; the runs it names are not in it."""
    payload = json.loads(contents.session_text)
    dropped = payload.get("run_ids") if isinstance(payload.get("run_ids"), list) else []
    payload["run_ids"] = []
    contents.session_text = json.dumps(payload, ensure_ascii=False)
    note = "a version 1 session file carries no runs: the session was imported without runs"
    if dropped:
        note += f" (it names {len(dropped)} run(s) that stay where they were recorded)"
    contents.warnings.append(note + ".")
    contents.version = 2
    return contents


#: How each older file version becomes the next one. Add ``2: _upgrade_v2_to_v3`` (and bump
#: ``BUNDLE_VERSION``) when the layout changes; import then reads every older file unchanged.
UPGRADES: dict[int, Callable[[Contents], Contents]] = {1: _upgrade_v1_to_v2}


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "BUNDLE_VERSION",
    "MANIFEST_MEMBER",
    "MODELS_MEMBER",
    "OPTIONAL_TRACE_TABLES",
    "SESSION_MEMBER",
    "TRACE_MEMBERS",
    "TRACE_TABLES",
    "UPGRADES",
    "Contents",
    "bundle_file_name",
    "plan_refs",
    "sha256",
]
