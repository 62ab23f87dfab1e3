"""Throwaway PostgreSQL databases for the tests and the benchmark, made on a running server."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url


async def pg_admin(url: str, sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the server named by a SQLAlchemy URL."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
