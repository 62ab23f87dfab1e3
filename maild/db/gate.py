"""Sessions that take turns at a shared lock, for one process's writers on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class Sessions(Protocol):
    """What a job needs of a session factory: a session, and one inside a transaction."""

    def __call__(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Give a session; on SQLite its first statement begins a write transaction."""

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Give a session in a transaction, committed on a clean exit."""


@dataclass(frozen=True, slots=True)
class GatedSessions:
    """Sessions that wait for a shared lock first and hold it until they close.

    SQLite has one writer lock, which a waiting connection takes by sleeping and retrying:
    against a job that writes transaction after transaction it loses nearly every race. An
    asyncio lock is taken in the order asked, so each waits behind at most the transaction
    under way. Never open a second gated session while holding one: the lock is not reentrant.
    """

    sessions: async_sessionmaker[AsyncSession]
    gate: asyncio.Lock

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        """Give a session once it is this one's turn."""
        async with self.gate, self.sessions() as session:
            yield session

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """Give a session in a transaction once it is this one's turn."""
        async with self.gate, self.sessions.begin() as session:
            yield session


class WriteGate(asyncio.Lock):
    """The lock one process's SQLite writers take turns at, which also counts the pushes waiting.

    A backlog's transaction holding it looks at ``pushes_waiting`` between its statements and
    gives way (rolls back, asks again) when a push waits, instead of making the push wait for
    the whole group (``maild.pipeline``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pushes_waiting = 0

    @asynccontextmanager
    async def push_turn(self) -> AsyncIterator[None]:
        """Hold the lock for a push, counted as waiting until it has the lock."""
        self.pushes_waiting += 1
        try:
            await self.acquire()
        finally:
            self.pushes_waiting -= 1
        try:
            yield
        finally:
            self.release()


def gated(sessions: async_sessionmaker[AsyncSession], gate: asyncio.Lock | None) -> Sessions:
    """Give the sessions behind the gate, or as they are when there is none (PostgreSQL)."""
    return sessions if gate is None else GatedSessions(sessions, gate)
