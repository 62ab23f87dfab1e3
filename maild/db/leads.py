"""Leads in the database: opening one, finding the lead a reply belongs to, scenarios, rejection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, false, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from maild.db.parties import Party, party_columns
from maild.db.repo import dialect_insert
from maild.db.tables import Account, Folder, Lead, Letter, Scenario, ScenarioFolder, utcnow


@dataclass(frozen=True, slots=True)
class NewLead:
    """What opening a lead records: where, which letter, from whom, and why."""

    account_id: int
    folder_id: int
    letter_id: int
    subject: str
    sender_address: str
    sender_name: str
    reason: str
    responsible_login: str | None
    party: Party | None


@dataclass(frozen=True, slots=True)
class ThreadHit:
    """The lead a letter belongs to, and how that was found."""

    lead_id: int
    number: int
    how: str


@dataclass(frozen=True, slots=True)
class LeadRow:
    """A lead as `maild leads list` shows it."""

    number: int
    status: str
    account: str
    folder: str
    subject: str
    sender_address: str
    sender_name: str
    responsible_login: str | None
    reason: str
    created_at: datetime
    letters: int


def _new_lead(sqlite: bool) -> Any:
    """Build the lead INSERT once; its values come as parameters, not built into it each time.

    SQLite writers are serialised (BEGIN IMMEDIATE), so the next number is read in the same
    statement; PostgreSQL numbers from a sequence.
    """
    stmt = insert(_LEADS)
    if sqlite:
        stmt = stmt.values(
            number=select(func.coalesce(func.max(Lead.number), 0) + 1).scalar_subquery()
        )
    return stmt.returning(_LEADS.c.id, _LEADS.c.number)


def _letter_lead(with_party: bool) -> Any:
    """Build the letter's lead UPDATE once, with or without its party's columns."""
    columns = ["lead_id", "lead_reason"] + (
        ["potential_client_id", "client_id", "contact_person_id"] if with_party else []
    )
    return (
        update(_LETTERS)
        .where(_LETTERS.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in columns})
    )


_LEADS: Table = Lead.__table__  # type: ignore[assignment]
_LETTERS: Table = Letter.__table__  # type: ignore[assignment]
_NEW_LEAD = {sqlite: _new_lead(sqlite) for sqlite in (True, False)}
_LETTER_LEAD = {with_party: _letter_lead(with_party) for with_party in (True, False)}


async def open_lead(session: AsyncSession, new: NewLead) -> tuple[int, int]:
    """Insert a lead and point its first letter at it; give (id, number)."""
    now = utcnow()
    party = new.party
    values: dict[str, object] = {
        "account_id": new.account_id,
        "folder_id": new.folder_id,
        "first_letter_id": new.letter_id,
        "subject": new.subject,
        "sender_address": new.sender_address[:320],
        "sender_name": new.sender_name[:500],
        "status": "new",
        "reason": new.reason[:500],
        "responsible_login": new.responsible_login,
        "potential_client_id": party.potential_client_id if party else None,
        "client_id": party.client_id if party else None,
        "contact_person_id": party.contact_person_id if party else None,
        "created_at": now,
        "updated_at": now,
    }
    sqlite = session.get_bind().dialect.name != "postgresql"
    row = (await session.execute(_NEW_LEAD[sqlite], values)).one()
    await set_letter_lead(session, new.letter_id, int(row.id), new.reason, new.party)
    return int(row.id), int(row.number)


async def set_letter_lead(
    session: AsyncSession,
    letter_id: int,
    lead_id: int | None,
    reason: str,
    party: Party | None = None,
) -> None:
    """Record which lead a letter belongs to (or none) and why, and its sender's party if known.

    One UPDATE for both: on SQLite each rewrites the whole row, the raw letter included.
    """
    values = {"id": letter_id, "lead_id": lead_id, "lead_reason": reason[:500]}
    values |= party_columns(party)
    await session.execute(
        _LETTER_LEAD[party is not None], {f"b_{name}": value for name, value in values.items()}
    )


async def adopt_responsible(session: AsyncSession, lead_id: int, login: str) -> None:
    """Give a lead that has no Responsible yet the one a letter of its thread got."""
    await session.execute(
        update(Lead)
        .where(Lead.id == lead_id, Lead.responsible_login.is_(None))
        .values(responsible_login=login, updated_at=utcnow())
    )


async def find_thread(
    session: AsyncSession, cited: Sequence[tuple[str, str]], numbers: Sequence[int]
) -> ThreadHit | None:
    """Find the lead a letter replies to: by the (id, header) pairs it cites in order, then by number."""
    message_ids = [message_id for message_id, _ in cited]
    if message_ids:
        rows = (
            await session.execute(
                select(Letter.message_id, Lead.id, Lead.number)
                .join(Lead, Lead.id == Letter.lead_id)
                .where(Letter.message_id.in_(list(message_ids)))
            )
        ).all()
        found = {row.message_id: (int(row.id), int(row.number)) for row in rows}
        for message_id, header in cited:
            if message_id in found:
                lead_id, number = found[message_id]
                return ThreadHit(lead_id, number, header)
    for wanted in numbers:
        hit = (await session.execute(select(Lead.id).where(Lead.number == wanted))).scalar()
        if hit is not None:
            return ThreadHit(int(hit), wanted, f"[#{wanted}] in the subject")
    return None


async def mark_lead_folders(
    session: AsyncSession, account_id: int, watched: Sequence[str], sources: Sequence[str]
) -> None:
    """Mirror which watched folders of an account are lead sources.

    Only rows whose flag changes are written, so a process starting beside running ones does
    not lock folder rows they are storing into or renewing leases on.
    """
    lead = Folder.name.in_(list(sources)) if sources else false()
    await session.execute(
        update(Folder)
        .where(
            Folder.account_id == account_id,
            Folder.name.in_(list(watched)),
            Folder.lead_source != lead,
        )
        .values(lead_source=lead)
    )


async def sync_scenarios(
    session: AsyncSession,
    scenarios: Mapping[str, tuple[str, Mapping[str, Sequence[str]]]],
    folder_ids: Mapping[tuple[str, str], int],
) -> None:
    """Mirror the config's scenarios: name -> (title, account -> folders); others are left alone."""
    for name, (title, leads_from) in scenarios.items():
        stmt = dialect_insert(session, Scenario).values(name=name, title=title, updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"title": title, "updated_at": utcnow()}
        ).returning(Scenario.id)
        scenario_id = int((await session.execute(stmt)).scalar_one())
        await session.execute(
            delete(ScenarioFolder).where(ScenarioFolder.scenario_id == scenario_id)
        )
        rows = [
            {"scenario_id": scenario_id, "folder_id": folder_ids[(account, folder)]}
            for account, folders in leads_from.items()
            for folder in folders
        ]
        if rows:
            await session.execute(insert(ScenarioFolder), rows)


def visible_in(scenario: str) -> ColumnElement[bool]:
    """Give the condition "this lead is visible in scenario S": one indexed join."""
    shown = (
        select(ScenarioFolder.folder_id)
        .join(Scenario, Scenario.id == ScenarioFolder.scenario_id)
        .where(Scenario.name == scenario)
    )
    return Lead.folder_id.in_(shown)


async def scenario_exists(session: AsyncSession, scenario: str) -> bool:
    """Tell whether a scenario is known to the database."""
    found = await session.execute(select(Scenario.id).where(Scenario.name == scenario))
    return found.scalar() is not None


async def list_leads(
    session: AsyncSession, *, scenario: str, status: str | None, limit: int
) -> list[LeadRow]:
    """Read the leads a scenario shows, newest first."""
    letters = select(func.count(Letter.id)).where(Letter.lead_id == Lead.id).scalar_subquery()
    stmt = (
        select(Lead, Account.name, Folder.name, letters)
        .join(Account, Account.id == Lead.account_id)
        .join(Folder, Folder.id == Lead.folder_id)
        .where(visible_in(scenario))
        .order_by(Lead.number.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(Lead.status == status)
    rows = (await session.execute(stmt)).all()
    return [
        LeadRow(
            number=lead.number,
            status=lead.status,
            account=account,
            folder=folder,
            subject=lead.subject,
            sender_address=lead.sender_address,
            sender_name=lead.sender_name,
            responsible_login=lead.responsible_login,
            reason=lead.reason,
            created_at=lead.created_at,
            letters=int(count),
        )
        for lead, account, folder, count in rows
    ]


async def load_lead(session: AsyncSession, number: int, *, scenario: str | None) -> Lead | None:
    """Read a lead by number for update, only if the scenario (when given) shows it."""
    stmt = select(Lead).where(Lead.number == number).with_for_update()
    if scenario is not None:
        stmt = stmt.where(visible_in(scenario))
    return (await session.execute(stmt)).scalar()


async def set_status(
    session: AsyncSession, lead: Lead, *, status: str, by: str, scenario: str | None
) -> None:
    """Change a lead's status, writing who did it; a rejection makes that user responsible."""
    now = utcnow()
    values: dict[str, object] = {
        "status": status,
        "status_changed_by": by,
        "status_scenario": scenario,
        "status_changed_at": now,
        "updated_at": now,
    }
    if status == "rejected":
        values["responsible_login"] = by
        if lead.first_letter_id is not None:
            await session.execute(
                update(Letter)
                .where(Letter.id == lead.first_letter_id)
                .values(responsible_login=by, updated_at=now)
            )
    await session.execute(update(Lead).where(Lead.id == lead.id).values(**values))
