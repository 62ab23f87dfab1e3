"""Schema migrations through Alembic, run on maild's own engine so SQLite settings apply."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.errors import SchemaOutOfDate

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


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so processes started together
    migrate one after the other: the first does the work, the others find the schema current.
    """

    def _run(sync_conn: Any) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(_run)


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
            f"database schema is at {current or 'nothing'}, this maild needs {head}: "
            "run `maild db upgrade -c CONFIG`"
        )
