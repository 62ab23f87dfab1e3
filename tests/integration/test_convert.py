"""Switching potential clients off, on SQLite and PostgreSQL: each becomes a client once, documents follow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db.flags import use_potential_clients
from maild.db.tables import Client, ContactPerson, Lead, Letter, PotentialClient
from maild.leads.convert import (
    ConversionReport,
    convert_potential_clients,
    count_unlinked,
    disable,
    enable,
)
from maild.testing.parties import expected, seed

Sessions = async_sessionmaker[AsyncSession]


async def _seed(sessions: Sessions, count: int, *, start: int = 0) -> list[int]:
    async with sessions.begin() as session:
        return await seed(session, count, start=start)


async def _count(sessions: Sessions, column: Any, *where: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count(column)).where(*where))).scalar_one())


async def _flag(sessions: Sessions) -> bool:
    async with sessions() as session:
        return await use_potential_clients(session)


async def _potential(sessions: Sessions) -> dict[int, PotentialClient]:
    async with sessions() as session:
        rows = (await session.execute(select(PotentialClient))).scalars()
        return {row.id: row for row in rows}


def _figures(report: ConversionReport) -> tuple[int, ...]:
    return (
        report.converted,
        report.clients_created,
        report.contacts_created,
        report.matched,
        report.letters_updated,
        report.leads_updated,
    )


def _expected_figures(count: int) -> tuple[int, ...]:
    want = expected(count)
    return (
        want.potential_clients,
        want.clients_created,
        want.contacts_created,
        want.matched,
        want.letters,
        want.leads,
    )


async def test_each_shape_becomes_the_right_client(sessions: Sessions) -> None:
    """Name and company make a legal entity with a contact person, a name alone an individual,
    a blank name an individual named after the address; known addresses and companies are
    matched and reported instead of duplicated."""
    ids = await _seed(sessions, 10)
    report = await disable(sessions)
    assert _figures(report) == _expected_figures(10)
    rows = await _potential(sessions)
    async with sessions() as session:
        clients = {c.id: c for c in (await session.execute(select(Client))).scalars()}
        contacts = {c.id: c for c in (await session.execute(select(ContactPerson))).scalars()}

    def client_of(i: int) -> Client:
        return clients[rows[ids[i]].client_id or 0]

    def contact_of(i: int) -> ContactPerson:
        return contacts[rows[ids[i]].contact_person_id or 0]

    assert (client_of(0).kind, client_of(0).name) == ("legal", "Company 0")
    person = contact_of(0)
    assert (person.full_name, person.email, person.phone) == (
        "Person 0",
        "p0@people.example",
        "+1 555 0000000",
    )
    assert person.client_id == client_of(0).id
    assert client_of(4).id == client_of(3).id  # «ООО "Company 3"» is Company 3
    assert contact_of(4).full_name == "Person 4"
    assert (client_of(5).kind, client_of(5).name, client_of(5).email) == (
        "individual",
        "Person 5",
        "p5@people.example",
    )
    assert rows[ids[5]].contact_person_id is None
    assert (client_of(7).kind, client_of(7).name) == ("individual", "p7@people.example")
    assert (client_of(8).name, rows[ids[8]].contact_person_id) == ("Known 8", None)
    assert (client_of(9).name, contact_of(9).full_name) == ("Existing 9 Ltd", "Person 9")
    assert len(report.matches) == 3
    assert any("same address known8@clients.example" in m for m in report.matches)
    assert any('same company ""Existing 9""' in m for m in report.matches)
    # On PostgreSQL the two spellings of Company 3 are converted in parallel: either may come first.
    assert any(
        'same company "ООО «Company 3»"' in m or 'same company "Company 3"' in m
        for m in report.matches
    )
    assert not await _flag(sessions)


async def test_documents_follow_and_nothing_is_deleted(sessions: Sessions) -> None:
    """Every letter and lead of a potential client points at its client and contact person
    instead, and every potential client stays, linked, with its conversion time."""
    await _seed(sessions, 30)
    await disable(sessions)
    rows = await _potential(sessions)
    assert len(rows) == 30
    assert all(row.client_id and row.converted_at for row in rows.values())
    async with sessions() as session:
        for table in (Letter, Lead):
            docs = (await session.execute(select(table))).scalars().all()
            assert docs and all(doc.potential_client_id is None for doc in docs)
            by_address = {row.email: row for row in rows.values()}
            for doc in docs:
                address = doc.from_address if table is Letter else doc.sender_address
                owner = by_address[address]
                assert (doc.client_id, doc.contact_person_id) == (
                    owner.client_id,
                    owner.contact_person_id,
                )
    assert await _count(sessions, Letter.id) == 60


async def test_linked_ones_are_left_alone(sessions: Sessions) -> None:
    """A potential client already linked to a client keeps its link and its documents."""
    ids = await _seed(sessions, 10)
    async with sessions.begin() as session:
        known = (await session.execute(select(Client.id).where(Client.name == "Known 8"))).scalar()
        await session.execute(
            update(PotentialClient).where(PotentialClient.id == ids[0]).values(client_id=known)
        )
    report = await disable(sessions)
    assert (report.converted, report.already_linked) == (9, 1)
    rows = await _potential(sessions)
    assert (rows[ids[0]].client_id, rows[ids[0]].converted_at) == (known, None)
    assert await _count(sessions, Letter.id, Letter.potential_client_id == ids[0]) == 2


async def test_none_unlinked_just_switches_the_flag_off(sessions: Sessions) -> None:
    """With no potential clients to convert, disabling only switches the setting off; enabling
    switches it back on."""
    assert await _flag(sessions)
    report = await disable(sessions)
    assert _figures(report) == (0, 0, 0, 0, 0, 0)
    assert not await _flag(sessions)
    await enable(sessions)
    assert await _flag(sessions)


class Crash(Exception):
    """Stands for the process dying between two conversions."""


async def test_rerun_after_a_crash_converts_the_rest_once(sessions: Sessions) -> None:
    """A run stopped after some conversions leaves them converted and the flag on; a rerun
    converts the rest, and nothing twice."""
    await _seed(sessions, 40)
    clients_before = await _count(sessions, Client.id)
    seen = 0

    def crash_after_seven(step: int) -> None:
        nonlocal seen
        seen += step
        if seen == 7:
            raise Crash

    with pytest.raises(Crash):
        await disable(sessions, progress=crash_after_seven)
    async with sessions() as session:
        left = await count_unlinked(session)
    assert 0 < left <= 33
    assert await _flag(sessions)
    report = await disable(sessions)
    assert report.converted == left
    assert report.already_linked == 40 - left
    async with sessions() as session:
        assert await count_unlinked(session) == 0
    want = expected(40)
    assert await _count(sessions, Client.id) == clients_before + want.clients_created
    assert await _count(sessions, ContactPerson.id) == want.contacts_created
    assert await _count(sessions, PotentialClient.id) == 40
    assert not await _flag(sessions)


async def test_two_runs_at_once_convert_each_once(sessions: Sessions) -> None:
    """Two conversions started together (the CLI and the CRM) never convert one potential client
    twice nor create the same client twice."""
    await _seed(sessions, 200)
    clients_before = await _count(sessions, Client.id)
    first, second = await asyncio.gather(
        convert_potential_clients(sessions), convert_potential_clients(sessions)
    )
    assert first.converted + second.converted == 200
    want = expected(200)
    assert first.clients_created + second.clients_created == want.clients_created
    assert await _count(sessions, Client.id) == clients_before + want.clients_created
    assert await _count(sessions, ContactPerson.id) == want.contacts_created


@pytest.mark.slow
async def test_thousands(sessions: Sessions) -> None:
    """Thousands of potential clients, each with two letters and a lead, are all converted
    (bench/convert.py times ten thousand)."""
    await _seed(sessions, 3_000)
    steps: list[int] = []
    report = await disable(sessions, progress=steps.append)
    assert _figures(report) == _expected_figures(3_000)
    assert len(steps) == 3_000
    assert len(report.matches) == 50  # capped; the count has them all
    async with sessions() as session:
        assert await count_unlinked(session) == 0
    assert await _count(sessions, Letter.id, Letter.potential_client_id.is_not(None)) == 0
    assert await _count(sessions, Lead.id, Lead.client_id.is_(None)) == 0


async def test_client_for_matches_before_creating(sessions: Sessions) -> None:
    """client_for, called from an async session as the daemon does, creates a legal entity with
    its contact person once, then finds it by address and by company."""
    from maild.db.parties import client_for

    async with sessions.begin() as session:
        made = await client_for(
            session, full_name="Anna Petrova", company="Romashka LLC", email="Anna@Romashka.example"
        )
        again = await client_for(
            session, full_name="Anna", company="", email="anna@romashka.example"
        )
        colleague = await client_for(
            session, full_name="Ivan", company="«Romashka»", email="ivan@romashka.example"
        )
    assert (made.created_client, made.created_contact, made.matched) == (True, True, None)
    assert (again.client_id, again.contact_person_id) == (made.client_id, made.contact_person_id)
    assert again.matched == "address anna@romashka.example"
    assert colleague.client_id == made.client_id
    assert (colleague.created_client, colleague.created_contact) == (False, True)
    assert colleague.matched == 'company "«Romashka»"'
