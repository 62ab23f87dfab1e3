"""Database faults while letters are being ingested: the daemon waits, resumes, loses nothing.

PostgreSQL is "restarted" by a fault proxy in front of it (every connection cut, new ones
refused for a few seconds), never for real, since other tests share the server. SQLite is
locked by another process holding ``BEGIN EXCLUSIVE``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from maild.db.engine import create_engine, database_away
from maild.testing.dovecot import DovecotServer
from maild.testing.faultproxy import FaultProxy
from tests.e2e.helpers import (
    at_least,
    folder_synced,
    letter_count,
    numbered,
    unique_folder,
    wait_until,
)
from tests.reliability.helpers import (
    assert_exactly_once,
    fault_config,
    running,
    stored,
    timed,
    wait_healthy,
    wait_trouble,
)

Record = Callable[[str, object], None]
#: How long the database stays away: "a few seconds", as a restart takes.
OUTAGE_SECONDS = 3.0
#: How many times every connection is cut, new ones allowed, before the outage.
BLIPS = 5

# Holds SQLite's write lock the way another program might, then lets go.
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _seed(dovecot: DovecotServer, total: int) -> tuple[str, str]:
    """Make a busy sales folder and a small support folder, both read direct from Dovecot."""
    busy, small = unique_folder("Busy"), unique_folder("Small")
    dovecot.create_folder("sales", busy)
    dovecot.create_folder("support", small)
    dovecot.append_many("sales", busy, numbered(total, "load", padding=4_000))
    dovecot.append_many("support", small, numbered(20, "small"))
    return busy, small


@pytest.mark.slow
async def test_postgresql_restarted_under_load(
    dovecot: DovecotServer, tmp_path: Path, pg_url: str, record_property: Record
) -> None:
    """Every PostgreSQL connection cut and refused for seconds mid-ingest: shown, then resumed,
    and the CRM's letters wake the dispatcher again (LISTEN reconnects)."""
    busy, small = _seed(dovecot, 400)
    server = make_url(pg_url)
    async with FaultProxy(server.port or 5432, server.host or "127.0.0.1") as proxy:
        via_proxy = server.set(port=proxy.port).render_as_string(hide_password=False)
        config = fault_config(dovecot, tmp_path, via_proxy, {"sales": [busy], "support": [small]})
        async with running(config) as daemon:
            await wait_until(lambda: at_least(pg_url, 40), what="ingest under way")
            blips = 0
            for _ in range(BLIPS):  # connections die, new ones work: a pooler restarting
                blips += proxy.cut()
                await asyncio.sleep(0.2)
            proxy.refuse()
            cut = proxy.cut()
            stored_at_cut = await letter_count(pg_url)
            arriving = numbered(3, "while down")
            await asyncio.to_thread(dovecot.append_many, "sales", busy, arriving)
            error = await wait_trouble(daemon, "sales", busy)
            await asyncio.sleep(OUTAGE_SECONDS)
            proxy.accept()

            async def healed() -> None:
                await wait_until(lambda: stored(pg_url, busy, 403), what="every letter")
                await wait_healthy(daemon)

            record_property("recovery_seconds", await timed(healed))
            await wait_until(lambda: _listening(pg_url), what="LISTEN for the CRM's letters again")
    record_property("connections_cut", f"{blips} in blips, {cut} at the restart")
    record_property("stored_at_cut", stored_at_cut)
    record_property("error", error[:200])
    await assert_exactly_once(pg_url, dovecot, "sales", busy)
    await assert_exactly_once(pg_url, dovecot, "support", small)


async def _listening(db_url: str) -> bool:
    """Tell whether a session of this database listens for the CRM's outbox inserts."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
            return bool(found.scalar_one())
    finally:
        await engine.dispose()


async def test_postgresql_connection_lost_while_storing_a_letter(
    dovecot: DovecotServer, tmp_path: Path, pg_url: str
) -> None:
    """The connection dies inside a letter's transaction: the letter is stored later, not "failed"."""
    folder = unique_folder("Quiet")
    dovecot.create_folder("sales", folder)
    server = make_url(pg_url)
    async with FaultProxy(server.port or 5432, server.host or "127.0.0.1") as proxy:
        via_proxy = server.set(port=proxy.port).render_as_string(hide_password=False)
        config = fault_config(dovecot, tmp_path, via_proxy, {"sales": [folder]})
        async with running(config) as daemon:
            await wait_until(lambda: folder_synced(daemon, "sales", folder), what="the first pass")
            proxy.cut()  # the pool reconnects, and a new connection sends the INSERT's text
            proxy.on_request(b"INSERT INTO letters ", cut=True)
            await asyncio.to_thread(dovecot.append, "sales", folder, numbered(1, "quiet")[0])
            await wait_until(lambda: stored(pg_url, folder, 1), what="the letter")
            await wait_healthy(daemon)
    await assert_exactly_once(pg_url, dovecot, "sales", folder)


async def test_sqlite_locked_by_another_process(
    dovecot: DovecotServer, tmp_path: Path, sqlite_url: str, record_property: Record
) -> None:
    """Another process holding SQLite's write lock for seconds: the daemon waits, then goes on."""
    busy, small = _seed(dovecot, 200)
    config = fault_config(dovecot, tmp_path, sqlite_url, {"sales": [busy], "support": [small]})
    path = make_url(sqlite_url).database
    assert path is not None
    async with running(config):
        await wait_until(lambda: at_least(sqlite_url, 20), what="ingest under way")
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, path, str(OUTAGE_SECONDS), stdout=asyncio.subprocess.PIPE
        )
        assert locker.stdout is not None
        assert await asyncio.wait_for(locker.stdout.readline(), 30) == b"locked\n"
        await asyncio.to_thread(dovecot.append_many, "sales", busy, numbered(2, "while locked"))
        assert await asyncio.wait_for(locker.wait(), 30) == 0

        async def resumed() -> None:
            await wait_until(lambda: stored(sqlite_url, busy, 202), what="every letter")

        record_property("after_unlock_seconds", await timed(resumed))
    await assert_exactly_once(sqlite_url, dovecot, "sales", busy)
    await assert_exactly_once(sqlite_url, dovecot, "support", small)


def _dbapi(kind: type[sa_exc.DBAPIError], *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return kind("INSERT INTO letters", {}, Exception("driver"), connection_invalidated=invalidated)


def test_database_away_is_told_from_a_refused_row() -> None:
    """Lost connections, locks and timeouts are the database being away; a bad row is not."""
    away = [
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        _dbapi(sa_exc.OperationalError),  # SQLite: database is locked
        _dbapi(sa_exc.InterfaceError),  # asyncpg: connection is closed
        _dbapi(sa_exc.DBAPIError, invalidated=True),  # closed in the middle of an operation
    ]
    refused = [
        _dbapi(sa_exc.IntegrityError),
        _dbapi(sa_exc.DataError),
        _dbapi(sa_exc.DBAPIError),
        ValueError("bad value"),
    ]
    assert [database_away(exc) for exc in away] == [True] * len(away)
    assert [database_away(exc) for exc in refused] == [False] * len(refused)
