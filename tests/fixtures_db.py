"""Database fixtures: every database test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.testing.postgres import pg_admin

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _pg_base_url() -> str | None:
    """Give the PostgreSQL URL tests may use, failing under CI when it is missing."""
    url = os.environ.get("MAILD_TEST_POSTGRES_URL", "").strip()
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail("MAILD_TEST_POSTGRES_URL is not set: CI needs a real PostgreSQL")
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """Give the URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    base = _pg_base_url()
    if base is None:
        pytest.skip("MAILD_TEST_POSTGRES_URL not set")
    name = f"maild_t_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(pg_admin(base, f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {base} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Give the URL of a fresh SQLite file."""
    return f"sqlite+aiosqlite:///{tmp_path / 'maild.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Give a fresh database URL, once per backend."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """Give an engine on a fresh database migrated to the current schema."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Give a session factory on the migrated database."""
    return session_factory(engine)
