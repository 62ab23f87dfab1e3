"""Folder leases and what several processes share, on both databases: taking, renewing, losing.

Each test plays two or three processes through the same SQL the daemon runs; the database clock
is stepped by passing ``now``, so nothing here waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.autoreply.responder import Autoresponder, period_of
from maild.core.letter import FetchedMessage
from maild.db import leases
from maild.db import outbox as outbox_db
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Letter, OutboxItem
from maild.decide import Decider, RulesHolder
from maild.errors import LeaseLost
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config
from maild.testing.configs import unreached_account

pytestmark = pytest.mark.usefixtures("db_url")

TTL = timedelta(seconds=30)
NOW = datetime.now(UTC).replace(microsecond=0)


def config(folders: int = 1) -> Config:
    """One account with a forward rule and an auto-reply, watching ``folders`` folders."""
    return Config.model_validate(
        {
            "smtp": {"host": "127.0.0.1", "security": "none"},
            "accounts": [
                unreached_account(
                    watch=[f"F{n}" for n in range(folders)],
                    autoreply={
                        "enabled": True,
                        "start": (NOW - timedelta(days=1)).isoformat(),
                        "end": (NOW + timedelta(days=1)).isoformat(),
                        "text": "Away.",
                    },
                )
            ],
            "rules": [
                {
                    "name": "all to the archive",
                    "match": {"header": "subject", "contains": "order"},
                    "actions": [{"forward": {"to": "archive@corp.example"}}],
                }
            ],
        }
    )


def store(
    sessions: async_sessionmaker[AsyncSession],
    cfg: Config,
    folder_id: int,
    owner: str | None = None,
) -> FolderStore:
    """Build a folder's store as a daemon does, with the rules and the autoresponder."""
    account = cfg.accounts[0]
    return FolderStore(
        sessions=sessions,
        account="sales",
        folder="F0",
        folder_id=folder_id,
        first_sync_mode="process",
        decider=Decider(
            RulesHolder(cfg.ruleset),
            "sales",
            "F0",
            autoreply=Autoresponder("sales", period_of(account), frozenset({account.address})),
        ),
        lease_owner=owner,
    )


def fetched(uid: int) -> tuple[FetchedMessage, bytes]:
    """A new letter from a client, arrived now."""
    raw = (
        f"Return-Path: <client@client.example>\r\nFrom: client@client.example\r\n"
        f"To: sales@corp.example\r\nSubject: order {uid}\r\n"
        f"Message-ID: <order{uid}@client.example>\r\n\r\nPlease.\r\n"
    ).encode()
    return FetchedMessage(uid=uid, raw=raw, size=len(raw), internaldate=NOW), raw


async def put(target: FolderStore, uid: int) -> str:
    """Store one letter; give its outcome."""
    message, raw = fetched(uid)
    return await target.store(message, parse_letter(raw), None)


async def take(
    sessions: async_sessionmaker[AsyncSession],
    owner: str,
    ids: list[int],
    *,
    now: datetime = NOW,
    limit: int = 100,
) -> set[int]:
    """Take leases as a process's tick does, at a given database time."""
    async with sessions.begin() as session:
        return await leases.take(session, owner, ids, now=now, until=now + TTL, limit=limit)


async def count(sessions: async_sessionmaker[AsyncSession], model: type[object]) -> int:
    """Count a table's rows."""
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_leases_are_shared_renewed_and_released(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A takes two of four folders, B the rest; each renews only its own; A's release frees two."""
    ids = sorted((await prepare_folders(sessions, config(folders=4))).values())
    first = await take(sessions, "A", ids, limit=2)
    assert len(first) == 2
    assert await take(sessions, "B", ids) == set(ids) - first
    assert await take(sessions, "C", ids) == set()
    async with sessions.begin() as session:
        assert await leases.renew(session, "A", ids, until=NOW + TTL) == first
        holders = await leases.holders(session, ids)
    assert {i for i, h in holders.items() if h.owner == "A"} == first
    async with sessions.begin() as session:
        assert await leases.release(session, "A") == first
    assert await take(sessions, "C", ids) == first


async def test_a_lease_that_ran_out_is_taken_over_and_the_old_owner_stores_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """After B takes A's expired lease, A's renewal finds nothing and its stores raise LeaseLost."""
    cfg = config()
    [folder_id] = (await prepare_folders(sessions, cfg)).values()
    assert await take(sessions, "A", [folder_id]) == {folder_id}
    old = store(sessions, cfg, folder_id, owner="A")
    await old.set_uidvalidity(7, changed=False)
    assert await put(old, 1) == "stored"
    assert await take(sessions, "B", [folder_id]) == set()  # not run out yet
    later = NOW + TTL + timedelta(seconds=1)
    assert await take(sessions, "B", [folder_id], now=later) == {folder_id}
    async with sessions.begin() as session:
        assert await leases.renew(session, "A", [folder_id], until=later + TTL) == set()
    with pytest.raises(LeaseLost):
        await put(old, 2)
    with pytest.raises(LeaseLost):
        await old.synced()
    with pytest.raises(LeaseLost):
        await old.set_uidvalidity(8, changed=True)
    new = store(sessions, cfg, folder_id, owner="B")
    assert (await new.cursor()).last_uid == 1
    assert await put(new, 2) == "stored"
    assert await count(sessions, Letter) == 2


async def test_processes_count_until_their_heartbeat_runs_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Live rows are counted; a gone one stops counting and is forgotten; leaving deletes a row."""
    async with sessions.begin() as session:
        for owner, start in (("A", NOW), ("B", NOW - TTL * 2)):
            await leases.heartbeat(session, owner, host="h", pid=1, now=start, until=start + TTL)
        assert await leases.alive(session, NOW) == 1
        await leases.forget_gone(session, NOW)
        await leases.heartbeat(session, "C", host="h", pid=2, now=NOW, until=NOW + TTL)
        assert await leases.alive(session, NOW) == 2
        await leases.leave(session, "A")
        assert await leases.alive(session, NOW) == 1


async def test_a_letter_stored_by_two_processes_at_once_queues_its_effects_once(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two processes (two pools) store the same letters together: one row, one forward, one reply."""
    cfg = config()
    [folder_id] = (await prepare_folders(sessions, cfg)).values()
    await store(sessions, cfg, folder_id).set_uidvalidity(7, changed=False)
    other = create_engine(db_url)
    try:
        mine, theirs = (
            store(sessions, cfg, folder_id),
            store(session_factory(other), cfg, folder_id),
        )
        for uid in range(1, 6):
            outcomes = await asyncio.gather(put(mine, uid), put(theirs, uid))
            assert sorted(outcomes) == ["duplicate", "stored"]
    finally:
        await other.dispose()
    async with sessions() as session:
        kinds = (await session.execute(select(OutboxItem.kind, OutboxItem.letter_id))).all()
    assert sorted(kind for kind, _ in kinds) == ["autoreply"] + ["forward"] * 5
    assert await count(sessions, Letter) == 5


async def test_an_outbox_claim_taken_over_is_not_confirmed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A dispatcher whose claim ran out and was claimed again leaves the row to the new claimant."""
    cfg = config()
    [folder_id] = (await prepare_folders(sessions, cfg)).values()
    target = store(sessions, cfg, folder_id)
    await target.set_uidvalidity(7, changed=False)
    await put(target, 1)
    async with sessions.begin() as session:
        [late, *_] = await outbox_db.claim_due(session, limit=10, lease_seconds=0.001)
    await asyncio.sleep(0.01)
    async with sessions.begin() as session:
        claims = await outbox_db.claim_due(session, limit=10, lease_seconds=60)
    fresh = next(item for item in claims if item.id == late.id)
    async with sessions.begin() as session:
        assert await outbox_db.confirm(session, late, lease_seconds=60) is None
        assert await outbox_db.confirm(session, fresh, lease_seconds=60) is not None
