"""Schema migrations through Alembic, run on maild's own engine so SQLite settings apply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from maild.errors import DatabaseError, SchemaOutOfDate

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "maild_alembic_version"
#: The newest revision under migrations/versions (a test checks it against Alembic's head):
#: checking the schema then needs one SELECT, not Alembic and its scripts loaded.
HEAD_REVISION = "0008"
#: The PostgreSQL advisory lock key that lets one starting process migrate while others wait.
MIGRATION_LOCK = 0x6D61696C64  # "maild"


if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def alembic_config() -> AlembicConfig:
    """Build the Alembic config in code, so no alembic.ini has to travel with the package."""
    from alembic.config import Config as AlembicConfig  # only to migrate: it takes time to load

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """Give the newest revision of the migration scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@dataclass(frozen=True)
class Revision:
    """One migration script as an admin is shown it: its id and what it adds."""

    id: str
    message: str


def revisions() -> list[Revision]:
    """List the migration scripts oldest first, each with its docstring's first line."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [
        Revision(s.revision, (s.doc or "").partition("\n")[0].strip())
        for s in reversed(list(script.walk_revisions()))
    ]


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` in one transaction (see ``_migrate``)."""
    await _migrate(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str, *, expect: str | None = None) -> None:
    """Take the schema back down to ``revision`` (``"base"``: no maild table) in one transaction.

    What a downgrade drops is gone: the columns and tables of the newer revisions, with their
    data. Every other row stays, on SQLite too, where some steps copy a table to drop a column.
    With ``expect``, the schema must be at that revision (``"base"``: none) inside the same
    transaction, so what was shown to be dropped is all that is: else nothing is changed.
    """
    await _migrate(engine, "downgrade", revision, expect=expect)


async def _migrate(
    engine: AsyncEngine, direction: str, revision: str, *, expect: str | None = None
) -> None:
    """Run Alembic's ``upgrade`` or ``downgrade`` to ``revision`` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so processes started together
    migrate one after the other: the first does the work, the others find the schema current.
    On SQLite it runs with foreign keys off, as SQLite's own procedure for altering a table
    asks: a step that copies a table (``folders``, ``letters``, ``outbox``) drops the old one,
    and with foreign keys on that drop would delete every row referencing it, in cascade.
    """

    def _run(sync_conn: Any) -> None:
        from alembic import command

        if expect is not None:
            _require_revision(sync_conn, expect)
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        getattr(command, direction)(config, revision)

    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.run_sync(_foreign_keys, False)
        try:
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                    await conn.run_sync(_run)
                else:
                    await conn.run_sync(_run_checked, _run, direction, revision)
        finally:
            if conn.dialect.name == "sqlite":
                await _foreign_keys_back_on(conn)


async def _foreign_keys_back_on(conn: AsyncConnection) -> None:
    """Enforce foreign keys again, or make sure the pool never hands this connection out again."""
    try:
        await conn.run_sync(_foreign_keys, True)
    except Exception:
        await conn.invalidate()
        raise


def _foreign_keys(sync_conn: Any, on: bool) -> None:
    """Switch SQLite's foreign keys outside a transaction (inside one the PRAGMA does nothing)."""
    cursor = sync_conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def _run_checked(sync_conn: Any, run: Any, direction: str, revision: str) -> None:
    """Run a SQLite migration, then refuse to commit it if it left a row pointing at nothing.

    Only references broken by the migration count: the CRM's tables may hold older ones. A
    start that finds the schema current skips the check, which reads every referencing table.
    """
    if (
        direction == "upgrade"
        and revision == "head"
        and _sqlite_revision(sync_conn) == HEAD_REVISION
    ):
        run(sync_conn)
        return
    before = _broken_references(sync_conn)
    run(sync_conn)
    broken = _broken_references(sync_conn) - before
    if broken:
        tables = ", ".join(sorted({f"{child} -> {parent}" for child, _, parent, _ in broken}))
        raise DatabaseError(
            f"the migration would break {len(broken)} references ({tables}): nothing was changed"
        )


def _require_revision(sync_conn: Any, expect: str) -> None:
    """Refuse to go on when the schema is not at ``expect``: another process moved it."""
    if sync_conn.dialect.name == "sqlite":
        found = _sqlite_revision(sync_conn)
    else:
        found = _postgresql_revision(sync_conn)
    if (found or "base") != expect:
        raise DatabaseError(
            f"the database schema moved from {expect} to {found or 'base'} "
            "since it was read: nothing was changed"
        )


def _postgresql_revision(sync_conn: Any) -> str | None:
    """Read the revision inside the migration's transaction, None before the first."""
    if sync_conn.exec_driver_sql(f"SELECT to_regclass('{VERSION_TABLE}')").scalar() is None:
        return None
    version = sync_conn.exec_driver_sql(f"SELECT max(version_num) FROM {VERSION_TABLE}").scalar()
    return None if version is None else str(version)


def _sqlite_revision(sync_conn: Any) -> str | None:
    """Read the revision inside the migration's transaction, None before the first."""
    found = sync_conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).first()
    if found is None:
        return None
    version = sync_conn.exec_driver_sql(f"SELECT max(version_num) FROM {VERSION_TABLE}").scalar()
    return None if version is None else str(version)


def _broken_references(sync_conn: Any) -> set[tuple[Any, ...]]:
    """List SQLite's rows whose foreign key points at no row, as (table, rowid, parent, key)."""
    return {tuple(row) for row in sync_conn.exec_driver_sql("PRAGMA foreign_key_check").all()}


async def current_revision(engine: AsyncEngine) -> str | None:
    """Read the revision the database is at, None when maild never migrated it."""

    async with engine.connect() as conn:
        try:
            rows = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
        except (OperationalError, ProgrammingError):  # no such table: never migrated
            return None
    if len(rows) > 1:
        raise SchemaOutOfDate(f"{VERSION_TABLE} holds {len(rows)} revisions, not one")
    return str(rows[0][0]) if rows else None


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to run against a schema older or newer than this maild."""
    current = await current_revision(engine)
    head = HEAD_REVISION
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'no revision (never migrated)'}, "
            f"this maild needs {head}: "
            "run `maild db upgrade -c CONFIG`"
        )
