"""Portable session files: one session, the runs chosen from it and their traces, in one file.

A ``.arbor`` file is a zip (bundle version 2)::

    manifest.json                   {"format": "arbor-bundle", "version": 2, "created_at",
                                     "arbor_version", "trace_schema_version", "session_id",
                                     "run_ids": [...], "members": {name: sha256 hex}}
    session.json                    ArborSession.to_file_text(), run_ids = the runs carried
    traces/runs.parquet             exactly the carried runs' rows, every column of the store
    traces/node_executions.parquet
    traces/model_calls.parquet
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
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb

from engine.errors import BundleError, RegistryError
from engine.models.registry import REGISTRY_FORMAT, REGISTRY_VERSION, Registry
from engine.plan import Plan
from engine.plan.files import import_plan
from engine.redaction import credentials_refusal
from storage.sessions import SESSION_FORMAT, SESSION_FORMAT_VERSION, ArborSession
from storage.trace_export import arbor_version
from storage.traces import MIGRATIONS, TraceStore
from storage.workspace import Workspace

BUNDLE_FORMAT = "arbor-bundle"
#: The bundle version this Arbor writes, and the newest it reads.
BUNDLE_VERSION = 2
BUNDLE_SUFFIX = ".arbor"
MANIFEST_MEMBER = "manifest.json"
SESSION_MEMBER = "session.json"
MODELS_MEMBER = "models.json"
TRACE_TABLES = ("runs", "node_executions", "model_calls")
TRACE_MEMBERS = {table: f"traces/{table}.parquet" for table in TRACE_TABLES}
#: Row order inside each Parquet file, so two exports of the same runs hold the same rows.
_ORDER = {
    "runs": "started_at, run_id",
    "node_executions": "run_id, node_id",
    "model_calls": "run_id, started_at, call_id",
}
#: Columns set by the import itself, whatever the file says.
_SET_ON_IMPORT = {"runs": "origin", "model_calls": "imported"}
#: Registry entry fields that may leave the machine. A whitelist, so a field added to
#: ``ModelEntry`` later (perhaps a secret one) stays home until someone decides otherwise.
_SHAREABLE_ENTRY_FIELDS = (
    "name",
    "kind",
    "path",
    "base_url",
    "model",
    "api_key_env",
    "price_in_per_m",
    "price_out_per_m",
    "max_concurrent",
    "timeout_s",
)
#: Environment values shorter than this are not scanned for (too many false alarms: "1").
_MIN_SECRET_LENGTH = 8
_COPY_CHUNK = 1 << 20
#: Members inside zips that say what kind of file a foreign zip is.
_FOREIGN_SIGNS = (
    ("[Content_Types].xml", "an Office document (.docx, .xlsx or .pptx)"),
    ("META-INF/MANIFEST.MF", "a Java archive"),
    ("mimetype", "an OpenDocument or EPUB file"),
)


@dataclass(frozen=True)
class ExportReport:
    """What ``export_session`` wrote."""

    path: Path
    session_id: str
    run_ids: list[str]
    #: Uncompressed size of each member, by name.
    members: dict[str, int]
    size_bytes: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What ``import_bundle`` (or ``import_file``) did."""

    #: The session as saved here (a fresh id when its id was taken: see ``new_id``).
    session: ArborSession
    #: What the file was: "bundle v2", "session file v1", "plan file".
    kind: str
    runs_imported: list[str] = field(default_factory=list)
    #: Runs already in this store: left as they are, not imported again.
    runs_skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Registry entries the file carried (``models.json``); not added to the registry.
    models: list[dict[str, Any]] = field(default_factory=list)
    #: The id in the file was already used here, so the session was saved under a new one.
    new_id: bool = False

    def summary(self) -> str:
        """One line for the UI and the CLI."""
        parts = [f"Imported session {self.session.name!r} ({self.session.id}) from a {self.kind}"]
        parts.append(f"{len(self.runs_imported)} run(s) imported")
        if self.runs_skipped:
            parts.append(f"{len(self.runs_skipped)} already here and skipped")
        return "; ".join(parts) + "."


# -- exporting ---------------------------------------------------------------------------------
def session_runs(workspace: Workspace, session_id: str) -> list[dict[str, Any]]:
    """The session's runs that are in the trace store, oldest first: those it lists and those
    recorded under its id. Each row: run_id, session_id, status, started_at, task.

    Runs whose process died are marked ``interrupted`` first, so ``running`` means live.
    """
    session = workspace.sessions.get(session_id)
    workspace.traces.interrupted_runs()
    return _runs_of(workspace.traces, session)


def _runs_of(store: TraceStore, session: ArborSession) -> list[dict[str, Any]]:
    with store.connect() as con:
        cursor = con.execute(
            "SELECT run_id, session_id, status, started_at, task FROM runs"
            " WHERE session_id = ? OR run_id IN (SELECT unnest(?::VARCHAR[]))"
            " ORDER BY started_at, run_id",
            [session.id, session.run_ids],
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _choose_runs(
    workspace: Workspace, session: ArborSession, run_ids: Iterable[str] | None
) -> tuple[list[str], list[str]]:
    """The run ids to carry (oldest first) and warnings; refuses foreign, unknown, live runs."""
    workspace.traces.interrupted_runs()
    own = {row["run_id"]: row for row in _runs_of(workspace.traces, session)}
    warnings: list[str] = []
    if run_ids is None:
        chosen = list(own)
        missing = [run_id for run_id in session.run_ids if run_id not in own]
        if missing:
            warnings.append(
                f"{len(missing)} run(s) the session lists are not in the trace store and were "
                f"not exported: {', '.join(missing)}."
            )
    else:
        wanted = list(dict.fromkeys(run_ids))
        for run_id in wanted:
            if run_id in own:
                continue
            other = workspace.traces.run(run_id)
            if other is None:
                raise BundleError(
                    f"Not exported: no run {run_id!r} in the trace store {workspace.traces.path}."
                )
            raise BundleError(
                f"Not exported: run {run_id!r} belongs to session {other['session_id']!r}, not "
                f"to {session.id!r}; export it with its own session."
            )
        chosen = [run_id for run_id in own if run_id in set(wanted)]
    running = [run_id for run_id in chosen if own[run_id]["status"] == "running"]
    if running:
        raise BundleError(
            f"Not exported: run {running[0]!r} is still running; export the session once it has "
            "finished (or cancel it), or leave the run out."
        )
    return chosen, warnings


def _plan_refs(plan: Plan | None) -> list[Any]:
    """Every model reference the plan uses (default and per node), without repeats."""
    if plan is None:
        return []
    refs = [plan.default_model, *(node.model for node, _ in plan.iter_nodes() if node.model)]
    unique: list[Any] = []
    for ref in refs:
        if ref not in unique:
            unique.append(ref)
    return unique


def _without_credentials(url: str) -> str:
    """``url`` without user, password, query and fragment (where keys hide in URLs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _shareable_models(
    workspace: Workspace, plan: Plan | None, warnings: list[str]
) -> list[dict[str, Any]]:
    """Registry entries of the plan's models with only the fields that may be shared."""
    refs = _plan_refs(plan)
    if not refs:
        return []
    try:
        registry = Registry.in_data_dir(workspace.root)
    except RegistryError as exc:
        warnings.append(f"models.json left out: {exc}")
        return []
    entries: list[dict[str, Any]] = []
    for ref in refs:
        entry = registry.entry_for(ref)
        if entry is None or any(e["name"] == entry.name for e in entries):
            continue
        dumped = entry.model_dump(mode="json", exclude_none=True)
        shared = {key: dumped[key] for key in _SHAREABLE_ENTRY_FIELDS if key in dumped}
        url = shared.get("base_url")
        if url and _without_credentials(url) != url:
            shared["base_url"] = _without_credentials(url)
            warnings.append(
                f"models.json: the base URL of {entry.name!r} is written without its user, "
                "password, query and fragment."
            )
        entries.append(shared)
    return entries


def _secret_values(plan: Plan | None, models: list[dict[str, Any]]) -> dict[str, str]:
    """The values of the environment variables the session's models read keys from, by name.

    These are what must never leave the machine; export looks for them in what it writes.
    """
    names = {ref.api_key_env for ref in _plan_refs(plan) if ref.api_key_env}
    names |= {entry["api_key_env"] for entry in models if entry.get("api_key_env")}
    values = {name: os.environ.get(name, "") for name in sorted(names)}
    return {name: value for name, value in values.items() if len(value) >= _MIN_SECRET_LENGTH}


def _refuse_secrets_in_rows(
    con: duckdb.DuckDBPyConnection, run_ids: list[str], secrets: dict[str, str]
) -> None:
    """Refuse when a key value appears in any text column of the chosen runs' rows.

    Asked of DuckDB rather than searched in the Parquet bytes, which may be compressed.
    """
    if not secrets or not run_ids:
        return
    for table in TRACE_TABLES:
        columns = [
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'main' AND table_name = ? AND data_type = 'VARCHAR'",
                [table],
            ).fetchall()
        ]
        for name, value in secrets.items():
            found = " OR ".join(f'contains("{column}", $value)' for column in columns)
            hits = con.execute(
                f"SELECT count(*) FROM {table} WHERE run_id IN (SELECT unnest($runs::VARCHAR[]))"
                f" AND ({found})",
                {"value": value, "runs": run_ids},
            ).fetchone()[0]
            if hits:
                raise BundleError(
                    f"Not exported: the value of ${name} (the API key of a model this session "
                    f"uses) appears in {hits} {table} row(s) of the chosen runs. Leave those "
                    "runs out, or change the key."
                )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (``COPY ... TO`` takes no parameter)."""
    return "'" + str(path).replace("'", "''") + "'"


def export_session(
    workspace: Workspace,
    session_id: str,
    path: Path | str,
    run_ids: Iterable[str] | None = None,
    *,
    include_models: bool = True,
) -> ExportReport:
    """Write session ``session_id`` with the chosen runs (default: all of its runs) to
    ``path`` as one ``.arbor`` file.

    Refused with ``BundleError`` naming the run when a chosen run is unknown, belongs to
    another session or is still running, and when the value of an API key variable the
    session's models name would be written. The file is written next to ``path`` under a
    temporary name and renamed, so a failed export never leaves half a file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise BundleError(f"Not exported: the folder {path.parent} does not exist.")
    session = workspace.sessions.get(session_id)
    chosen, warnings = _choose_runs(workspace, session, run_ids)
    for ref in _plan_refs(session.plan):
        refusal = credentials_refusal(ref.base_url)
        if refusal:
            raise BundleError(f"Not exported: the plan's model {ref.model!r}: {refusal}.")
    models = _shareable_models(workspace, session.plan, warnings) if include_models else []
    secrets = _secret_values(session.plan, models)

    with tempfile.TemporaryDirectory(prefix="arbor-export-") as tmp:
        folder = Path(tmp)
        files: dict[str, Path] = {}
        with workspace.traces.connect() as con:
            _refuse_secrets_in_rows(con, chosen, secrets)
            for table in TRACE_TABLES:
                target = folder / f"{table}.parquet"
                con.execute(
                    f"COPY (SELECT * FROM {table} WHERE run_id IN"
                    " (SELECT unnest(?::VARCHAR[])) ORDER BY"
                    f" {_ORDER[table]}) TO {_sql_path(target)} (FORMAT parquet)",
                    [chosen],
                )
                files[TRACE_MEMBERS[table]] = target
        texts = {SESSION_MEMBER: session.model_copy(update={"run_ids": chosen}).to_file_text()}
        if models:
            payload = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION, "models": models}
            texts[MODELS_MEMBER] = json.dumps(payload, indent=2, ensure_ascii=False)
        for name, text in texts.items():
            files[name] = folder / name
            files[name].write_text(text, encoding="utf-8")
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "arbor_version": arbor_version(),
            "trace_schema_version": len(MIGRATIONS),
            "session_id": session.id,
            "run_ids": chosen,
            "members": {name: _sha256(file) for name, file in sorted(files.items())},
        }
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False)
        for name, value in secrets.items():
            for member, text in [(MANIFEST_MEMBER, manifest_text), *texts.items()]:
                if value in text:
                    raise BundleError(
                        f"Not exported: the value of ${name} (an API key) appears in {member}."
                    )
        sizes = {name: file.stat().st_size for name, file in files.items()}
        sizes[MANIFEST_MEMBER] = len(manifest_text.encode())
        _write_zip(path, manifest_text, files)
    return ExportReport(
        path=path,
        session_id=session.id,
        run_ids=chosen,
        members=sizes,
        size_bytes=path.stat().st_size,
        warnings=warnings,
    )


def _write_zip(path: Path, manifest_text: str, files: dict[str, Path]) -> None:
    """Write the zip under a temporary name beside ``path``, then rename it into place."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_MEMBER, manifest_text)
            for name, file in files.items():
                # Parquet pages are compressed already; deflating them again gains nothing.
                stored = zipfile.ZIP_STORED if name.endswith(".parquet") else None
                archive.write(file, name, compress_type=stored)
        with temp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# -- reading a file ----------------------------------------------------------------------------
@dataclass
class _Contents:
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


def _upgrade_v1_to_v2(contents: _Contents) -> _Contents:
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
UPGRADES: dict[int, Callable[[_Contents], _Contents]] = {1: _upgrade_v1_to_v2}


def _not_a_session_file(source: str, detail: str) -> BundleError:
    return BundleError(f"{source} is not an Arbor session file (not a zip archive): {detail}.")


def _read_file(path: Path, folder: Path) -> _Contents:
    """Every check that needs only the file; Parquet members are extracted into ``folder``."""
    if not path.is_file():
        raise BundleError(f"{path} does not exist or is not a file.")
    with path.open("rb") as handle:
        head = handle.read(4)
    contents = _read_zip(path, folder) if head.startswith(b"PK") else _read_json(path)
    while contents.version < BUNDLE_VERSION:
        upgrade = UPGRADES.get(contents.version)
        if upgrade is None:  # pragma: no cover - a gap in UPGRADES is a programming error
            raise BundleError(f"{contents.source}: no upgrade from version {contents.version}.")
        contents = upgrade(contents)
    return contents


def _read_json(path: Path) -> _Contents:
    source = path.name
    try:
        text = path.read_text(encoding="utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_a_session_file(source, "it is not a JSON session file either") from None
    if not isinstance(payload, dict):
        raise _not_a_session_file(source, "it is JSON, but not an object")
    fmt = payload.get("format")
    if fmt != SESSION_FORMAT:
        looks = f"a JSON file of format {fmt!r}" if fmt else "a JSON file without a format"
        if fmt == "arbor-plan" or (fmt is None and "root" in payload):
            looks = "an Arbor plan file: import it as a plan"
        raise _not_a_session_file(source, f"it is {looks}")
    version = payload.get("version")
    if not isinstance(version, int) or version > SESSION_FORMAT_VERSION:
        raise BundleError(
            f"{source} has session file version {version!r}; this Arbor reads session files up "
            f"to version {SESSION_FORMAT_VERSION} and bundles up to {BUNDLE_VERSION}. Update "
            "Arbor to import it."
        )
    return _Contents(source=source, version=1, kind="session file v1", session_text=text)


def _describe_zip(names: list[str]) -> str:
    for sign, what in _FOREIGN_SIGNS:
        if sign in names:
            return f"it looks like {what}"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"it holds {shown}" if names else "it is empty"


def _extract(archive: zipfile.ZipFile, name: str, target: Path, source: str) -> str:
    """Copy member ``name`` to ``target``; its sha256. A damaged member raises ``corrupt``."""
    digest = hashlib.sha256()
    try:
        with archive.open(name) as member, target.open("wb") as out:
            while chunk := member.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise BundleError(
            f"{source} is corrupt: member {name} cannot be read ({exc}). Export it again."
        ) from None
    return digest.hexdigest()


def _read_zip(path: Path, folder: Path) -> _Contents:
    source = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _not_a_session_file(
            source, f"it starts like one, but is damaged or truncated ({exc})"
        ) from None
    with archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
        if MANIFEST_MEMBER not in names:
            raise BundleError(
                f"{source} is a zip archive but not an Arbor session file: it has no "
                f"{MANIFEST_MEMBER}; {_describe_zip(names)}."
            )
        manifest_file = folder / MANIFEST_MEMBER
        _extract(archive, MANIFEST_MEMBER, manifest_file, source)
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} is not JSON ({exc})."
            ) from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != BUNDLE_FORMAT:
            raise BundleError(
                f"{source} is a zip archive but not an Arbor session file: its "
                f"{MANIFEST_MEMBER} has format {fmt!r}, not {BUNDLE_FORMAT!r}; "
                f"{_describe_zip(names)}."
            )
        version = manifest.get("version")
        if not isinstance(version, int) or version < 2:
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} has version {version!r} (an "
                f"Arbor bundle zip has version 2 or later)."
            )
        if version > BUNDLE_VERSION:
            raise BundleError(
                f"{source} is a version {version} Arbor session file; this Arbor reads up to "
                f"version {BUNDLE_VERSION}. Update Arbor to import it."
            )
        members = manifest.get("members")
        run_ids = manifest.get("run_ids")
        schema = manifest.get("trace_schema_version")
        if (
            not isinstance(members, dict)
            or not all(isinstance(v, str) for v in members.values())
            or not isinstance(run_ids, list)
            or not all(isinstance(r, str) for r in run_ids)
            or not isinstance(schema, int)
        ):
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} lacks its members, run_ids or "
                "trace_schema_version."
            )
        required = [SESSION_MEMBER, *(TRACE_MEMBERS.values() if run_ids else ())]
        for name in required:
            if name not in members:
                raise BundleError(
                    f"{source} is corrupt: member {name} is missing from the manifest."
                )
        contents = _Contents(
            source=source,
            version=version,
            kind=f"bundle v{version}",
            session_text="",
            run_ids=list(dict.fromkeys(run_ids)),
            trace_schema_version=schema,
        )
        by_member = {member: table for table, member in TRACE_MEMBERS.items()}
        for index, (name, expected) in enumerate(sorted(members.items())):
            if name not in names:
                raise BundleError(
                    f"{source} is corrupt: member {name} is listed in the manifest but missing "
                    "from the file."
                )
            target = folder / f"member-{index}"
            actual = _extract(archive, name, target, source)
            if actual != expected.lower():
                raise BundleError(
                    f"{source} is corrupt: member {name} does not match its checksum (sha256 "
                    f"{actual[:12]}..., the manifest says {expected[:12]}...). Export it again."
                )
            if name in by_member:
                contents.trace_files[by_member[name]] = target
            elif name == SESSION_MEMBER:
                contents.session_text = target.read_text(encoding="utf-8", errors="replace")
            elif name == MODELS_MEMBER:
                contents.models = _read_models(target, source, contents.warnings)
            else:
                contents.warnings.append(f"{name} in the file is not read by this Arbor.")
        unlisted = sorted(set(names) - set(members) - {MANIFEST_MEMBER})
        if unlisted:
            contents.warnings.append(f"ignored {', '.join(unlisted)}: not listed in the manifest.")
    return contents


def _read_models(file: Path, source: str, warnings: list[str]) -> list[dict[str, Any]]:
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        models = payload["models"]
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise TypeError("models is not a list of objects")
    except (ValueError, KeyError, TypeError) as exc:
        warnings.append(f"{MODELS_MEMBER} in {source} is unreadable and was ignored ({exc}).")
        return []
    return models


# -- importing ---------------------------------------------------------------------------------
def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, bool]:
    """The store table's columns: name -> whether a value is required (NOT NULL, no default)."""
    rows = con.execute(
        "SELECT column_name, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {name: nullable == "NO" and default is None for name, nullable, default in rows}


def _check_traces(con: duckdb.DuckDBPyConnection, contents: _Contents) -> dict[str, list[str]]:
    """Check the Parquet members against this store; return each table's columns to copy."""
    source = contents.source
    store_version = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0
    if contents.trace_schema_version > store_version:
        raise BundleError(
            f"{source} holds traces of trace schema version {contents.trace_schema_version}; "
            f"this trace store has version {store_version}. Update Arbor to import it."
        )
    if not contents.run_ids:
        return {}
    copy_columns: dict[str, list[str]] = {}
    for table, file in contents.trace_files.items():
        member = TRACE_MEMBERS[table]
        try:
            described = con.execute(
                "DESCRIBE SELECT * FROM read_parquet(?)", [str(file)]
            ).fetchall()
        except duckdb.Error as exc:
            raise BundleError(
                f"{source} is corrupt: member {member} is not a readable Parquet file ({exc})."
            ) from None
        present = [row[0] for row in described]
        known = _columns(con, table)
        unknown = [column for column in present if column not in known]
        if unknown:
            raise BundleError(
                f"{source}: member {member} has columns this trace store does not know: "
                f"{', '.join(unknown)}. It comes from a newer Arbor; update Arbor to import it."
            )
        lacking = [c for c, required in known.items() if required and c not in present]
        if lacking:
            raise BundleError(
                f"{source} is corrupt: member {member} lacks the column(s) {', '.join(lacking)}."
            )
        copy_columns[table] = [c for c in present if c != _SET_ON_IMPORT.get(table)]
    runs_file = str(contents.trace_files["runs"])
    rows = con.execute("SELECT run_id, status FROM read_parquet(?)", [runs_file]).fetchall()
    found = [run_id for run_id, _ in rows]
    if sorted(found) != sorted(set(contents.run_ids)) or len(found) != len(set(found)):
        raise BundleError(
            f"{source} is corrupt: {TRACE_MEMBERS['runs']} holds the runs "
            f"{', '.join(sorted(found)) or 'none'}; the manifest lists "
            f"{', '.join(sorted(contents.run_ids))}."
        )
    running = [run_id for run_id, status in rows if status == "running"]
    if running:
        raise BundleError(
            f"{source} holds run {running[0]!r} as still running; export it again once it has "
            "finished."
        )
    for table in ("node_executions", "model_calls"):
        strays = con.execute(
            "SELECT DISTINCT run_id FROM read_parquet(?)"
            " WHERE run_id NOT IN (SELECT unnest(?::VARCHAR[]))",
            [str(contents.trace_files[table]), contents.run_ids],
        ).fetchall()
        if strays:
            raise BundleError(
                f"{source} is corrupt: {TRACE_MEMBERS[table]} has rows of run "
                f"{strays[0][0]!r}, which the manifest does not list."
            )
    return copy_columns


def _quoted(columns: list[str]) -> str:
    return ", ".join('"' + column.replace('"', '""') + '"' for column in columns)


def _insert_runs(
    con: duckdb.DuckDBPyConnection,
    contents: _Contents,
    columns: dict[str, list[str]],
    run_ids: list[str],
    origin: str,
) -> None:
    """Copy the runs' rows in; the caller holds the transaction."""
    extra = {"runs": ", $origin AS origin", "model_calls": ", true AS imported"}
    for table in TRACE_TABLES:
        con.execute(
            f"INSERT INTO {table} BY NAME SELECT {_quoted(columns[table])}{extra.get(table, '')}"
            " FROM read_parquet($file) WHERE run_id IN (SELECT unnest($runs::VARCHAR[]))",
            {
                "file": str(contents.trace_files[table]),
                "runs": run_ids,
                **({"origin": origin} if table == "runs" else {}),
            },
        )


def _model_warnings(plan: Plan | None) -> list[str]:
    """What the imported plan needs that this machine lacks (its models stay as they are)."""
    warnings = []
    for ref in _plan_refs(plan):
        if ref.kind == "local" and ref.path and not Path(ref.path).is_file():
            warnings.append(
                f"the plan uses the model file {ref.path}, which is not on this machine: pick "
                "another model on the Workbench before running it."
            )
        if ref.kind == "remote" and ref.api_key_env and not os.environ.get(ref.api_key_env):
            warnings.append(
                f"the plan's model {ref.label} reads its API key from ${ref.api_key_env}, which "
                "is not set here."
            )
    return warnings


def import_bundle(workspace: Workspace, path: Path | str) -> ImportReport:
    """Import an ``.arbor`` file (or a version 1 JSON session file) into ``workspace``.

    Everything is checked before anything is written; a refused file raises ``BundleError``
    (a ``SessionError``) saying what is wrong, and both stores stay as they were. Runs already
    in the trace store are skipped and reported, never overwritten. The session gets a fresh
    id when its id is taken here (its runs keep the ``session_id`` they were recorded under).
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="arbor-import-") as tmp:
        contents = _read_file(path, Path(tmp))
        session = ArborSession.from_file_text(contents.session_text, source=contents.source)
        if session.plan is not None:
            session.plan.validate_graph()
        report = ImportReport(
            session=session,
            kind=contents.kind,
            warnings=list(contents.warnings),
            models=contents.models,
        )
        with workspace.traces.connect() as con:
            columns = _check_traces(con, contents)
            present = {
                row[0]
                for row in con.execute(
                    "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                    [contents.run_ids],
                ).fetchall()
            }
            report.runs_imported = [r for r in contents.run_ids if r not in present]
            report.runs_skipped = [r for r in contents.run_ids if r in present]
            if workspace.sessions.exists(session.id):
                original = session.id
                session.id = ArborSession().id
                report.new_id = True
                keep = f" (its runs keep session id {original})" if report.runs_imported else ""
                report.warnings.append(
                    f"a session with id {original} exists here already: the file was saved as "
                    f"a new session {session.id}{keep}."
                )
            if report.runs_skipped:
                report.warnings.append(
                    f"{len(report.runs_skipped)} run(s) are in this trace store already and were "
                    f"skipped, not overwritten: {', '.join(report.runs_skipped)}."
                )
            session.run_ids = list(report.runs_imported)
            origin = f"imported from {path.name} on {datetime.now(UTC):%Y-%m-%d}"
            _import_atomically(workspace, con, contents, columns, report, origin)
    report.warnings.extend(_model_warnings(session.plan))
    return report


def _import_atomically(
    workspace: Workspace,
    con: duckdb.DuckDBPyConnection,
    contents: _Contents,
    columns: dict[str, list[str]],
    report: ImportReport,
    origin: str,
) -> None:
    """Runs and session together: the DuckDB transaction commits only after the session is
    saved, and the session is removed again if that commit fails."""
    session = report.session
    con.execute("BEGIN TRANSACTION")
    try:
        if report.runs_imported:
            _insert_runs(con, contents, columns, report.runs_imported, origin)
        workspace.sessions.save(session, message=f"imported from {contents.source}")
    except BaseException as exc:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        if isinstance(exc, duckdb.Error):
            raise BundleError(
                f"{contents.source} was not imported: the trace store refused its rows ({exc}). "
                "Nothing was changed."
            ) from exc
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error as exc:
        workspace.sessions.delete(session.id)
        raise BundleError(
            f"{contents.source} was not imported: the trace store could not commit ({exc}). "
            "Nothing was changed."
        ) from exc


# -- any file the Sessions page accepts --------------------------------------------------------
def _plan_file(path: Path) -> Plan | None:
    """The plan in ``path`` if it is an Arbor plan file (JSON or YAML); None otherwise."""
    try:
        with path.open("rb") as handle:
            if handle.read(2) == b"PK":
                return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix.lower() in (".yaml", ".yml"):
        return import_plan(text, source=path.name)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    fmt = payload.get("format")
    if fmt == "arbor-plan" or (fmt is None and "root" in payload):
        return Plan.from_dict(payload, source=path.name)
    return None


def import_file(workspace: Workspace, path: Path | str) -> ImportReport:
    """``import_bundle``, and a plan file (JSON or YAML) too: it becomes a new session."""
    path = Path(path)
    plan = _plan_file(path) if path.is_file() else None
    if plan is None:
        return import_bundle(workspace, path)
    session = ArborSession(name=path.stem, task=plan.task, plan=plan)
    workspace.sessions.save(session, message=f"imported from {path.name}")
    return ImportReport(session=session, kind="plan file", warnings=_model_warnings(plan))


def bundle_file_name(session: ArborSession) -> str:
    """A file name for the session's ``.arbor`` file: its name in safe characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", session.name).strip("-.")[:80]
    return f"{stem or 'arbor-session'}-{session.id}{BUNDLE_SUFFIX}"


def export_session_bytes(
    workspace: Workspace, session_id: str, run_ids: Iterable[str] | None = None
) -> tuple[bytes, ExportReport]:
    """``export_session`` into a temporary file, returned as bytes (for a download)."""
    with tempfile.TemporaryDirectory(prefix="arbor-download-") as tmp:
        report = export_session(workspace, session_id, Path(tmp) / "session.arbor", run_ids)
        return report.path.read_bytes(), report


def import_upload(workspace: Workspace, data: bytes, file_name: str) -> ImportReport:
    """``import_file`` for uploaded bytes. They are written to a temporary folder under their
    own file name, so messages and ``runs.origin`` name the file the user chose."""
    safe = Path(file_name).name.strip() or "upload"
    with tempfile.TemporaryDirectory(prefix="arbor-upload-") as tmp:
        target = Path(tmp) / safe
        target.write_bytes(data)
        return import_file(workspace, target)


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "BUNDLE_VERSION",
    "TRACE_MEMBERS",
    "UPGRADES",
    "BundleError",
    "ExportReport",
    "ImportReport",
    "bundle_file_name",
    "export_session",
    "export_session_bytes",
    "import_bundle",
    "import_file",
    "import_upload",
    "session_runs",
]
