"""The schema of ``sessions.sqlite`` (sessions and plan revisions) and its numbered migrations.

Like the trace store, the file records which migrations it has applied, in ``schema_migrations``
(version, name, applied_at); ``migrate`` applies the missing ones in order, in one transaction
that holds SQLite's write lock, so two processes opening the file at once cannot both apply
one. Append to ``MIGRATIONS``, never edit an entry: a file may have applied it already.

A file made before migrations were numbered has the tables but no ``schema_migrations``; it is
recognised as version 1: the first migration creates only what is missing (``IF NOT EXISTS``),
so on such a file it changes nothing but what an older file lacked (``plan_revisions`` came
after ``sessions``), and then it is recorded as applied. Rows are never touched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import suppress

from sqlalchemy import Engine

Migration = Callable[[sqlite3.Cursor], None]


def _create_v1(cur: sqlite3.Cursor) -> None:
    """Sessions and plan revisions, as ``SessionRecord`` and ``PlanRevisionRecord`` map them."""
    for statement in (
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            plan_json VARCHAR,
            caps_json VARCHAR NOT NULL,
            run_ids_json VARCHAR NOT NULL,
            created_at DATETIME NOT NULL,
            updated_at DATETIME NOT NULL,
            PRIMARY KEY (id)
        )
        """,
        "CREATE INDEX IF NOT EXISTS ix_sessions_name ON sessions (name)",
        """
        CREATE TABLE IF NOT EXISTS plan_revisions (
            id INTEGER NOT NULL,
            session_id VARCHAR NOT NULL,
            number INTEGER NOT NULL,
            created_at DATETIME NOT NULL,
            message VARCHAR NOT NULL,
            plan_json VARCHAR NOT NULL,
            PRIMARY KEY (id),
            UNIQUE (session_id, number)
        )
        """,
        "CREATE INDEX IF NOT EXISTS ix_plan_revisions_session_id ON plan_revisions (session_id)",
    ):
        cur.execute(statement)


def _add_v2_run_control(cur: sqlite3.Cursor) -> None:
    """A session's pins, breakpoints and step mode (``app.ui.run_control``), as JSON.

    A file whose sessions table was made from the current model before migrations were
    recorded (SQLModel's ``create_all``) has the column already.
    """
    columns = {row[1] for row in cur.execute("PRAGMA table_info(sessions)").fetchall()}
    if "run_control_json" not in columns:
        cur.execute("ALTER TABLE sessions ADD COLUMN run_control_json VARCHAR")


#: Ordered, named migrations; a file records which it has applied. Append, never edit.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("create sessions and plan_revisions", _create_v1),
    ("run control: pins, breakpoints, step mode", _add_v2_run_control),
]

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR,"
    " applied_at DATETIME DEFAULT CURRENT_TIMESTAMP)"
)


def _applied(cur: sqlite3.Cursor) -> set[int] | None:
    """The versions the file has applied; None when it has no ``schema_migrations`` yet."""
    found = cur.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if found is None:
        return None
    return {row[0] for row in cur.execute("SELECT version FROM schema_migrations").fetchall()}


def _missing(applied: set[int] | None) -> list[int]:
    return [v for v in range(1, len(MIGRATIONS) + 1) if applied is None or v not in applied]


def _cursor(driver_connection: object) -> sqlite3.Cursor:
    if not isinstance(driver_connection, sqlite3.Connection):
        raise TypeError(f"sessions need SQLite, not {type(driver_connection).__name__}")
    return driver_connection.cursor()


def migrate(engine: Engine) -> int:
    """Apply the migrations ``engine``'s SQLite file lacks; return its schema version.

    A file that is up to date costs two reads and takes no lock.
    """
    raw = engine.raw_connection()
    try:
        cur = _cursor(raw.driver_connection)
        if not _missing(_applied(cur)):
            return len(MIGRATIONS)
        cur.execute("BEGIN IMMEDIATE")  # the write lock: another opener waits, then sees them
        try:
            missing = _missing(_applied(cur))  # again, under the lock
            cur.execute(_VERSION_TABLE)
            for version in missing:
                name, step = MIGRATIONS[version - 1]
                step(cur)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name)
                )
            cur.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            raise
        return len(MIGRATIONS)
    finally:
        raw.close()


def schema_version(engine: Engine) -> int:
    """The highest migration ``engine``'s file has applied (0: none, or not versioned yet)."""
    raw = engine.raw_connection()
    try:
        applied = _applied(_cursor(raw.driver_connection))
        return max(applied, default=0) if applied else 0
    finally:
        raw.close()


__all__ = ["MIGRATIONS", "migrate", "schema_version"]
