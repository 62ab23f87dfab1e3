"""Schema migrations through Alembic, run on maild's own engine so SQLite settings apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.errors import SchemaOutOfDate

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "maild_alembic_version"
#: The PostgreSQL advisory lock key that lets one starting process migrate while others wait.
MIGRATION_LOCK = 0x6D61696C64  # "maild"


def alembic_config() -> AlembicConfig:
    """Build the Alembic config in code, so no alembic.ini has to travel with the package."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """Give the newest revision this maild knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so processes started together
    migrate one after the other: the first does the work, the others find the schema current.
    """

    def _run(sync_conn: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(_run)


async def current_revision(engine: AsyncEngine) -> str | None:
    """Read the revision the database is at, None when maild never migrated it."""

    def _read(sync_conn: Any) -> str | None:
        context = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to run against a schema older or newer than this maild."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this maild needs {head}: "
            "run `maild db upgrade -c CONFIG`"
        )
