"""Who a sender is: a contact person of a client, a client, or a potential client, found by address.

Resolution looks in that order and takes the oldest row of the first table that knows the
address. New parties are made here too: a potential client from an unknown sender, or, when the
business does not use potential clients, a client (with a contact person when the company is
known), matching existing clients by address or company name before creating one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.names import address_key, company_key
from maild.db.tables import Client, ContactPerson, Letter, PotentialClient, utcnow

PartyKind = Literal["contact_person", "client", "potential_client"]


@dataclass(frozen=True, slots=True)
class Party:
    """What a sender resolved to: the ids documents point at, and a name to show."""

    kind: PartyKind
    name: str
    client_id: int | None = None
    contact_person_id: int | None = None
    potential_client_id: int | None = None

    def describe(self) -> str:
        """Say what the party is in a line: "contact person Anna Petrova (client #3)"."""
        label = self.kind.replace("_", " ")
        ident = self.contact_person_id or self.client_id or self.potential_client_id
        suffix = f" (client #{self.client_id})" if self.kind == "contact_person" else ""
        return f"{label} #{ident} {self.name}".rstrip() + suffix


@dataclass(frozen=True, slots=True)
class ClientLink:
    """The client (and contact person) a name, company and address became or matched."""

    client_id: int
    contact_person_id: int | None
    matched: str | None = None
    created_client: bool = False
    created_contact: bool = False


async def resolve_party(
    session: AsyncSession, address: str, *, include_potential: bool = True
) -> Party | None:
    """Resolve an address to a contact person, else a client, else a potential client."""
    key = address_key(address)
    if not key:
        return None
    contact = (
        await session.execute(
            select(ContactPerson.id, ContactPerson.client_id, ContactPerson.full_name)
            .where(ContactPerson.email == key)
            .order_by(ContactPerson.id)
            .limit(1)
        )
    ).first()
    if contact is not None:
        return Party("contact_person", contact.full_name, contact.client_id, contact.id)
    client = (
        await session.execute(
            select(Client.id, Client.name).where(Client.email == key).order_by(Client.id).limit(1)
        )
    ).first()
    if client is not None:
        return Party("client", client.name, client.id)
    if not include_potential:
        return None
    return await _potential(session, key)


async def _potential(session: AsyncSession, key: str) -> Party | None:
    """Find the potential client of an address; a converted one resolves to what it became."""
    row = (
        await session.execute(
            select(
                PotentialClient.id,
                PotentialClient.full_name,
                PotentialClient.client_id,
                PotentialClient.contact_person_id,
            )
            .where(PotentialClient.email == key)
            .order_by(PotentialClient.id)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    if row.client_id is not None:
        kind: PartyKind = "contact_person" if row.contact_person_id else "client"
        return Party(kind, row.full_name, row.client_id, row.contact_person_id)
    return Party("potential_client", row.full_name, potential_client_id=row.id)


async def create_potential_client(
    session: AsyncSession,
    *,
    full_name: str,
    company: str,
    email: str,
    phone: str = "",
    first_letter_id: int | None = None,
) -> Party:
    """Record an unknown sender as a potential client."""
    now = utcnow()
    new_id = (
        await session.execute(
            insert(PotentialClient)
            .values(
                full_name=full_name[:500],
                company=company[:500],
                email=address_key(email)[:320],
                phone=phone[:64],
                first_letter_id=first_letter_id,
                created_at=now,
                updated_at=now,
            )
            .returning(PotentialClient.id)
        )
    ).scalar_one()
    return Party("potential_client", full_name, potential_client_id=int(new_id))


async def client_for(
    session: AsyncSession, *, full_name: str, company: str, email: str, phone: str = ""
) -> ClientLink:
    """Find or make the client for a person: match by address, then by company, else create.

    A company makes a legal-entity client with the person as its contact person; a name alone
    makes an individual client. ``matched`` says which existing row was reused, and why.
    """
    key = address_key(email)
    found = await resolve_party(session, key, include_potential=False) if key else None
    if found is not None and found.client_id is not None:
        return ClientLink(found.client_id, found.contact_person_id, f"address {key}")
    if not company:
        client_id = await _insert_client(
            session, kind="individual", name=full_name or key, email=key, phone=phone
        )
        return ClientLink(client_id, None, created_client=True)
    matched = await _client_by_company(session, company)
    created_client = matched is None
    client_id = matched or await _insert_client(
        session, kind="legal", name=company, email="", phone=""
    )
    contact_id = await _insert_contact(
        session, client_id, full_name=full_name or key, email=key, phone=phone
    )
    return ClientLink(
        client_id,
        contact_id,
        None if created_client else f'company "{company}"',
        created_client=created_client,
        created_contact=True,
    )


async def _client_by_company(session: AsyncSession, company: str) -> int | None:
    """Find a legal-entity client whose normalised name equals this company's."""
    key = company_key(company)
    if not key:
        return None
    found = (
        await session.execute(
            select(Client.id)
            .where(Client.name_key == key, Client.kind == "legal")
            .order_by(Client.id)
            .limit(1)
        )
    ).scalar()
    return int(found) if found is not None else None


async def _insert_client(
    session: AsyncSession, *, kind: str, name: str, email: str, phone: str
) -> int:
    """Insert one client row."""
    now = utcnow()
    stmt = (
        insert(Client)
        .values(
            kind=kind,
            name=name[:500],
            name_key=company_key(name)[:500] if kind == "legal" else "",
            email=email[:320],
            phone=phone[:64],
            created_at=now,
            updated_at=now,
        )
        .returning(Client.id)
    )
    return int((await session.execute(stmt)).scalar_one())


async def _insert_contact(
    session: AsyncSession, client_id: int, *, full_name: str, email: str, phone: str
) -> int:
    """Insert one contact person of a client."""
    now = utcnow()
    stmt = (
        insert(ContactPerson)
        .values(
            client_id=client_id,
            full_name=full_name[:500],
            email=email[:320],
            phone=phone[:64],
            created_at=now,
            updated_at=now,
        )
        .returning(ContactPerson.id)
    )
    return int((await session.execute(stmt)).scalar_one())


async def link_letter(session: AsyncSession, letter_id: int, party: Party) -> None:
    """Point a letter at its sender's party."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(
            potential_client_id=party.potential_client_id,
            client_id=party.client_id,
            contact_person_id=party.contact_person_id,
        )
    )
