"""Alembic environment: maild's own version table, and autogenerate blind to the CRM's tables."""

from __future__ import annotations

from typing import Any

from alembic import context

from maild.db.tables import OWNED_TABLES, Base

VERSION_TABLE = "maild_alembic_version"


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Let autogenerate see only maild's tables, so it never drops one the CRM owns."""
    if type_ == "table":
        return name in OWNED_TABLES
    return True


def run_migrations() -> None:
    """Run on the connection maild hands over (see maild.db.migrate); online mode only."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `maild db upgrade`, not the alembic CLI")
    if (
        connection.dialect.name == "sqlite"
        and connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    ):
        # A step that copies a table would delete, in cascade, every row referencing it.
        raise RuntimeError("SQLite migrations run with foreign keys off: use maild.db.migrate")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
