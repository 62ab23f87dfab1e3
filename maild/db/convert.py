"""The SQL of switching potential clients off: find, claim, link and re-point, in the caller's transaction.

Each potential client is converted in a transaction of its own. The claim re-reads the row
with ``client_id IS NULL`` inside that transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL),
so two runs never convert one potential client twice; on PostgreSQL, transaction-scoped
advisory locks on its address and company, taken by the same statement, keep two transactions
from creating the same client side by side (SQLite has one writer at a time anyway).

The conversion is blocking code on a plain connection: a batch of thousands runs it in a worker
thread on SQLite, where each statement through the async driver costs several thread hand-offs,
and through ``run_sync`` on PostgreSQL. Its statements are built once, and on PostgreSQL the
link and the re-pointing of documents go in one statement, to keep round trips few.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.names import address_key, company_key
from maild.db.parties import ClientLink, client_for_sync
from maild.db.tables import Lead, Letter, PotentialClient, utcnow


@dataclass(frozen=True, slots=True)
class Unlinked:
    """A potential client to convert, as listed before its transaction: what its locks are."""

    id: int
    email: str
    company: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A potential client claimed for conversion: what the client is made from."""

    id: int
    full_name: str
    company: str
    email: str
    phone: str


@dataclass(frozen=True, slots=True)
class Converted:
    """One potential client converted: what it was, what it became, documents re-pointed."""

    candidate: Candidate
    link: ClientLink
    letters: int
    leads: int


async def count_potential(session: AsyncSession) -> tuple[int, int]:
    """Count potential clients not yet linked to a client, and those already linked."""
    unlinked = func.count().filter(PotentialClient.client_id.is_(None))
    linked = func.count().filter(PotentialClient.client_id.is_not(None))
    row = (await session.execute(select(unlinked, linked).select_from(PotentialClient))).one()
    return int(row[0] or 0), int(row[1] or 0)


async def list_unlinked(session: AsyncSession) -> list[Unlinked]:
    """List the potential clients not yet linked to a client, oldest first."""
    rows = await session.execute(
        select(PotentialClient.id, PotentialClient.email, PotentialClient.company)
        .where(PotentialClient.client_id.is_(None))
        .order_by(PotentialClient.id)
    )
    return [Unlinked(int(row.id), row.email, row.company) for row in rows]


_POTENTIAL: Table = PotentialClient.__table__  # type: ignore[assignment]
_DOCUMENTS: tuple[Table, ...] = (Letter.__table__, Lead.__table__)  # type: ignore[assignment]


def _claim(locks: int) -> Select[Any]:
    """Build the claim, taking ``locks`` advisory locks (PostgreSQL) in the same statement."""
    calls = [func.pg_advisory_xact_lock(bindparam(name)) for name in "ab"[:locks]]
    table = _POTENTIAL
    return (
        select(table.c.id, table.c.full_name, table.c.company, table.c.email, table.c.phone, *calls)
        .where(table.c.id == bindparam("pid"), table.c.client_id.is_(None))
        .with_for_update(skip_locked=True)
    )


def _link() -> Any:
    """Build the update that records on a potential client what it became."""
    return (
        update(_POTENTIAL)
        .where(_POTENTIAL.c.id == bindparam("pid"))
        .values(
            client_id=bindparam("to_client"),
            contact_person_id=bindparam("to_contact"),
            converted_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
    )


def _repoint(table: Table) -> Any:
    """Build the update that points a table's documents at the client instead."""
    return (
        update(table)
        .where(table.c.potential_client_id == bindparam("pid"))
        .values(
            potential_client_id=None,
            client_id=bindparam("to_client"),
            contact_person_id=bindparam("to_contact"),
            updated_at=bindparam("now"),
        )
    )


def _finish_in_one() -> Select[Any]:
    """Build PostgreSQL's link-and-re-point: the three updates in one statement."""
    linked = _link().returning(_POTENTIAL.c.id).cte("linked")
    moved = [
        _repoint(table).returning(literal(1)).cte(f"moved_{table.name}") for table in _DOCUMENTS
    ]
    counts = [select(func.count()).select_from(cte).scalar_subquery() for cte in moved]
    return select(*counts).add_cte(linked)


# Built once: building and hashing a statement costs more than running it on SQLite.
_CLAIMS = {locks: _claim(locks) for locks in range(3)}
_LINK = _link()
_REPOINT = tuple(_repoint(table) for table in _DOCUMENTS)
_FINISH_PG = _finish_in_one()


def convert_one(conn: Connection, item: Unlinked) -> Converted | None:
    """Convert one potential client in the caller's transaction; None if it is linked already.

    The caller commits: the claim, the client found or made, the link and the re-pointed
    letters and leads then land together, or not at all.
    """
    postgres = conn.dialect.name == "postgresql"
    locks = lock_keys(item.email, item.company) if postgres else []
    row = conn.execute(_CLAIMS[len(locks)], _claim_params(item.id, locks)).first()
    if row is None:
        return None
    candidate = Candidate(int(row.id), row.full_name, row.company, row.email, row.phone)
    if postgres and (missing := set(lock_keys(row.email, row.company)) - set(locks)):
        conn.execute(_CLAIMS[len(missing)], _claim_params(item.id, sorted(missing)))
    link = client_for_sync(
        conn,
        full_name=candidate.full_name,
        company=candidate.company,
        email=candidate.email,
        phone=candidate.phone,
    )
    params = {
        "pid": candidate.id,
        "to_client": link.client_id,
        "to_contact": link.contact_person_id,
        "now": utcnow(),
    }
    if postgres:
        counts = conn.execute(_FINISH_PG, params).one()
        return Converted(candidate, link, int(counts[0]), int(counts[1]))
    conn.execute(_LINK, params)
    letters, leads = (int(conn.execute(stmt, params).rowcount or 0) for stmt in _REPOINT)
    return Converted(candidate, link, letters, leads)


def _claim_params(potential_client_id: int, locks: list[int]) -> dict[str, int]:
    """Give the claim's bound values: the id, and the lock numbers as ``a`` and ``b``."""
    return {"pid": potential_client_id, **dict(zip("ab", locks, strict=False))}


def lock_keys(email: str, company: str) -> list[int]:
    """Give the advisory lock numbers of an address and a company, sorted so no two runs deadlock."""
    keys = {
        (1 << 40) | zlib.crc32(f"maild:{kind}:{value}".encode())
        for kind, value in (("address", address_key(email)), ("company", company_key(company)))
        if value
    }
    return sorted(keys)
