"""What `maild leads disable-potential-clients` and `enable-potential-clients` run, from a config.

The database is opened without creating or migrating it, as the other admin commands do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db.engine import session_factory
from maild.dryrun.replay import open_read_only
from maild.errors import DatabaseError
from maild.leads.convert import ConversionReport, Pending, Progress, disable, enable, pending
from maild.settings import Config


@asynccontextmanager
async def _sessions(config: Config) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Open the configured database (never creating it) for one command; name a driver error plainly."""
    engine = await open_read_only(config)
    try:
        yield session_factory(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"database error: {type(exc).__name__}: {exc}") from exc
    finally:
        await engine.dispose()


async def potential_clients_pending(config: Config) -> Pending:
    """Tell how many potential clients switching off would convert, and whether they are on."""
    async with _sessions(config) as sessions:
        return await pending(sessions)


async def disable_potential_clients(
    config: Config, *, progress: Progress | None = None
) -> ConversionReport:
    """Convert every unlinked potential client into a client, then switch them off."""
    async with _sessions(config) as sessions:
        return await disable(sessions, progress=progress)


async def enable_potential_clients(config: Config) -> None:
    """Switch potential clients back on."""
    async with _sessions(config) as sessions:
        await enable(sessions)
