"""Exporting a session to an ``.arbor`` file: choosing its runs, the registry entries that may
be shared, refusing API key values anywhere in what would be written, and writing the zip
atomically (``export_session``, ``export_session_bytes``, ``session_runs``)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb

from engine.errors import BundleError, BundleWriteError, RegistryError
from engine.models.registry import REGISTRY_FORMAT, REGISTRY_VERSION, Registry
from engine.plan import Plan
from engine.redaction import credentials_refusal
from storage.bundles.format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    MANIFEST_MEMBER,
    MODELS_MEMBER,
    OPTIONAL_TRACE_TABLES,
    SESSION_MEMBER,
    TRACE_MEMBERS,
    TRACE_TABLES,
    plan_refs,
    sha256,
)
from storage.sessions import ArborSession
from storage.trace_export import arbor_version
from storage.traces import MIGRATIONS, TraceStore
from storage.workspace import Workspace

#: Row order inside each Parquet file, so two exports of the same runs hold the same rows.
_ORDER = {
    "runs": "started_at, run_id",
    "node_executions": "run_id, node_id",
    "model_calls": "run_id, started_at, call_id",
    "annotations": "run_id, created_at, annotation_id",
}
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
    refs = plan_refs(plan)
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
    names = {ref.api_key_env for ref in plan_refs(plan) if ref.api_key_env}
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
    for table in (*TRACE_TABLES, *OPTIONAL_TRACE_TABLES):
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
            row = con.execute(
                f"SELECT count(*) FROM {table} WHERE run_id IN (SELECT unnest($runs::VARCHAR[]))"
                f" AND ({found})",
                {"value": value, "runs": run_ids},
            ).fetchone()
            assert row is not None  # an aggregate answers one row
            hits = row[0]
            if hits:
                raise BundleError(
                    f"Not exported: the value of ${name} (the API key of a model this session "
                    f"uses) appears in {hits} {table} row(s) of the chosen runs. Leave those "
                    "runs out, or change the key."
                )


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
    for ref in plan_refs(session.plan):
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
            for table in (*TRACE_TABLES, *OPTIONAL_TRACE_TABLES):
                target = folder / f"{table}.parquet"
                try:
                    con.execute(
                        f"COPY (SELECT * FROM {table} WHERE run_id IN"
                        " (SELECT unnest(?::VARCHAR[])) ORDER BY"
                        f" {_ORDER[table]}) TO {_sql_path(target)} (FORMAT parquet)",
                        [chosen],
                    )
                except duckdb.IOException as exc:  # the temporary folder's disk is full
                    raise BundleError(
                        f"Not exported: cannot write the traces to the temporary folder {tmp}:"
                        f" {exc}. Nothing was written to {path}."
                    ) from exc
                files[TRACE_MEMBERS[table]] = target
        texts = {SESSION_MEMBER: session.model_copy(update={"run_ids": chosen}).to_file_text()}
        if models:
            payload = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION, "models": models}
            texts[MODELS_MEMBER] = json.dumps(payload, indent=2, ensure_ascii=False)
        for name, text in texts.items():
            files[name] = folder / name
            try:
                files[name].write_text(text, encoding="utf-8")
            except OSError as exc:
                raise BundleWriteError(
                    f"Not exported: cannot write {files[name]}: {exc.strerror or exc}. Nothing"
                    f" was written to {path}."
                ) from exc
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "arbor_version": arbor_version(),
            "trace_schema_version": len(MIGRATIONS),
            "session_id": session.id,
            "run_ids": chosen,
            "members": {name: sha256(file) for name, file in sorted(files.items())},
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
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a quota: say so, as one line
            raise BundleWriteError(
                f"Not exported: cannot write {path}: {exc.strerror or exc}. Nothing was written."
            ) from exc
        raise


def export_session_bytes(
    workspace: Workspace, session_id: str, run_ids: Iterable[str] | None = None
) -> tuple[bytes, ExportReport]:
    """``export_session`` into a temporary file, returned as bytes (for a download)."""
    with tempfile.TemporaryDirectory(prefix="arbor-download-") as tmp:
        report = export_session(workspace, session_id, Path(tmp) / "session.arbor", run_ids)
        return report.path.read_bytes(), report


__all__ = ["ExportReport", "export_session", "export_session_bytes", "session_runs"]
