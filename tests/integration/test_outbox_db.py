"""Decisions recorded with the letter, and the outbox's claim/lease/retry cycle, on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage
from maild.db import outbox
from maild.db.tables import Letter, OutboxItem, RuleHit, utcnow
from maild.decide import Decider, RulesHolder
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config
from maild.testing.configs import unreached_account
from maild.testing.samples import SALES, letter

pytestmark = pytest.mark.usefixtures("db_url")


def config_with(rules: list[dict[str, Any]], **outbox_keys: Any) -> Config:
    return Config.model_validate(
        {
            "outbox": outbox_keys,
            "accounts": [unreached_account(folders={"watch": ["INBOX"], "deleted": "Trash"})],
            "rules": rules,
        }
    )


async def store_with_rules(
    sessions: async_sessionmaker[AsyncSession], config: Config
) -> FolderStore:
    ids = await prepare_folders(sessions, config)
    store = FolderStore(
        sessions=sessions,
        account="sales",
        folder="INBOX",
        folder_id=ids[("sales", "INBOX")],
        first_sync_mode="process",
        decider=Decider(
            RulesHolder(config.ruleset),
            "sales",
            "INBOX",
            forward_fuse_per_hour=config.outbox.forward_fuse_per_hour,
        ),
    )
    await store.set_uidvalidity(7, changed=False)
    return store


def sample(subject: str, sender: str = "client@client.example", index: int = 0) -> bytes:
    return letter(sender=("Client", sender), to=SALES, subject=subject, body="x", index=index)


async def put(store: FolderStore, uid: int, raw: bytes) -> str:
    message = FetchedMessage(uid=uid, raw=raw, size=len(raw))
    return await store.store(message, parse_letter(raw), None)


async def all_rows(sessions: async_sessionmaker[AsyncSession], model: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars())


RULES = [
    {
        "name": "invoices",
        "match": {"header": "subject", "contains": "invoice"},
        "actions": [
            {"forward": {"to": "acc@elsewhere.example"}},
            {"add_flag": "seen"},
            {"set_responsible": "anna"},
            {"move": "Trash"},
        ],
    }
]


async def test_decision_is_recorded_with_the_letter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Hits, outbox rows in order, the Responsible and the deletion mark come with the letter."""
    store = await store_with_rules(sessions, config_with(RULES))
    assert await put(store, 1, sample("invoice 1")) == "stored"
    assert await put(store, 2, sample("hello")) == "stored"
    [hit] = await all_rows(sessions, RuleHit)
    assert hit.rule == "invoices" and len(hit.effects) == 4
    items = await all_rows(sessions, OutboxItem)
    assert [(i.kind, i.target) for i in sorted(items, key=lambda i: i.seq)] == [
        ("forward", "acc@elsewhere.example"),
        ("add_flag", "\\Seen"),
        ("move", "Trash"),
    ]
    letters = {row.subject: row for row in await all_rows(sessions, Letter)}
    assert letters["invoice 1"].marked_for_deletion
    assert letters["invoice 1"].responsible_login == "anna"
    assert not letters["hello"].marked_for_deletion


async def test_the_same_letter_again_queues_nothing_new(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A letter seen again (same UID) is a duplicate: no second hit, no second effect."""
    store = await store_with_rules(sessions, config_with(RULES))
    await put(store, 1, sample("invoice 1"))
    assert await put(store, 1, sample("invoice 1")) == "duplicate"
    assert len(await all_rows(sessions, OutboxItem)) == 3
    assert len(await all_rows(sessions, RuleHit)) == 1


async def test_forward_fuse_per_sender(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Past the hourly limit for one sender, forwards are dropped; other senders are unaffected."""
    rules = [
        {"name": "fwd", "actions": [{"forward": {"to": "loop@elsewhere.example"}}]},
    ]
    store = await store_with_rules(sessions, config_with(rules, forward_fuse_per_hour=3))
    for uid in range(1, 7):
        await put(store, uid, sample(f"n{uid}", "looper@x.example", index=uid))
    await put(store, 7, sample("other", "other@x.example", index=7))
    items = await all_rows(sessions, OutboxItem)
    senders = [item.letter_id for item in items]
    assert len(senders) == 4  # three from the looping sender, one from the other


async def test_claim_lease_retry_and_dead(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A claimed row is invisible until its lease ends; retry and dead states behave."""
    store = await store_with_rules(sessions, config_with(RULES))
    await put(store, 1, sample("invoice 1"))
    async with sessions.begin() as session:
        claimed = await outbox.claim_due(session, limit=10, lease_seconds=60)
    assert [c.kind for c in claimed] == ["forward", "add_flag", "move"]
    assert all(c.folder == "INBOX" and c.uid == 1 and c.attempts == 1 for c in claimed)
    async with sessions.begin() as session:
        assert await outbox.claim_due(session, limit=10, lease_seconds=60) == []
    # The process "dies": the lease runs out and the rows are due again (at most one repeat);
    # a claim that died untried is not charged as an attempt, an attempt that ended is.
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxItem).values(locked_until=utcnow() - timedelta(seconds=1))
        )
    async with sessions.begin() as session:
        again = await outbox.claim_due(session, limit=10, lease_seconds=60)
        assert [c.attempts for c in again] == [1, 1, 1]
        forward, flag, move = again
        await outbox.mark_done(session, forward.id, {"ok": True})
        await outbox.mark_retry(session, flag.id, "451 later", utcnow() + timedelta(hours=1))
        await outbox.mark_dead(session, move.id, "550 no")
    assert [row.attempts for row in await all_rows(sessions, OutboxItem)] == [1, 1, 1]
    async with sessions() as session:
        assert await outbox.pending_before(session, move.letter_id or 0, move.seq)
        assert await outbox.counts(session) == {"done": 1, "pending": 1, "dead": 1}
        assert await outbox.next_due_at(session) is not None
    async with sessions.begin() as session:
        assert await outbox.revive(session, None) == 1
    async with sessions() as session:
        assert await outbox.counts(session) == {"done": 1, "pending": 2}


async def test_mailbox_rows_are_claimed_beyond_the_batch(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Mailbox rows come along past ``limit``; a move waits for its flag; one statement records many."""
    store = await store_with_rules(sessions, config_with(RULES))
    for uid in range(1, 5):
        await put(store, uid, sample(f"invoice {uid}", index=uid))
    async with sessions.begin() as session:
        claimed = await outbox.claim_due(session, limit=2, lease_seconds=60, mailbox_limit=5)
    # the first two rows of any kind (forward and flag of letter 1), with the first five
    # mailbox rows (flag and move of letters 1 and 2, flag of letter 3)
    assert [(c.letter_id, c.kind) for c in claimed] == [
        (1, "forward"),
        (1, "add_flag"),
        (1, "move"),
        (2, "add_flag"),
        (2, "move"),
        (3, "add_flag"),
    ]
    moves = [c for c in claimed if c.kind == "move"]
    async with sessions() as session:  # each move waits for its letter's flag
        assert await outbox.blocked(session, moves) == {c.id for c in moves}
    flags = [c for c in claimed if c.kind == "add_flag"]
    async with sessions.begin() as session:
        await outbox.mark_done_many(
            session, [(c.id, {"flag": c.target, "n": c.uid}) for c in flags]
        )
    async with sessions() as session:
        assert await outbox.blocked(session, moves) == set()
    done = [row for row in await all_rows(sessions, OutboxItem) if row.status == "done"]
    assert sorted(row.id for row in done) == sorted(c.id for c in flags)
    assert all(
        row.attempts == 1 and row.result["n"] == row_uid
        for row, row_uid in zip(
            sorted(done, key=lambda r: r.id),
            [c.uid for c in sorted(flags, key=lambda c: c.id)],
            strict=True,
        )
    )
