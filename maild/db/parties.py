"""Who a sender is: a contact person of a client, a client, or a potential client, found by address.

Resolution looks in that order and takes the oldest row of the first table that knows the
address. New parties are made here too: a potential client from an unknown sender, or, when the
business does not use potential clients, a client (with a contact person when the company is
known), matching existing clients by address or company name before creating one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    cast,
    insert,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from maild.core.names import address_key, company_key
from maild.db.tables import Client, ContactPerson, PotentialClient, UtcDateTime, utcnow

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
    """Resolve an address to a contact person, else a client, else a potential client.

    One statement for the three lookups: most senders of a lead folder are none of them yet.
    """
    key = address_key(address)
    if not key:
        return None
    row = (await session.execute(_RESOLVE[include_potential], {"key": key})).first()
    if row is None:
        return None
    if row.rank == 1:
        return Party("contact_person", row.name, row.client_id, row.id)
    if row.rank == 2:
        return Party("client", row.name, row.id)
    if row.client_id is not None:  # a potential client converted: what it became
        kind: PartyKind = "contact_person" if row.contact_person_id else "client"
        return Party(kind, row.name, row.client_id, row.contact_person_id)
    return Party("potential_client", row.name, potential_client_id=row.id)


#: An id a kind of party does not have; typed, so PostgreSQL can unite the lookups.
_NO_ID = cast(null(), BigInteger)

#: A lookup of resolve_party: rank, id, client id, contact person id, name.
_Ranked = Select[int, int, Any, Any, str]


def _contacts() -> _Ranked:
    """Contact persons with this address, ranked first."""
    return select(
        literal_column("1", Integer).label("rank"),
        ContactPerson.id.label("id"),
        ContactPerson.client_id.label("client_id"),
        _NO_ID.label("contact_person_id"),
        ContactPerson.full_name.label("name"),
    ).where(ContactPerson.email == bindparam("key"))


def _clients() -> _Ranked:
    """Clients with this address, ranked second."""
    return select(
        literal_column("2", Integer).label("rank"),
        Client.id.label("id"),
        _NO_ID.label("client_id"),
        _NO_ID.label("contact_person_id"),
        Client.name.label("name"),
    ).where(Client.email == bindparam("key"))


def _potentials() -> _Ranked:
    """Potential clients with this address, ranked last."""
    return select(
        literal_column("3", Integer).label("rank"),
        PotentialClient.id.label("id"),
        PotentialClient.client_id.label("client_id"),
        PotentialClient.contact_person_id.label("contact_person_id"),
        PotentialClient.full_name.label("name"),
    ).where(PotentialClient.email == bindparam("key"))


def _resolve(include_potential: bool) -> _Ranked:
    """Build resolve_party's statement once: the lookups in one, the best ranked first."""
    kinds = [_contacts(), _clients()] + ([_potentials()] if include_potential else [])
    found = union_all(*kinds).subquery()
    return select(found).order_by(found.c.rank, found.c.id).limit(1)


_RESOLVE = {include: _resolve(include) for include in (True, False)}


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

    def run(sync_session: Session) -> ClientLink:
        return client_for_sync(
            sync_session.connection(),
            full_name=full_name,
            company=company,
            email=email,
            phone=phone,
        )

    return await session.run_sync(run)


def client_for_sync(
    conn: Connection, *, full_name: str, company: str, email: str, phone: str = ""
) -> ClientLink:
    """Do what client_for does on a plain connection, for callers that batch many in a thread."""
    key = address_key(email)
    found = _existing(conn, key, company_key(company) if company else "")
    if found is not None and found.rank < _BY_COMPANY_RANK:
        return ClientLink(found.client_id, found.contact_id, f"address {key}")
    if not company:
        client_id = _insert_client(
            conn, kind="individual", name=full_name or key, email=key, phone=phone
        )
        return ClientLink(client_id, None, created_client=True)
    matched = found.client_id if found is not None else None
    person = {"full_name": full_name or key, "email": key, "phone": phone}
    if matched is None:
        client_id, contact_id = _insert_legal_with_contact(conn, company, **person)
    else:
        client_id = matched
        contact_id = _insert_contact(conn, client_id, **person)
    return ClientLink(
        client_id,
        contact_id,
        None if matched is None else f'company "{company}"',
        created_client=matched is None,
        created_contact=True,
    )


_CLIENTS: Table = Client.__table__  # type: ignore[assignment]
_CONTACTS: Table = ContactPerson.__table__  # type: ignore[assignment]
_BY_COMPANY_RANK = 2


@dataclass(frozen=True, slots=True)
class _Found:
    """An existing client a person matched: rank 0 a contact person's address, 1 a client's
    address, 2 a legal entity's normalised name."""

    rank: int
    client_id: int
    contact_id: int | None


def _existing_query() -> Select[tuple[int, int, int | None]]:
    """Build the one query that finds the client of an address, else of a company name.

    By address: the oldest contact person, else the oldest client, as resolve_party looks.
    """
    address = bindparam("address", type_=String())
    name_key = bindparam("name_key", type_=String())
    contacts = select(
        literal(0).label("rank"),
        _CONTACTS.c.id.label("row_id"),
        _CONTACTS.c.client_id.label("client_id"),
        _CONTACTS.c.id.label("contact_id"),
    ).where(_CONTACTS.c.email == address)
    clients = select(
        literal_column("1", Integer).label("rank"),
        _CLIENTS.c.id.label("row_id"),
        _CLIENTS.c.id.label("client_id"),
        null().label("contact_id"),
    ).where(_CLIENTS.c.email == address)
    companies = select(
        literal(_BY_COMPANY_RANK).label("rank"),
        _CLIENTS.c.id.label("row_id"),
        _CLIENTS.c.id.label("client_id"),
        null().label("contact_id"),
    ).where(_CLIENTS.c.name_key == name_key, _CLIENTS.c.kind == "legal")
    found = union_all(contacts, clients, companies).subquery()
    return (
        select(found.c.rank, found.c.client_id, found.c.contact_id)
        .order_by(found.c.rank, found.c.row_id)
        .limit(1)
    )


# Built once: building and hashing a statement costs more than running it on SQLite.
_EXISTING = _existing_query()
_INSERT_CLIENT = insert(_CLIENTS).returning(_CLIENTS.c.id)
_INSERT_CONTACT = insert(_CONTACTS).returning(_CONTACTS.c.id)


def _existing(conn: Connection, address: str, name_key: str) -> _Found | None:
    """Find the client of an address, else the legal entity of a company key; blanks match nothing."""
    if not address and not name_key:
        return None
    row = conn.execute(
        _EXISTING, {"address": address or None, "name_key": name_key or None}
    ).first()
    if row is None:
        return None
    contact = None if row.contact_id is None else int(row.contact_id)
    return _Found(int(row.rank), int(row.client_id), contact)


def _insert_client(conn: Connection, *, kind: str, name: str, email: str, phone: str) -> int:
    """Insert one client row."""
    now = utcnow()
    values = {
        "kind": kind,
        "name": name[:500],
        "name_key": company_key(name)[:500] if kind == "legal" else "",
        "email": email[:320],
        "phone": phone[:64],
        "created_at": now,
        "updated_at": now,
    }
    return int(conn.execute(_INSERT_CLIENT, values).scalar_one())


def _legal_with_contact() -> Insert:
    """Build PostgreSQL's insert of a legal entity and its contact person in one statement."""
    now = bindparam("now", type_=UtcDateTime())
    client = (
        insert(_CLIENTS)
        .values(
            kind="legal",
            name=bindparam("c_name", type_=String()),
            name_key=bindparam("c_name_key", type_=String()),
            email="",
            phone="",
            created_at=now,
            updated_at=now,
        )
        .returning(_CLIENTS.c.id)
        .cte("new_client")
    )
    person = select(
        client.c.id,
        bindparam("p_full_name", type_=String()),
        bindparam("p_email", type_=String()),
        bindparam("p_phone", type_=String()),
        now,
        now,
    )
    columns = ["client_id", "full_name", "email", "phone", "created_at", "updated_at"]
    return (
        insert(_CONTACTS)
        .from_select(columns, person)
        .returning(_CONTACTS.c.client_id, _CONTACTS.c.id)
        .add_cte(client)
    )


_LEGAL_WITH_CONTACT = _legal_with_contact()


def _insert_legal_with_contact(
    conn: Connection, company: str, *, full_name: str, email: str, phone: str
) -> tuple[int, int]:
    """Insert a legal-entity client and its contact person; one round trip on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        client_id = _insert_client(conn, kind="legal", name=company, email="", phone="")
        contact = _insert_contact(conn, client_id, full_name=full_name, email=email, phone=phone)
        return client_id, contact
    values = {
        "c_name": company[:500],
        "c_name_key": company_key(company)[:500],
        "p_full_name": full_name[:500],
        "p_email": email[:320],
        "p_phone": phone[:64],
        "now": utcnow(),
    }
    row = conn.execute(_LEGAL_WITH_CONTACT, values).one()
    return int(row.client_id), int(row.id)


def _insert_contact(
    conn: Connection, client_id: int, *, full_name: str, email: str, phone: str
) -> int:
    """Insert one contact person of a client."""
    now = utcnow()
    values = {
        "client_id": client_id,
        "full_name": full_name[:500],
        "email": email[:320],
        "phone": phone[:64],
        "created_at": now,
        "updated_at": now,
    }
    return int(conn.execute(_INSERT_CONTACT, values).scalar_one())


def party_columns(party: Party | None) -> dict[str, int | None]:
    """Give the letters columns that point a letter at its sender's party; none for no party."""
    if party is None:
        return {}
    return {
        "potential_client_id": party.potential_client_id,
        "client_id": party.client_id,
        "contact_person_id": party.contact_person_id,
    }
