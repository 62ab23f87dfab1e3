"""A backlog's group transaction gives way to a push waiting for the write gate, once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage
from maild.db.gate import WriteGate
from maild.db.tables import Letter
from maild.decide import Decider, RulesHolder, StoredLetter
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config
from maild.testing.configs import unreached_account
from maild.testing.samples import SALES, letter

BACKLOG, PUSH = "Backlog", "Push"


def config() -> Config:
    """Give one account watching a backlog folder and a pushed one."""
    return Config.model_validate(
        {
            "accounts": [unreached_account(address=SALES, watch=[BACKLOG, PUSH])],
        }
    )


class HeldDecider(Decider):
    """Decide as usual, but hold the first transaction before its first letter until released."""

    def __init__(self, settings: Config) -> None:
        super().__init__(RulesHolder(settings.ruleset), "sales", BACKLOG, forward_fuse_per_hour=0)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def apply(
        self,
        session: AsyncSession,
        account_id: int,
        letters: Sequence[StoredLetter],
        *,
        folder_id: int = 0,
        between: Callable[[], None] | None = None,
    ) -> int:
        """Count the attempt, wait on the first one, then decide."""
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return await super().apply(
            session, account_id, letters, folder_id=folder_id, between=between
        )


async def stores(
    sessions: async_sessionmaker[AsyncSession], gate: WriteGate
) -> tuple[FolderStore, FolderStore, HeldDecider]:
    """Give the backlog's store (held in its decider), the push's store, and the decider."""
    settings = config()
    ids = await prepare_folders(sessions, settings)
    decider = HeldDecider(settings)
    made = [
        FolderStore(
            sessions=sessions,
            account="sales",
            folder=name,
            folder_id=ids[("sales", name)],
            first_sync_mode="process",
            decider=decider if name == BACKLOG else None,
            write_gate=gate,
        )
        for name in (BACKLOG, PUSH)
    ]
    for store in made:
        await store.set_uidvalidity(7, changed=False)
    return made[0], made[1], decider


def items(count: int, offset: int = 0) -> list[tuple[FetchedMessage, Any, None]]:
    """Give fetched and parsed letters with UIDs 1..count."""
    out = []
    for uid in range(1, count + 1):
        raw = letter(
            sender=("C", "c@client.example"),
            to=SALES,
            subject=f"s{uid}",
            body="b",
            index=offset + uid,
        )
        out.append((FetchedMessage(uid=uid, raw=raw, size=len(raw)), parse_letter(raw), None))
    return out


async def letters_in(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Count the stored letters."""
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Letter))).scalar_one())


async def test_a_push_goes_before_the_rest_of_a_backlog_s_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The backlog's group rolls back when a push waits, the push commits, then the group again."""
    gate = WriteGate()
    backlog, push, decider = await stores(sessions, gate)
    group = asyncio.ensure_future(backlog.store_many(items(20)))
    await decider.entered.wait()  # the group holds the gate, its letters inserted
    pushed = asyncio.ensure_future(push.store_many(items(1, offset=100), push=True))
    while not gate.pushes_waiting:
        await asyncio.sleep(0)
    decider.release.set()
    done, _ = await asyncio.wait({group, pushed}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {pushed}
    assert await pushed == ["stored"]
    assert await group == ["stored"] * 20
    assert decider.calls == 2  # decided once more, after the push
    assert await letters_in(sessions) == 21  # nothing stored twice by the retry


async def test_a_backlog_gives_way_once_then_runs_to_its_end(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Pushes that keep waiting cannot hold a backlog back: its second attempt ignores them."""
    gate = WriteGate()
    backlog, _, decider = await stores(sessions, gate)
    decider.release.set()
    gate.pushes_waiting = 1  # as if a push were always waiting
    assert await backlog.store_many(items(5)) == ["stored"] * 5
    assert decider.calls == 1  # the first attempt gave way before deciding, the second ran through
    assert await letters_in(sessions) == 5


async def test_without_a_push_a_backlog_does_not_give_way(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """No push waiting: one attempt, as before."""
    gate = WriteGate()
    backlog, _, decider = await stores(sessions, gate)
    decider.release.set()
    assert await backlog.store_many(items(5)) == ["stored"] * 5
    assert decider.calls == 1
