"""Potential clients in bulk, with letters and leads pointing at them, for the tests and the benchmark.

Every ten potential clients take the ten shapes below, so a conversion's figures are known in
advance (``Expected``): companies of their own, one company written again with its legal form,
names only, a blank name, an address an existing client already has, and a company an existing
client already is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.names import company_key
from maild.db import repo
from maild.db.tables import Client, Lead, Letter, PotentialClient, utcnow

LETTERS_EACH = 2
UIDVALIDITY = 1


@dataclass(frozen=True, slots=True)
class Expected:
    """What converting a seeded batch must give."""

    potential_clients: int
    clients_created: int
    contacts_created: int
    matched: int
    letters: int
    leads: int
    matched_by_address: int
    matched_by_company: int


def shape(i: int) -> dict[str, str]:
    """Give potential client ``i``'s name, company, address and phone by its shape (i mod 10)."""
    kind = i % 10
    person = {"full_name": f"Person {i}", "company": "", "email": f"p{i}@people.example"}
    person["phone"] = f"+1 555 {i:07d}"
    if kind <= 3:
        person["company"] = f"Company {i}"
    elif kind == 4:
        person["company"] = f"ООО «Company {i - 1}»"  # the previous one's company, written again
    elif kind == 7:
        person["full_name"] = ""
    elif kind == 8:
        person["email"] = f"known{i}@clients.example"
    elif kind == 9:
        person["company"] = f'"Existing {i}"'
    return person


def expected(count: int) -> Expected:
    """Give the figures a conversion of ``count`` seeded potential clients must report."""
    kinds = [i % 10 for i in range(count)]
    by_address = kinds.count(8)
    by_company = kinds.count(4) + kinds.count(9)
    return Expected(
        potential_clients=count,
        clients_created=sum(kind in (0, 1, 2, 3, 5, 6, 7) for kind in kinds),
        contacts_created=sum(kind in (0, 1, 2, 3, 4, 9) for kind in kinds),
        matched=by_address + by_company,
        letters=count * LETTERS_EACH,
        leads=count,
        matched_by_address=by_address,
        matched_by_company=by_company,
    )


async def seed(session: AsyncSession, count: int, *, start: int = 0) -> list[int]:
    """Insert ``count`` potential clients (numbered from ``start``) with existing clients to match,
    two letters and a lead each; give the potential clients' ids in order."""
    account_id = await repo.upsert_account(
        session, name="sales", address="sales@corp.example", display_name="", enabled=True
    )
    folder_id = await repo.ensure_folder(session, account_id=account_id, name="INBOX")
    numbers = range(start, start + count)
    await _existing_clients(session, numbers)
    now = utcnow()
    await session.execute(
        insert(PotentialClient),
        [{**shape(i), "created_at": now, "updated_at": now} for i in numbers],
    )
    emails = {shape(i)["email"]: i for i in numbers}
    rows = await session.execute(
        select(PotentialClient.id, PotentialClient.email).where(
            PotentialClient.email.in_(list(emails))
        )
    )
    ids = {emails[row.email]: int(row.id) for row in rows}
    await session.execute(
        insert(Letter),
        [
            _letter(account_id, folder_id, i, n, potential_client_id=ids[i], now=now)
            for i in numbers
            for n in range(2)
        ],
    )
    await session.execute(insert(Lead), [_lead(account_id, folder_id, i, ids[i]) for i in numbers])
    return [ids[i] for i in numbers]


async def _existing_clients(session: AsyncSession, numbers: range) -> None:
    """Insert the clients shapes 8 and 9 match: one by address, one by company."""
    now = utcnow()
    rows = []
    for i in numbers:
        if i % 10 == 8:
            rows.append(
                {
                    "kind": "individual",
                    "name": f"Known {i}",
                    "name_key": "",
                    "email": f"known{i}@clients.example",
                }
            )
        elif i % 10 == 9:
            name = f"Existing {i} Ltd"
            rows.append({"kind": "legal", "name": name, "name_key": company_key(name), "email": ""})
    if rows:
        await session.execute(
            insert(Client),
            [{**row, "phone": "", "created_at": now, "updated_at": now} for row in rows],
        )


def _letter(
    account_id: int, folder_id: int, i: int, n: int, *, potential_client_id: int, now: object
) -> dict[str, object]:
    """Give one small letter from potential client ``i``."""
    return {
        "account_id": account_id,
        "folder_id": folder_id,
        "uidvalidity": UIDVALIDITY,
        "uid": i * LETTERS_EACH + n + 1,
        "from_address": shape(i)["email"],
        "subject": f"request {i}.{n}",
        "raw": b"",
        "potential_client_id": potential_client_id,
        "created_at": now,
        "updated_at": now,
    }


def _lead(account_id: int, folder_id: int, i: int, potential_client_id: int) -> dict[str, object]:
    """Give the lead potential client ``i``'s first letter opened."""
    now = utcnow()
    return {
        "number": i + 1,
        "account_id": account_id,
        "folder_id": folder_id,
        "subject": f"request {i}.0",
        "sender_address": shape(i)["email"],
        "potential_client_id": potential_client_id,
        "created_at": now,
        "updated_at": now,
    }
