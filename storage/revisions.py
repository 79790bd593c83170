"""Plan revisions: every saved change of a session's plan, numbered 1, 2, 3... per session.

A revision is written when a session is saved with a plan that differs from the session's latest
revision; restoring one means taking its plan and saving the session again, which adds a new
revision rather than rewriting history. Stored next to the sessions (same SQLite engine).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, UniqueConstraint, delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field as SQLField
from sqlmodel import Session as DBSession
from sqlmodel import SQLModel, col, select

from engine.errors import ArborError, SessionError
from engine.plan import Plan
from engine.plan.diff import PlanDiff, diff_plans
from storage.sessions_schema import migrate

FIRST_SUMMARY = "first revision"
UNREADABLE_SUMMARY = "changed (the revision before is unreadable)"


class PlanRevisionRecord(SQLModel, table=True):
    """One row per saved version of a session's plan."""

    __tablename__ = "plan_revisions"
    __table_args__ = (UniqueConstraint("session_id", "number"),)

    id: int | None = SQLField(default=None, primary_key=True)
    session_id: str = SQLField(index=True)
    number: int
    created_at: datetime
    message: str = ""
    plan_json: str


@dataclass(frozen=True)
class Revision:
    """A saved plan version; ``summary`` describes the change from the revision before it."""

    number: int
    created_at: datetime
    message: str
    plan: Plan
    summary: str


def _aware(moment: datetime) -> datetime:
    # SQLite keeps no zone; everything is written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class RevisionStore:
    """Revisions of session plans, in the ``plan_revisions`` table of ``engine``'s database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        migrate(engine)  # no-op when the SessionStore sharing the engine migrated it already

    # -- writing ---------------------------------------------------------------------------
    def record(self, session_id: str, plan: Plan, message: str = "") -> Revision | None:
        """Store ``plan`` as the session's next revision; ``None`` if it equals the latest."""
        for attempt in range(3):
            with DBSession(self.engine) as db:
                try:
                    revision = self.record_in(db, session_id, plan, message)
                    db.commit()
                    return revision
                except IntegrityError:  # another writer took the number; count again
                    db.rollback()
                    if attempt == 2:
                        raise
        return None  # pragma: no cover - the loop returns or raises

    def record_in(
        self, db: DBSession, session_id: str, plan: Plan, message: str = ""
    ) -> Revision | None:
        """Like ``record`` inside the caller's transaction (the caller commits)."""
        plan.validate_graph()
        latest = db.exec(
            select(PlanRevisionRecord)
            .where(col(PlanRevisionRecord.session_id) == session_id)
            .order_by(col(PlanRevisionRecord.number).desc())
            .limit(1)
        ).first()
        plan_json = plan.to_json(indent=None)
        previous = self._plan_or_none(latest) if latest else None
        if latest is not None and (latest.plan_json == plan_json or previous == plan):
            return None
        record = PlanRevisionRecord(
            session_id=session_id,
            number=latest.number + 1 if latest else 1,
            created_at=datetime.now(UTC),
            message=message,
            plan_json=plan_json,
        )
        db.add(record)
        db.flush()
        return self._revision(record, plan.model_copy(deep=True), previous)

    def delete_in(self, db: DBSession, session_id: str) -> None:
        """Delete all of a session's revisions inside the caller's transaction."""
        db.exec(delete(PlanRevisionRecord).where(col(PlanRevisionRecord.session_id) == session_id))

    def delete(self, session_id: str) -> None:
        with DBSession(self.engine) as db:
            self.delete_in(db, session_id)
            db.commit()

    # -- reading ---------------------------------------------------------------------------
    def list(self, session_id: str) -> builtins.list[Revision]:
        """The session's revisions, newest first (empty if it has none)."""
        with DBSession(self.engine) as db:
            records = db.exec(
                select(PlanRevisionRecord)
                .where(col(PlanRevisionRecord.session_id) == session_id)
                .order_by(col(PlanRevisionRecord.number))
            ).all()
        revisions: builtins.list[Revision] = []
        previous: Plan | None = None
        for record in records:
            plan = self._plan(record)
            revisions.append(self._revision(record, plan, previous))
            previous = plan
        return revisions[::-1]

    def count(self, session_id: str) -> int:
        with DBSession(self.engine) as db:
            return db.exec(
                select(func.count())
                .select_from(PlanRevisionRecord)
                .where(col(PlanRevisionRecord.session_id) == session_id)
            ).one()

    def get(self, session_id: str, number: int) -> Revision:
        """Revision ``number`` of the session; ``SessionError`` if there is none."""
        with DBSession(self.engine) as db:
            records = db.exec(
                select(PlanRevisionRecord)
                .where(col(PlanRevisionRecord.session_id) == session_id)
                .where(col(PlanRevisionRecord.number).in_([number - 1, number]))
                .order_by(col(PlanRevisionRecord.number))
            ).all()
        by_number = {record.number: record for record in records}
        if number not in by_number:
            raise SessionError(f"Session {session_id!r} has no plan revision {number}.")
        before = by_number.get(number - 1)
        previous = self._plan_or_none(before) if before is not None else None
        return self._revision(by_number[number], self._plan(by_number[number]), previous)

    def diff(self, session_id: str, a: int, b: int) -> PlanDiff:
        """What changed from revision ``a`` to revision ``b`` of the session."""
        return diff_plans(self.get(session_id, a).plan, self.get(session_id, b).plan)

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _plan(record: PlanRevisionRecord) -> Plan:
        source = f"revision {record.number} of session {record.session_id!r}"
        try:
            return Plan.from_json(record.plan_json, source="its plan")
        except ArborError as exc:
            raise SessionError(f"{source} is damaged: {exc}") from exc

    @classmethod
    def _plan_or_none(cls, record: PlanRevisionRecord) -> Plan | None:
        try:
            return cls._plan(record)
        except SessionError:
            return None  # a damaged latest revision never equals a valid plan

    @staticmethod
    def _revision(record: PlanRevisionRecord, plan: Plan, previous: Plan | None) -> Revision:
        if previous is not None:
            summary = diff_plans(previous, plan).summary()
        else:
            summary = FIRST_SUMMARY if record.number == 1 else UNREADABLE_SUMMARY
        return Revision(
            number=record.number,
            created_at=_aware(record.created_at),
            message=record.message,
            plan=plan,
            summary=summary,
        )
