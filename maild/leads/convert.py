"""Switching potential clients off: every unlinked potential client becomes a client, once.

Each potential client is converted in its own transaction: claimed (so a concurrent run skips
it), matched to an existing client by address or company or made into a new client (a legal
entity with a contact person when it names a company, an individual otherwise), linked back,
and every letter and lead that pointed at it re-pointed at the client. Potential clients are
never deleted. A crash leaves the converted ones linked and the rest untouched, so a rerun
converts the rest and nothing twice. The CRM integration may call these functions too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maild.db import convert as convert_db
from maild.db.convert import Converted, Unlinked
from maild.db.engine import sqlite_sync_twin
from maild.db.flags import set_flag, use_potential_clients
from maild.db.parties import ClientLink
from maild.db.tables import USE_POTENTIAL_CLIENTS

MAX_MATCHES = 50
POSTGRES_WORKERS = 4

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Pending:
    """What a conversion would do now: potential clients to convert, already linked, the flag."""

    unlinked: int
    linked: int
    enabled: bool


@dataclass
class ConversionReport:
    """What a conversion did, for the summary: rows made, matches found, documents re-pointed."""

    converted: int = 0
    clients_created: int = 0
    contacts_created: int = 0
    matched: int = 0
    matches: list[str] = field(default_factory=list)
    letters_updated: int = 0
    leads_updated: int = 0
    already_linked: int = 0
    enabled: bool = True

    @property
    def documents_updated(self) -> int:
        """Count the letters and leads re-pointed together."""
        return self.letters_updated + self.leads_updated

    def add(self, done: Converted) -> None:
        """Count one converted potential client."""
        link = done.link
        self.converted += 1
        self.clients_created += link.created_client
        self.contacts_created += link.created_contact
        self.letters_updated += done.letters
        self.leads_updated += done.leads
        if link.matched is not None:
            self.matched += 1
            if len(self.matches) < MAX_MATCHES:
                self.matches.append(_describe_match(done.candidate, link))


def _describe_match(candidate: convert_db.Candidate, link: ClientLink) -> str:
    """Say in a line which existing client a potential client was linked to, and why."""
    who = candidate.full_name or candidate.email or candidate.company
    target = f"client #{link.client_id}"
    if link.contact_person_id is not None:
        target += f" (contact person #{link.contact_person_id})"
    return f"potential client #{candidate.id} {who}: {target}, same {link.matched}"


async def count_unlinked(session: AsyncSession) -> int:
    """Count the potential clients a conversion would convert now."""
    unlinked, _ = await convert_db.count_potential(session)
    return unlinked


async def pending(sessions: async_sessionmaker[AsyncSession]) -> Pending:
    """Tell what switching potential clients off would do, before asking to confirm it."""
    async with sessions() as session:
        unlinked, linked = await convert_db.count_potential(session)
        return Pending(unlinked, linked, await use_potential_clients(session))


class _Converter:
    """Runs potential clients' transactions, each worker on a connection of its own.

    On SQLite the transactions run in a worker thread on a blocking engine (each statement
    through the async driver costs several thread hand-offs); on PostgreSQL on the event loop.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        bind = sessions.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise TypeError("the session factory must be bound to an AsyncEngine")
        self.engine = bind
        self.twin = sqlite_sync_twin(bind)

    @property
    def workers(self) -> int:
        """Use a few workers on PostgreSQL, where transactions overlap; SQLite has one writer."""
        return POSTGRES_WORKERS if self.engine.dialect.name == "postgresql" else 1

    async def work(self, queue: asyncio.Queue[Unlinked], done: Callable[[Converted], None]) -> None:
        """Convert potential clients from the queue until it is empty, one transaction each."""
        if self.twin is not None:
            conn = await asyncio.to_thread(self.twin.connect)
            try:
                while not queue.empty():
                    converted = await asyncio.to_thread(_blocking, conn, queue.get_nowait())
                    if converted is not None:
                        done(converted)
            finally:
                await asyncio.to_thread(conn.close)
            return
        async with self.engine.connect() as aconn:
            while not queue.empty():
                async with aconn.begin():
                    converted = await aconn.run_sync(convert_db.convert_one, queue.get_nowait())
                if converted is not None:
                    done(converted)

    def close(self) -> None:
        """Close the blocking engine's connections."""
        if self.twin is not None:
            self.twin.dispose()


def _blocking(conn: Connection, item: Unlinked) -> Converted | None:
    """Run one conversion's transaction on a blocking connection, in the calling thread."""
    with conn.begin():
        return convert_db.convert_one(conn, item)


async def convert_potential_clients(
    sessions: async_sessionmaker[AsyncSession],
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    report: ConversionReport | None = None,
) -> ConversionReport:
    """Convert every potential client not yet linked to a client; the flag is left as it is.

    ``progress`` is called with 1 after each committed conversion. An exception (from the
    database or from ``progress``) stops the run; what was committed stays converted.
    """
    report = report or ConversionReport()
    async with sessions() as session:
        items = await convert_db.list_unlinked(session)
        _, report.already_linked = await convert_db.count_potential(session)
    queue: asyncio.Queue[Unlinked] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    def done(converted: Converted) -> None:
        report.add(converted)
        if progress is not None:
            progress(1)

    converter = _Converter(sessions)
    count = min(workers or converter.workers, max(1, len(items)))
    try:
        if count == 1:
            await converter.work(queue, done)
        else:
            await _together(lambda: converter.work(queue, done), count)
    finally:
        converter.close()
    return report


async def _together(work: Callable[[], Coroutine[Any, Any, None]], count: int) -> None:
    """Run ``count`` copies of a worker; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for index in range(count):
                group.create_task(work(), name=f"convert-{index}")
    except BaseExceptionGroup as grouped:
        raise grouped.exceptions[0] from None


async def disable(
    sessions: async_sessionmaker[AsyncSession],
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ConversionReport:
    """Convert every unlinked potential client, then switch ``use_potential_clients`` off.

    A last pass after the switch converts potential clients the daemon made while the first
    pass ran, when it still saw the flag on.
    """
    report = await convert_potential_clients(sessions, progress=progress, workers=workers)
    already = report.already_linked
    async with sessions.begin() as session:
        await set_flag(session, USE_POTENTIAL_CLIENTS, False)
    await convert_potential_clients(sessions, progress=progress, workers=workers, report=report)
    report.already_linked = already
    report.enabled = False
    return report


async def enable(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Switch ``use_potential_clients`` back on: unknown senders become potential clients again."""
    async with sessions.begin() as session:
        await set_flag(session, USE_POTENTIAL_CLIENTS, True)
