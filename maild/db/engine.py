"""Engine and session factory, with the SQLite settings that keep concurrent writers safe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    """Tell the embedded database from PostgreSQL."""
    return make_url(url).get_backend_name() == "sqlite"


def display_url(url: str) -> str:
    """Give the database URL with its password masked, so it can be printed or logged."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 20
) -> AsyncEngine:
    """Create the engine; on SQLite, WAL + busy timeout + BEGIN IMMEDIATE so no update is lost.

    On PostgreSQL a process keeps up to ``pool_size`` connections open and opens up to
    ``max_overflow`` more at busy moments; every `maild run` process counts against the
    server's ``max_connections``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_parent_dir(parsed.database)
        # No statement cache: a cached statement keeps SQLite's copy of the values it bound
        # last, a 25 MB letter's raw bytes included, until the same SQL runs again.
        connect_args = {"timeout": 30, "cached_statements": 0}
        engine = create_async_engine(url, echo=echo, connect_args=connect_args)
        _install_sqlite_events(engine.sync_engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
    )


def _ensure_parent_dir(database: str | None) -> None:
    """Create the SQLite file's directory, so the default var/maild.db works on a fresh clone."""
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def sqlite_sync_twin(engine: AsyncEngine) -> Engine | None:
    """Give a blocking engine on the same SQLite file, for long runs of small transactions.

    Each statement through the async SQLite driver costs several thread hand-offs; a batch job
    that runs its transactions in a worker thread on this engine skips them. None for
    PostgreSQL and for in-memory databases, which a second engine would not see.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    twin = sa_create_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30})
    _install_sqlite_events(twin)
    return twin


def _install_sqlite_events(engine: Engine) -> None:
    """Apply the SQLAlchemy recipe for real SQLite transactions (driver autocommit + BEGIN IMMEDIATE)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _switch_to_wal(cursor: Any, attempts: int = 100) -> None:
    """Turn WAL on; a new file's switch needs a moment alone, which the busy timeout does not wait for."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver adapter may wrap sqlite3.OperationalError
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def database_away(exc: BaseException) -> bool:
    """Tell a database that is unreachable, restarting or locked from one that refuses a row.

    A lost or refused connection, a timeout, or SQLite's lock held too long say nothing about
    the letter being stored: it must be tried again later, not kept aside as failed.
    """
    if isinstance(exc, OSError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return False


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Give sessions that keep loaded values after commit; one per letter or job, never shared."""
    return async_sessionmaker(engine, expire_on_commit=False)
