"""The write gate: one process's SQLite transactions take turns in the order they asked."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db.gate import GatedSessions, gated
from maild.outbox.dispatcher import Dispatcher
from maild.runtime import Daemon, endpoint_for
from maild.settings import Config
from maild.testing.configs import unreached_account


def config(url: str = "sqlite+aiosqlite:///var/maild.db") -> Config:
    """Give a config with one account the dispatcher never needs to reach."""
    return Config.model_validate(
        {
            "database": {"url": url},
            "accounts": [unreached_account(watch=["INBOX"])],
        }
    )


async def test_no_gate_leaves_the_sessions_as_they_are(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Without a gate (PostgreSQL) the factory itself is used: nothing waits on anything."""
    assert gated(sessions, None) is sessions
    assert isinstance(gated(sessions, asyncio.Lock()), GatedSessions)


async def test_transactions_take_turns_in_the_order_asked(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A writer that asks while another writes goes next, ahead of one that asks later."""
    gate = asyncio.Lock()
    writes = gated(sessions, gate)
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, hold: asyncio.Event | None = None) -> None:
        """Run one transaction, recording when it got its turn."""
        async with writes.begin() as session:
            order.append(name)
            await session.execute(text("SELECT 1"))
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(write("first", release))
    while not order:
        await asyncio.sleep(0)
    second = asyncio.create_task(write("second"))
    await asyncio.sleep(0.01)
    third = asyncio.create_task(write("third"))
    await asyncio.sleep(0.01)
    assert order == ["first"]
    release.set()
    await asyncio.gather(first, second, third)
    assert order == ["first", "second", "third"]


async def test_the_dispatcher_waits_its_turn_at_the_gate(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A dispatcher given the gate claims nothing while another transaction holds it."""
    gate = asyncio.Lock()
    dispatcher = Dispatcher(
        sessions, config(), endpoint_for=lambda account: endpoint_for(account, 5.0), write_gate=gate
    )
    try:
        async with gate:
            passing = asyncio.create_task(dispatcher.run_once())
            await asyncio.sleep(0.05)
            assert not passing.done()
        report = await asyncio.wait_for(passing, 10)
        assert report.done == 0 and not gate.locked()
    finally:
        await dispatcher.close()


def test_the_daemon_s_dispatcher_takes_turns_with_its_folders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In `maild run` on SQLite the dispatcher's sessions wait at the folders' gate; on PostgreSQL none."""
    monkeypatch.delenv("MAILD_DATABASE_URL", raising=False)
    daemon = Daemon(config())
    dispatcher = daemon._dispatcher(async_sessionmaker())
    assert isinstance(dispatcher.sessions, GatedSessions)
    assert dispatcher.sessions.gate is daemon._sqlite_gate()
    on_postgres = Daemon(config("postgresql+asyncpg://maild@db.example/maild"))
    assert not isinstance(on_postgres._dispatcher(async_sessionmaker()).sessions, GatedSessions)
    assert on_postgres._sqlite_gate() is None
