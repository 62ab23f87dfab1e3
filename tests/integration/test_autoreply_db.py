"""The autoresponder in the letter's transaction: the throttle's window, its release, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.autoreply.responder import Autoresponder, period_of
from maild.core.letter import FetchedMessage
from maild.db import autoreply as autoreply_db
from maild.db.tables import AutoreplyLog, Letter, OutboxItem
from maild.decide import Decider, RulesHolder
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config

pytestmark = pytest.mark.usefixtures("db_url")

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def config() -> Config:
    """One account with a period around T0, the seed's 3 days, and a rule for partners."""
    return Config.model_validate(
        {
            "smtp": {"host": "127.0.0.1", "security": "none"},
            "accounts": [
                {
                    "name": "support",
                    "address": "support@corp.example",
                    "imap": {
                        "host": "127.0.0.1",
                        "security": "none",
                        "username": "support",
                        "password_env": "UNUSED",
                    },
                    "autoreply": {
                        "enabled": True,
                        "start": T0 - timedelta(days=30),
                        "end": T0 + timedelta(days=30),
                        "text": "On holiday.",
                    },
                }
            ],
            "rules": [
                {
                    "name": "partners",
                    "match": {"header": "from", "contains": "@partner.example"},
                    "actions": [{"autoreply": False}],
                }
            ],
        }
    )


async def make_store(sessions: async_sessionmaker[AsyncSession]) -> FolderStore:
    """Build the INBOX store with its decider and autoresponder, as the daemon does."""
    cfg = config()
    ids = await prepare_folders(sessions, cfg)
    account = cfg.accounts[0]
    store = FolderStore(
        sessions=sessions,
        account="support",
        folder="INBOX",
        folder_id=ids[("support", "INBOX")],
        first_sync_mode="process",
        decider=Decider(
            RulesHolder(cfg.ruleset),
            "support",
            "INBOX",
            autoreply=Autoresponder("support", period_of(account), frozenset({account.address})),
        ),
    )
    await store.set_uidvalidity(7, changed=False)
    return store


UID = iter(range(1, 10_000))


def raw(sender: str, n: int) -> bytes:
    """A plain letter from a sender, delivered with its Return-Path."""
    return (
        f"Return-Path: <{sender}>\r\nFrom: {sender}\r\nTo: support@corp.example\r\n"
        f"Subject: question {n}\r\nMessage-ID: <m{n}@client.example>\r\n\r\nHello\r\n"
    ).encode()


async def deliver(store: FolderStore, sender: str, arrival: datetime) -> str:
    """Store one letter that arrived at ``arrival``; give its autoreply outcome."""
    uid = next(UID)
    data = raw(sender, uid)
    message = FetchedMessage(uid=uid, raw=data, size=len(data), internaldate=arrival)
    await store.store(message, parse_letter(data), None)
    async with store.sessions() as session:
        return str(
            (
                await session.execute(select(Letter.autoreply_outcome).where(Letter.uid == uid))
            ).scalar_one()
        )


async def replies(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """List the recipients of queued auto-replies, in order."""
    async with sessions() as session:
        rows = await session.execute(
            select(OutboxItem.target).where(OutboxItem.kind == "autoreply").order_by(OutboxItem.id)
        )
        return [str(target) for target in rows.scalars()]


async def test_throttle_window_boundaries(sessions: async_sessionmaker[AsyncSession]) -> None:
    """+1 day no, exactly +3 days no, +3 days +1 s yes; other letter case no; a second sender yes."""
    store = await make_store(sessions)
    assert (await deliver(store, "Ivan@client.example", T0)).startswith("queued")
    assert "within 3 days" in await deliver(store, "ivan@client.example", T0 + timedelta(days=1))
    assert (await deliver(store, "IVAN@CLIENT.EXAMPLE", T0 + timedelta(days=3))).startswith(
        "suppressed"
    )
    assert (await deliver(store, "olga@client.example", T0 + timedelta(days=1))).startswith(
        "queued"
    )
    assert (
        await deliver(store, "ivan@client.example", T0 + timedelta(days=3, seconds=1))
    ).startswith("queued")
    assert await replies(sessions) == [
        "Ivan@client.example",
        "olga@client.example",
        "ivan@client.example",
    ]


async def test_suppressed_letters_do_not_extend_the_window(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A throttled letter at +2 days does not move the window: +3 days +1 s is answered."""
    store = await make_store(sessions)
    await deliver(store, "ivan@client.example", T0)
    await deliver(store, "ivan@client.example", T0 + timedelta(days=2))
    outcome = await deliver(store, "ivan@client.example", T0 + timedelta(days=3, seconds=1))
    assert outcome.startswith("queued")


async def test_rule_and_outside_period(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A rule's autoreply = false and a letter after the end get no reply and claim nothing."""
    store = await make_store(sessions)
    said = await deliver(store, "boss@partner.example", T0)
    assert said == 'suppressed: rule "partners" says no auto-reply'
    late = await deliver(store, "ivan@client.example", T0 + timedelta(days=31))
    assert "outside the period" in late
    async with sessions() as session:
        assert (await session.execute(select(AutoreplyLog))).first() is None
    assert await replies(sessions) == []


async def test_release_gives_the_window_back(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A failed reply's claim is released: the previous window returns, or none when there was none."""
    store = await make_store(sessions)
    await deliver(store, "ivan@client.example", T0)
    async with sessions() as session:
        first = (await session.execute(select(AutoreplyLog))).scalar_one()
        account_id, first_letter = first.account_id, first.letter_id
    async with sessions.begin() as session:
        await autoreply_db.record_sent(
            session,
            account_id=account_id,
            sender="ivan@client.example",
            letter_id=first_letter,
            arrival=T0,
        )
    assert (await deliver(store, "ivan@client.example", T0 + timedelta(days=4))).startswith(
        "queued"
    )
    async with sessions() as session:
        second = (await session.execute(select(AutoreplyLog))).scalar_one()
        assert second.previous_letter_id == first_letter and second.sent_at is None
        second_letter = second.letter_id
    async with sessions.begin() as session:
        await autoreply_db.release(
            session, account_id=account_id, sender="ivan@client.example", letter_id=second_letter
        )
    async with sessions() as session:
        back = (await session.execute(select(AutoreplyLog))).scalar_one()
        assert (back.letter_id, back.window_start, back.previous_letter_id) == (
            first_letter,
            T0,
            None,
        )
        assert back.sent_at is not None
    async with sessions.begin() as session:
        await autoreply_db.release(
            session, account_id=account_id, sender="ivan@client.example", letter_id=first_letter
        )
    async with sessions() as session:
        assert (await session.execute(select(AutoreplyLog))).first() is None
    # Nothing blocks the sender now: the next letter is answered at once.
    assert (
        await deliver(store, "ivan@client.example", T0 + timedelta(days=4, hours=1))
    ).startswith("queued")


async def test_manual_off_switch_applies_to_its_period(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Switched off by hand: later arrivals are suppressed; a switch for another period is ignored."""
    store = await make_store(sessions)
    period = period_of(config().accounts[0])
    assert period.start is not None and period.end is not None
    async with sessions.begin() as session:
        await autoreply_db.switch_off(
            session, "support", start=period.start, end=period.end, at=T0, by="admin"
        )
    assert (await deliver(store, "a@client.example", T0 - timedelta(hours=1))).startswith("queued")
    assert "switched off by hand" in await deliver(store, "b@client.example", T0)
    async with sessions.begin() as session:
        await autoreply_db.switch_off(
            session, "support", start=period.start - timedelta(days=1), end=period.end, at=T0
        )
    assert (await deliver(store, "c@client.example", T0)).startswith("queued")
