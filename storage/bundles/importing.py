"""Importing an ``.arbor`` file, a version 1 session file or a plan file: the runs are checked
against this trace store and copied in with the session in one transaction, flagged as imported
(``import_bundle``, ``import_file``, ``import_upload``)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from engine.errors import BundleError
from engine.plan import Plan
from engine.plan.files import import_plan
from engine.plan.templates import check_templates
from storage.bundles.format import (
    OPTIONAL_TRACE_TABLES,
    TRACE_MEMBERS,
    TRACE_TABLES,
    Contents,
    plan_refs,
)
from storage.bundles.reading import read_file
from storage.sessions import ArborSession
from storage.workspace import Workspace

#: Columns set by the import itself, whatever the file says.
_SET_ON_IMPORT = {"runs": "origin", "model_calls": "imported"}


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


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, bool]:
    """The store table's columns: name -> whether a value is required (NOT NULL, no default)."""
    rows = con.execute(
        "SELECT column_name, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {name: nullable == "NO" and default is None for name, nullable, default in rows}


def _check_traces(con: duckdb.DuckDBPyConnection, contents: Contents) -> dict[str, list[str]]:
    """Check the Parquet members against this store; return each table's columns to copy."""
    source = contents.source
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row is not None  # an aggregate answers one row
    store_version = row[0] or 0
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
    carried = [
        t for t in ("node_executions", "model_calls", "annotations") if t in contents.trace_files
    ]
    for table in carried:
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
    contents: Contents,
    columns: dict[str, list[str]],
    run_ids: list[str],
    origin: str,
) -> None:
    """Copy the runs' rows in; the caller holds the transaction."""
    extra = {"runs": ", $origin AS origin", "model_calls": ", true AS imported"}
    optional = [table for table in OPTIONAL_TRACE_TABLES if table in contents.trace_files]
    for table in (*TRACE_TABLES, *optional):
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
    for ref in plan_refs(plan):
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
        contents = read_file(path, Path(tmp))
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
    contents: Contents,
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
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    fmt = payload.get("format")
    if fmt == "arbor-plan" or (fmt is None and "root" in payload):
        plan = Plan.from_dict(payload, source=path.name)
        check_templates(plan, path.name)
        return plan
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


def import_upload(workspace: Workspace, data: bytes, file_name: str) -> ImportReport:
    """``import_file`` for uploaded bytes. They are written to a temporary folder under their
    own file name, so messages and ``runs.origin`` name the file the user chose."""
    safe = Path(file_name).name.strip() or "upload"
    with tempfile.TemporaryDirectory(prefix="arbor-upload-") as tmp:
        target = Path(tmp) / safe
        target.write_bytes(data)
        return import_file(workspace, target)


__all__ = ["ImportReport", "import_bundle", "import_file", "import_upload"]
