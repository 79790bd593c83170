"""Sessions: a task, its plan (with model choices), run caps and the ids of its runs.

Stored with sqlmodel in a SQLite file in the data directory, and exportable as a single JSON file.
Nothing here holds an API key: a remote model reference only names the environment variable.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Field as SQLField
from sqlmodel import Session as DBSession
from sqlmodel import SQLModel, col, create_engine, select

from engine.errors import ArborError, SessionError
from engine.plan import Plan
from engine.plan.templates import check_templates
from engine.run.budget import RunCaps
from storage.revisions import RevisionStore
from storage.sessions_schema import migrate

SESSION_FORMAT = "arbor-session"
SESSION_FORMAT_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _checked_name(name: str) -> str:
    """``name`` without surrounding blanks; a blank name is refused (it could not be found)."""
    name = name.strip()
    if not name:
        raise SessionError("A session name must not be blank.")
    return name


class ArborSession(BaseModel):
    """What the analyst works on; the unit that is saved, reopened and shared."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    name: str = "Untitled session"
    task: str = ""
    plan: Plan | None = None
    caps: RunCaps = Field(default_factory=RunCaps)
    run_ids: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    #: Run control (``app.ui.run_control``): outputs held fixed by node id, nodes to pause
    #: before or after, and step mode. Defaults, so files written before them still load.
    pins: dict[str, str] = Field(default_factory=dict)
    break_before: list[str] = Field(default_factory=list)
    break_after: list[str] = Field(default_factory=list)
    step_mode: bool = False

    # -- files -----------------------------------------------------------------------------
    def to_file_text(self) -> str:
        payload = {
            "format": SESSION_FORMAT,
            "version": SESSION_FORMAT_VERSION,
            **json.loads(self.model_dump_json()),
        }
        return json.dumps(payload, indent=2, ensure_ascii=False)

    @classmethod
    def from_file_text(cls, text: str, *, source: str = "session file") -> ArborSession:
        """Parse a session file; anything else raises ``SessionError`` naming what is wrong."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SessionError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}."
            ) from exc
        except RecursionError:
            raise SessionError(f"{source} is nested too deeply to be a session file.") from None
        if not isinstance(payload, dict) or payload.get("format") != SESSION_FORMAT:
            raise SessionError(
                f"{source} is not an Arbor session file (no format {SESSION_FORMAT!r})."
            )
        version = payload.pop("version", None)
        payload.pop("format")
        if not isinstance(version, int) or version > SESSION_FORMAT_VERSION:
            raise SessionError(
                f"{source} has session format version {version!r}; this Arbor reads up to "
                f"{SESSION_FORMAT_VERSION}."
            )
        plan_payload = payload.pop("plan", None)
        try:
            session = cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "top level"
            raise SessionError(
                f"{source} is not a valid session: at {where}: {first['msg']}."
            ) from exc
        if plan_payload is not None:
            if not isinstance(plan_payload, dict):
                raise SessionError(f"{source} is not a valid session: its plan is not an object.")
            try:
                session.plan = Plan.from_dict(
                    {"format": "arbor-plan", "version": 1, **plan_payload},
                    source=f"{source} (plan)",
                )
                check_templates(session.plan, f"{source} (plan)")
            except ArborError as exc:
                raise SessionError(str(exc)) from exc
        return session


_RUN_CONTROL_FIELDS = ("pins", "break_before", "break_after", "step_mode")


def _run_control(session: ArborSession) -> dict[str, object]:
    return {name: getattr(session, name) for name in _RUN_CONTROL_FIELDS}


def _run_control_fields(text: str | None) -> dict[str, object]:
    """A record's pins and breakpoints; anything unreadable is dropped (they are a
    convenience, never a reason to refuse a session)."""
    try:
        stored = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(stored, dict):
        return {}
    fields = {name: stored[name] for name in _RUN_CONTROL_FIELDS if name in stored}
    try:
        ArborSession.model_validate(fields)
    except ValidationError:
        return {}
    return fields


class SessionRecord(SQLModel, table=True):
    """One row per session; the plan and caps are stored as validated JSON."""

    __tablename__ = "sessions"

    id: str = SQLField(primary_key=True)
    name: str = SQLField(index=True)
    task: str = ""
    plan_json: str | None = None
    caps_json: str = "{}"
    run_ids_json: str = "[]"
    created_at: datetime
    updated_at: datetime
    #: Pins, breakpoints and step mode (sessions migration 2), as JSON.
    run_control_json: str | None = None


class SessionStore:
    """Sessions in the SQLite file at ``path``."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}")
        try:  # the tables, by numbered migrations (storage/sessions_schema.py)
            migrate(self.engine)
        except (sqlite3.DatabaseError, DBAPIError) as exc:
            # A corrupt or foreign file: say which, and leave it for the analyst to inspect.
            self.engine.dispose()
            raise SessionError(
                f"The session store {self.path} cannot be read ({exc}). It was left as it is: "
                "move it away (or restore a backup) and Arbor starts a new one."
            ) from None
        self.revisions = RevisionStore(self.engine)

    def save(self, session: ArborSession, message: str = "") -> ArborSession:
        """Insert or update. An invalid plan is refused before anything is written.

        A plan that differs from the session's latest revision is recorded as a new revision
        (with ``message``), in the same transaction as the session row.
        """
        if session.plan is not None:
            session.plan.validate_graph()
        session.updated_at = _now()
        record = SessionRecord(
            id=session.id,
            name=session.name,
            task=session.task,
            plan_json=session.plan.to_json(indent=None) if session.plan else None,
            caps_json=session.caps.model_dump_json(),
            run_ids_json=json.dumps(session.run_ids),
            created_at=session.created_at,
            updated_at=session.updated_at,
            run_control_json=json.dumps(_run_control(session)),
        )
        with DBSession(self.engine) as db:
            db.merge(record)
            db.flush()  # takes SQLite's write lock first, so revision numbers cannot race
            if session.plan is not None:
                self.revisions.record_in(db, session.id, session.plan, message)
            db.commit()
        return session

    def add_run(self, session_id: str, run_id: str) -> None:
        with DBSession(self.engine) as db:
            record = db.get(SessionRecord, session_id)
            if record is None:
                raise SessionError(f"No saved session with id {session_id!r}.")
            run_ids = json.loads(record.run_ids_json)
            if run_id not in run_ids:
                run_ids.append(run_id)
            record.run_ids_json = json.dumps(run_ids)
            record.updated_at = _now()
            db.add(record)
            db.commit()

    def exists(self, session_id: str) -> bool:
        with DBSession(self.engine) as db:
            return db.get(SessionRecord, session_id) is not None

    def get(self, session_id: str) -> ArborSession:
        with DBSession(self.engine) as db:
            record = db.get(SessionRecord, session_id)
        if record is None:
            raise SessionError(f"No saved session with id {session_id!r}.")
        return self._to_session(record)

    def list(self) -> list[ArborSession]:
        """All sessions, most recently updated first."""
        with DBSession(self.engine) as db:
            records = db.exec(
                select(SessionRecord).order_by(col(SessionRecord.updated_at).desc())
            ).all()
        return [self._to_session(record) for record in records]

    def rename(self, session_id: str, name: str) -> ArborSession:
        """Give a saved session another name; a blank name is refused and nothing changes."""
        name = _checked_name(name)
        with DBSession(self.engine) as db:
            record = db.get(SessionRecord, session_id)
            if record is None:
                raise SessionError(f"No saved session with id {session_id!r}.")
            record.name = name
            record.updated_at = _now()
            db.add(record)
            db.commit()
            db.refresh(record)
            return self._to_session(record)

    def duplicate(self, session_id: str, name: str | None = None) -> ArborSession:
        """Save a copy of a session under a new id: same task, plan and caps, no runs.

        Runs stay with the original (a run belongs to the session it ran under), and the copy's
        revision history starts fresh with one revision, its current plan.
        """
        original = self.get(session_id)
        copy = ArborSession(
            name=_checked_name(name if name is not None else f"{original.name} (copy)"),
            task=original.task,
            plan=original.plan.model_copy(deep=True) if original.plan else None,
            caps=original.caps.model_copy(deep=True),
        )
        return self.save(copy, message=f"duplicated from session {session_id}")

    def search(self, text: str) -> builtins.list[ArborSession]:
        """Sessions whose name or task contains ``text`` (any case), most recently updated
        first; a blank ``text`` matches every session.

        Filtered in Python: SQLite's ``LIKE`` and ``lower()`` fold ASCII only, so "É" would not
        find "é".
        """
        wanted = text.strip().casefold()
        with DBSession(self.engine) as db:
            records = db.exec(
                select(SessionRecord).order_by(col(SessionRecord.updated_at).desc())
            ).all()
        return [
            self._to_session(record)
            for record in records
            if wanted in record.name.casefold() or wanted in (record.task or "").casefold()
        ]

    def delete(self, session_id: str) -> None:
        """Delete the session and its plan revisions."""
        with DBSession(self.engine) as db:
            record = db.get(SessionRecord, session_id)
            if record is not None:
                db.delete(record)
            self.revisions.delete_in(db, session_id)
            db.commit()

    @staticmethod
    def _to_session(record: SessionRecord) -> ArborSession:
        source = f"saved session {record.id!r}"
        try:
            plan = Plan.from_json(record.plan_json, source=source) if record.plan_json else None
            caps = RunCaps.model_validate_json(record.caps_json)
        except (ArborError, ValidationError) as exc:
            raise SessionError(f"{source} is damaged: {exc}") from exc
        return ArborSession(
            id=record.id,
            name=record.name,
            task=record.task,
            plan=plan,
            caps=caps,
            run_ids=json.loads(record.run_ids_json),
            created_at=record.created_at,
            updated_at=record.updated_at,
            **_run_control_fields(record.run_control_json),
        )
