"""What the CLI and the CRM's integration call: list a scenario's leads, reject one, show a sender."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.names import address_key
from maild.db import leads as leads_db
from maild.db import parties
from maild.db.tables import Account, Folder, Lead, Letter
from maild.errors import LeadError


async def leads_in_scenario(
    sessions: async_sessionmaker[AsyncSession],
    scenario: str,
    *,
    status: str | None = None,
    limit: int = 100,
) -> list[leads_db.LeadRow]:
    """Give the leads a scenario shows, newest first; raise LeadError for an unknown scenario."""
    async with sessions() as session:
        if not await leads_db.scenario_exists(session, scenario):
            raise LeadError(f'no scenario is named "{scenario}" (see [[scenarios]] in the config)')
        return await leads_db.list_leads(session, scenario=scenario, status=status, limit=limit)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A lead just rejected: its number, who rejected it, and its status before."""

    number: int
    by: str
    scenario: str
    previous_status: str


async def reject_lead(
    sessions: async_sessionmaker[AsyncSession], number: int, *, by: str, scenario: str
) -> Rejected:
    """Reject a lead shown in a scenario; the rejecting user becomes its responsible."""
    login = by.strip()
    if not login or any(ch.isspace() for ch in login):
        raise LeadError(f"--by must be a user login without spaces, not {by!r}")
    async with sessions.begin() as session:
        if not await leads_db.scenario_exists(session, scenario):
            raise LeadError(f'no scenario is named "{scenario}" (see [[scenarios]] in the config)')
        lead = await leads_db.load_lead(session, number, scenario=scenario)
        if lead is None:
            exists = await leads_db.load_lead(session, number, scenario=None)
            where = "is not shown in" if exists else "does not exist in"
            raise LeadError(f"lead #{number} {where} scenario {scenario}")
        if lead.status == "rejected":
            raise LeadError(
                f"lead #{number} is already rejected (by {lead.status_changed_by or 'unknown'})"
            )
        previous = lead.status
        await leads_db.set_status(session, lead, status="rejected", by=login, scenario=scenario)
    return Rejected(number, login, scenario, previous)


@dataclass(frozen=True, slots=True)
class SenderLetter:
    """One letter of a sender, as `maild sender` lists it."""

    id: int
    when: datetime | None
    account: str
    folder: str
    from_address: str
    subject: str
    lead_number: int | None


@dataclass(frozen=True, slots=True)
class SenderReport:
    """A sender's party (if the address resolves to one) and their letters, newest first."""

    address: str
    party: parties.Party | None
    letters: list[SenderLetter]


async def sender_letters(
    sessions: async_sessionmaker[AsyncSession], address: str, *, limit: int = 100
) -> SenderReport:
    """Resolve an address and list all letters of its party, or of the address when it has none."""
    key = address_key(address)
    async with sessions() as session:
        party = await parties.resolve_party(session, key)
        letters = await _letters_of(session, key, party, limit)
    return SenderReport(key, party, letters)


async def _letters_of(
    session: AsyncSession, key: str, party: parties.Party | None, limit: int
) -> list[SenderLetter]:
    """Read the letters from an address, and those linked to its party."""
    match = [Letter.from_address == key]
    if party is not None and party.contact_person_id is not None:
        match.append(Letter.contact_person_id == party.contact_person_id)
    elif party is not None and party.client_id is not None:
        match.append(Letter.client_id == party.client_id)
    elif party is not None and party.potential_client_id is not None:
        match.append(Letter.potential_client_id == party.potential_client_id)

    stmt = (
        select(
            Letter.id,
            Letter.received_at,
            Letter.sent_at,
            Account.name,
            Folder.name,
            Letter.from_address,
            Letter.subject,
            Lead.number,
        )
        .join(Account, Account.id == Letter.account_id)
        .join(Folder, Folder.id == Letter.folder_id)
        .outerjoin(Lead, Lead.id == Letter.lead_id)
        .where(or_(*match))
        .order_by(Letter.received_at.desc().nulls_last(), Letter.id.desc())
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    return [
        SenderLetter(
            id=row[0],
            when=row[1] or row[2],
            account=row[3],
            folder=row[4],
            from_address=row[5],
            subject=row[6],
            lead_number=row[7],
        )
        for row in rows
    ]
