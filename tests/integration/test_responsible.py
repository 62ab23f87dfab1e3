"""The Responsible from the personal sender name a letter is addressed to, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db import users as users_db
from maild.db.tables import Account, Lead
from maild.pipeline import prepare_folders
from tests.integration.test_leads import Mailbox, lead_of, mail, make_config

pytestmark = pytest.mark.usefixtures("db_url")

USERS = [
    {"login": "anna", "full_name": "Anna Petrova", "sender_names": {"sales": "Anna Petrova"}},
    {"login": "boris", "full_name": "Boris Orlov", "sender_names": {"sales": "Boris  Orlov"}},
    {"login": "bob", "full_name": "Bob", "sender_names": {"sales": "Team Lead"}},
    {"login": "carl", "full_name": "Carl", "sender_names": {"sales": "team lead"}},
    {"login": "olga", "full_name": "Olga", "sender_names": {"support": "Anna Petrova"}},
]


async def open_box(
    sessions: async_sessionmaker[AsyncSession], rules: list[dict[str, Any]] | None = None
) -> Mailbox:
    return await Mailbox(sessions, make_config(rules, USERS)).open()


@pytest.mark.parametrize(
    ("to", "cc", "login", "reason"),
    [
        (
            '"Anna Petrova" <sales@corp.example>',
            None,
            "anna",
            'personal sender name "Anna Petrova" in To',
        ),
        ("ＡＮＮＡ   petrova <SALES@corp.example>", None, "anna", "in To"),
        ("«Boris Orlov» <orders@corp.example>", None, "boris", "in To"),
        ("someone@else.example", "Boris Orlov <sales@corp.example>", "boris", "in Cc"),
        ("Team Lead <sales@corp.example>", None, None, "is ambiguous: bob, carl"),
        ("Nobody Known <sales@corp.example>", None, None, None),
        ("Anna Petrova <anna.private@corp.example>", None, None, None),
    ],
)
async def test_name_match(
    sessions: Any, to: str, cc: str | None, login: str | None, reason: str | None
) -> None:
    """A recipient that is the account's address (or alias) with a user's sender name makes that user Responsible."""
    box = await open_box(sessions)
    headers = {"Cc": cc} if cc else None
    letter = await box.put(mail("Re: offer", to=to, headers=headers), folder="INBOX")
    assert letter.responsible_login == login
    if reason is None:
        assert letter.responsible_reason == ""
    else:
        assert reason in letter.responsible_reason


async def test_names_are_per_account(sessions: Any) -> None:
    """Olga's sender name on support does not match letters of sales."""
    box = await open_box(sessions)
    letter = await box.put(
        mail("Hi", to="Anna Petrova <support@corp.example>"), account="support", folder="INBOX"
    )
    assert letter.responsible_login == "olga"


async def test_rule_wins_over_the_name(sessions: Any) -> None:
    """A rule's set_responsible wins over a personal sender name."""
    rules = [
        {
            "name": "vip",
            "match": {"domain": "from", "is": "client.example"},
            "actions": [{"set_responsible": "zoe"}],
        }
    ]
    box = await open_box(sessions, rules)
    letter = await box.put(mail("Hi", to="Anna Petrova <sales@corp.example>"), folder="INBOX")
    assert (letter.responsible_login, letter.responsible_reason) == ("zoe", "rule vip")


async def test_lead_takes_the_responsible(sessions: Any) -> None:
    """The name's user becomes the Responsible of the lead the letter opens, and of one it joins."""
    box = await open_box(sessions)
    first = await box.put(mail("Quote", to="Anna Petrova <sales@corp.example>"))
    lead = await lead_of(sessions, first)
    assert lead is not None and lead.responsible_login == "anna"
    other = await box.put(mail("Quote 2", sender="z@z.example"))
    assert (await lead_of(sessions, other)).responsible_login is None  # type: ignore[union-attr]
    reply = await box.put(
        mail(
            "Re: Quote 2",
            sender="z@z.example",
            to="Boris Orlov <sales@corp.example>",
            in_reply_to=other.message_id,
        )
    )
    async with sessions() as session:
        joined = await session.get(Lead, reply.lead_id)
    assert joined is not None and joined.responsible_login == "boris"


async def test_changed_names_still_match(sessions: Any) -> None:
    """A sender name used before keeps matching after the user's name changed; the current one wins a tie."""
    box = await open_box(sessions)
    async with sessions.begin() as session:
        sales = (
            await session.execute(Account.__table__.select().where(Account.name == "sales"))
        ).one()
        await users_db.upsert_users(
            session,
            [users_db.DeclaredUser("anna", "Anna Sidorova", "", "", {"sales": "Anna Sidorova"})],
            {"sales": sales.id},
        )
        await users_db.upsert_users(
            session,
            [users_db.DeclaredUser("dina", "Dina", "", "", {"sales": "Anna Petrova"})],
            {"sales": sales.id},
        )
    old = await box.put(
        mail("Re: old thread", to="Anna Petrova <sales@corp.example>"), folder="INBOX"
    )
    assert old.responsible_login == "dina"  # Dina's current name beats Anna's past one
    new = await box.put(mail("Re: new", to="Anna Sidorova <sales@corp.example>"), folder="INBOX")
    assert new.responsible_login == "anna"
    # A restart makes the config's names current again: now Anna and Dina share one current name.
    await prepare_folders(sessions, make_config(None, USERS))
    both = await box.put(mail("Re: again", to="Anna Petrova <sales@corp.example>"), folder="INBOX")
    assert both.responsible_login is None
    assert both.responsible_reason.endswith("is ambiguous: anna, dina")


async def test_a_group_looks_each_name_up_once(sessions: Any) -> None:
    """Letters stored together that address the same names share one lookup each, same outcome."""
    from sqlalchemy import event, select

    from maild.core.letter import FetchedMessage
    from maild.db.tables import Letter
    from maild.ingest.parse import parse_letter

    box = await open_box(sessions)
    store = box.stores[("sales", "INBOX")]
    names = ["Anna Petrova", "Boris Orlov", "Nobody Known"] * 4
    raws = [mail(f"Hi {n}", to=f"{name} <sales@corp.example>") for n, name in enumerate(names)]
    items = [
        (FetchedMessage(uid=uid, raw=raw, size=len(raw)), parse_letter(raw), None)
        for uid, raw in enumerate(raws, start=1)
    ]
    lookups: list[str] = []
    engine = store.sessions.kw["bind"].sync_engine

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "user_sender_names" in statement and statement.lstrip().startswith("SELECT"):
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert await store.store_many(items) == ["stored"] * len(items)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(lookups) == 3
    async with sessions() as session:
        rows = await session.execute(
            select(Letter.uid, Letter.responsible_login)
            .where(Letter.folder_id == store.folder_id)
            .order_by(Letter.uid)
        )
        assert [login for _, login in rows] == ["anna", "boris", None] * 4
