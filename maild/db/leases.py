"""SQL of folder leases: which `maild run` process polls which folder, on the database's clock.

A folder's lease is ``folders.lease_owner`` with ``lease_until``. A process takes free or
expired leases, renews its own on every tick and gives them back when it stops; it also keeps a
row in ``maild_processes`` alive, so every process can count how many share the folders. Times
come from the database (``now()`` on PostgreSQL), so hosts with drifting clocks still agree on
when a lease ends; SQLite lives on one host and uses its clock.

Every write to a folder's cursor checks the owner in the same statement (see
``repo.advance_and_load_folder``), and taking a lease updates the same row: the row's lock puts
the two in order, so once another process holds the lease the old one cannot store another
letter of that folder. Taking skips rows another transaction has locked (``SKIP LOCKED``), so
processes that take and renew at the same moment never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from maild.db.repo import dialect_insert
from maild.db.tables import Folder, MaildProcess, utcnow

CHANNEL = "maild_leases"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds one folder's lease and until when; owner None when nobody does."""

    owner: str | None
    until: datetime | None


def _postgres(session: AsyncSession) -> bool:
    """Tell PostgreSQL, which has a shared clock, row locks and NOTIFY, from SQLite."""
    return session.get_bind().dialect.name == "postgresql"


async def clock(session: AsyncSession) -> datetime:
    """Give the database's time now (the transaction's start on PostgreSQL)."""
    if not _postgres(session):
        return utcnow()
    value: datetime = (await session.execute(select(func.now()))).scalar_one()
    return value


async def heartbeat(
    session: AsyncSession, owner: str, *, host: str, pid: int, now: datetime, until: datetime
) -> None:
    """Say this process is alive until ``until``, creating its row on the first beat."""
    stmt = dialect_insert(session, MaildProcess).values(
        owner=owner, host=host, pid=pid, started_at=now, seen_at=now, alive_until=until
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["owner"], set_={"seen_at": now, "alive_until": until}
        )
    )


async def alive(session: AsyncSession, now: datetime) -> int:
    """Count the processes whose heartbeat has not run out."""
    found = await session.execute(
        select(func.count()).select_from(MaildProcess).where(MaildProcess.alive_until > now)
    )
    return int(found.scalar_one())


async def forget_gone(session: AsyncSession, now: datetime) -> None:
    """Delete the rows of processes whose heartbeat ran out (killed, or their host lost)."""
    await session.execute(delete(MaildProcess).where(MaildProcess.alive_until < now))


async def leave(session: AsyncSession, owner: str) -> None:
    """Delete this process's row: it stops now."""
    await session.execute(delete(MaildProcess).where(MaildProcess.owner == owner))


async def renew(
    session: AsyncSession, owner: str, folder_ids: Collection[int], *, until: datetime
) -> set[int]:
    """Extend this process's leases among ``folder_ids``; give the folders it still holds."""
    if not folder_ids:
        return set()
    found = await session.execute(
        update(Folder)
        .where(Folder.lease_owner == owner, Folder.id.in_(list(folder_ids)))
        .values(lease_until=until)
        .returning(Folder.id)
    )
    return {int(row) for row in found.scalars()}


async def holders(session: AsyncSession, folder_ids: Collection[int]) -> dict[int, Holder]:
    """Read who holds each folder's lease."""
    if not folder_ids:
        return {}
    found = await session.execute(
        select(Folder.id, Folder.lease_owner, Folder.lease_until).where(
            Folder.id.in_(list(folder_ids))
        )
    )
    return {int(row.id): Holder(row.lease_owner, row.lease_until) for row in found.all()}


def _takeable(owner: str, now: datetime) -> ColumnElement[bool]:
    """The condition of a lease this process may take: nobody's, run out, or already its own."""
    return or_(Folder.lease_owner.is_(None), Folder.lease_until < now, Folder.lease_owner == owner)


async def take(
    session: AsyncSession,
    owner: str,
    folder_ids: Collection[int],
    *,
    now: datetime,
    until: datetime,
    limit: int,
) -> set[int]:
    """Take up to ``limit`` takeable leases among ``folder_ids``, in a random order; give them."""
    if not folder_ids or limit <= 0:
        return set()
    query = (
        select(Folder.id)
        .where(Folder.id.in_(list(folder_ids)), _takeable(owner, now))
        .order_by(func.random())
        .limit(limit)
    )
    if _postgres(session):
        query = query.with_for_update(skip_locked=True)
    chosen = [int(row) for row in (await session.execute(query)).scalars()]
    if not chosen:
        return set()
    found = await session.execute(
        update(Folder)
        .where(Folder.id.in_(chosen), _takeable(owner, now))
        .values(
            lease_owner=owner,
            lease_until=until,
            lease_taken_at=case((Folder.lease_owner == owner, Folder.lease_taken_at), else_=now),
        )
        .returning(Folder.id)
    )
    return {int(row) for row in found.scalars()}


async def release(
    session: AsyncSession, owner: str, folder_ids: Collection[int] | None = None
) -> set[int]:
    """Give back this process's leases (all, or those among ``folder_ids``); give which."""
    query = update(Folder).where(Folder.lease_owner == owner)
    if folder_ids is not None:
        if not folder_ids:
            return set()
        query = query.where(Folder.id.in_(list(folder_ids)))
    found = await session.execute(
        query.values(lease_owner=None, lease_until=None, lease_taken_at=None).returning(Folder.id)
    )
    return {int(row) for row in found.scalars()}


async def announce(session: AsyncSession) -> None:
    """Wake the other processes when this transaction commits: leases came free, or one joined."""
    if _postgres(session):
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
