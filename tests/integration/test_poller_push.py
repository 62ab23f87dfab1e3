"""A watched folder's new letters, heard in IDLE, are stored once each without reading the cursor again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.core.status import StatusBoard
from maild.db.tables import Folder, Letter
from maild.ingest.imap import ImapEndpoint
from maild.ingest.poller import Cursor, FolderPoller, PollOptions
from maild.ingest.workers import ParserPool
from maild.metrics import Metrics
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config
from maild.testing import DovecotServer
from maild.testing.samples import letter

USER = "support"
NO_HANG = 60.0


class CountingSink:
    """A FolderStore that counts how often the poller reads the cursor."""

    def __init__(self, store: FolderStore) -> None:
        self.store = store
        self.cursor_reads = 0

    async def cursor(self) -> Cursor:
        self.cursor_reads += 1
        return await self.store.cursor()

    async def set_uidvalidity(self, uidvalidity: int, *, changed: bool) -> None:
        await self.store.set_uidvalidity(uidvalidity, changed=changed)

    async def store_many(
        self,
        items: Sequence[tuple[FetchedMessage, ParsedLetter | None, str | None]],
        *,
        push: bool = False,
    ) -> list[str]:
        return await self.store.store_many(items, push=push)

    async def synced(self) -> None:
        await self.store.synced()


def config(folder: str) -> Config:
    return Config.model_validate(
        {
            "accounts": [
                {
                    "name": "support",
                    "address": "support@corp.example",
                    "imap": {
                        "host": "127.0.0.1",
                        "security": "none",
                        "username": USER,
                        "password_env": "UNUSED",
                    },
                    "folders": {"watch": [folder]},
                }
            ]
        }
    )


async def uids_stored(sessions: async_sessionmaker[AsyncSession], folder_id: int) -> list[int]:
    async with sessions() as session:
        rows = await session.execute(select(Letter.uid).where(Letter.folder_id == folder_id))
        return sorted(uid for (uid,) in rows)


async def wait_for(sessions: async_sessionmaker[AsyncSession], folder_id: int, count: int) -> None:
    async def stored() -> None:
        while len(await uids_stored(sessions, folder_id)) < count:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(stored(), NO_HANG)


@pytest.mark.usefixtures("db_url")
async def test_letters_heard_in_idle_are_stored_once_each_with_the_cursor(
    dovecot: DovecotServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """One cursor read per connection; each letter pushed later is stored once, the cursor with it."""
    folder = f"Push{uuid.uuid4().hex[:8]}"
    dovecot.create_folder(USER, folder)
    dovecot.append(
        USER, folder, letter(sender=("A", "a@x.example"), to="s@c.example", subject="0", body="b")
    )
    [folder_id] = (await prepare_folders(sessions, config(folder))).values()
    sink = CountingSink(
        FolderStore(sessions=sessions, account="support", folder=folder, folder_id=folder_id)
    )
    stop = asyncio.Event()
    parser = ParserPool(1)
    poller = FolderPoller(
        account="support",
        folder=folder,
        endpoint=ImapEndpoint(
            host=dovecot.host,
            port=dovecot.port,
            security="none",
            username=USER,
            password=dovecot.users[USER],
            timeout=10.0,
        ),
        sink=sink,
        parser=parser,
        options=PollOptions(idle_restart=30.0),
        status=StatusBoard(),
        metrics=Metrics(),
        stop=stop,
    )
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(sessions, folder_id, 1)
        for n in range(1, 4):
            raw = letter(sender=("A", "a@x.example"), to="s@c.example", subject=f"{n}", body="b")
            await asyncio.to_thread(dovecot.append, USER, folder, raw)
            await wait_for(sessions, folder_id, n + 1)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, NO_HANG)
        parser.close()
    assert await uids_stored(sessions, folder_id) == [1, 2, 3, 4]
    assert sink.cursor_reads == 1
    async with sessions() as session:
        row = (await session.execute(select(Folder).where(Folder.id == folder_id))).scalar_one()
    assert row.last_uid == 4
    assert row.first_sync_done
