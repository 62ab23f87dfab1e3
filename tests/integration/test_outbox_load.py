"""A batch of CRM letters reads at most its byte bound: files, and stored letters they take whole."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db import sending
from maild.db.tables import OutboxAttachment, OutboxItem
from maild.testing.samples import SALES, letter
from tests.e2e.test_outgoing import crm_row
from tests.integration.test_outbox_db import config_with, put, store_with_rules

pytestmark = pytest.mark.usefixtures("db_url")

BIG = letter(
    sender=("Client", "client@client.example"), to=SALES, subject="Drawings", body="x" * 5000
)


async def _row(session: AsyncSession, key: str, letter_ids: list[int]) -> int:
    """Queue a send row with no files of its own, attaching stored letters whole."""
    row = crm_row(key, "").values(attach_letter_ids=letter_ids).returning(OutboxItem.id)
    return int((await session.execute(row)).scalar_one())


async def test_stored_letters_taken_whole_count_toward_the_bound(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Rows that attach a stored letter, or take a file from one, count its size: with room for
    one such letter, each batch reads one row and gives the others back; small rows all go."""
    store = await store_with_rules(sessions, config_with([]))
    assert await put(store, 1, BIG) == "stored"
    async with sessions.begin() as session:
        whole = [await _row(session, f"whole{n}", [1]) for n in range(2)]
        part = await _row(session, "part", [])
        await session.execute(
            insert(OutboxAttachment).values(
                outbox_id=part,
                position=0,
                filename="",
                content=None,
                letter_id=1,
                letter_position=0,
            )
        )
        small = [await _row(session, f"small{n}", []) for n in range(3)]
    async with sessions() as session:
        rows, later = await sending.load_sends(session, [*whole, part], 1, max_bytes=len(BIG) + 100)
        assert (list(rows), later) == ([whole[0]], [whole[1], part])
        rows, later = await sending.load_sends(session, [part, *small], 1, max_bytes=len(BIG) + 100)
        assert (list(rows), later) == ([part, *small], [])
        rows, later = await sending.load_sends(session, [*small, part], 1, max_bytes=len(BIG) - 1)
        assert (list(rows), later) == (small, [part])
