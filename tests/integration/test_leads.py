"""Lead detection in the letter's transaction, threading, sender resolution, scenarios and rejection, on both databases."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.letter import FetchedMessage
from maild.db import flags
from maild.db.parties import client_for
from maild.db.tables import (
    USE_POTENTIAL_CLIENTS,
    Client,
    ContactPerson,
    Lead,
    Letter,
    PotentialClient,
)
from maild.decide import Decider, RulesHolder
from maild.errors import LeadError
from maild.ingest.parse import parse_letter
from maild.leads.book import LeadBook
from maild.leads.policy import lead_policy
from maild.leads.service import leads_in_scenario, reject_lead, sender_letters
from maild.pipeline import FolderStore, prepare_folders
from maild.settings import Config

pytestmark = pytest.mark.usefixtures("db_url")

IMAP = {"host": "127.0.0.1", "security": "none", "username": "u", "password_env": "UNUSED"}


def make_config(
    rules: list[dict[str, Any]] | None = None, users: list[dict[str, Any]] | None = None
) -> Config:
    return Config.model_validate(
        {
            "accounts": [
                {
                    "name": "sales",
                    "address": "sales@corp.example",
                    "aliases": ["orders@corp.example"],
                    "imap": IMAP,
                    "folders": {"watch": ["INBOX", "Leads/Web", "Leads/Partners", "Sent"]},
                    "leads": {"source": "selected", "folders": ["Leads/Web", "Leads/Partners"]},
                },
                {
                    "name": "support",
                    "address": "support@corp.example",
                    "imap": IMAP,
                    "leads": {"source": "all"},
                },
                {"name": "quiet", "address": "quiet@corp.example", "imap": IMAP},
            ],
            "scenarios": [
                {"name": "sales", "title": "My sales", "leads_from": {"sales": ["Leads/Web"]}},
                {
                    "name": "support",
                    "title": "Support",
                    "leads_from": {"support": ["INBOX"], "sales": ["Leads/Partners"]},
                },
            ],
            "rules": rules or [],
            "users": users or [],
        }
    )


class Mailbox:
    """The stores of every watched folder, fed letters one UID at a time."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: Config) -> None:
        self.sessions = sessions
        self.config = config
        self.stores: dict[tuple[str, str], FolderStore] = {}
        self.uid = 0

    async def open(self) -> Mailbox:
        ids = await prepare_folders(self.sessions, self.config)
        holder = RulesHolder(self.config.ruleset)
        for account in self.config.accounts:
            for folder in account.folders.watch:
                store = FolderStore(
                    sessions=self.sessions,
                    account=account.name,
                    folder=folder,
                    folder_id=ids[(account.name, folder)],
                    first_sync_mode="process",
                    decider=Decider(
                        holder,
                        account.name,
                        folder,
                        leads=LeadBook(lead_policy(account), folder),
                        addresses=lead_policy(account).addresses,
                    ),
                )
                await store.set_uidvalidity(1, changed=False)
                self.stores[(account.name, folder)] = store
        return self

    async def put(self, raw: bytes, account: str = "sales", folder: str = "Leads/Web") -> Letter:
        self.uid += 1
        store = self.stores[(account, folder)]
        message = FetchedMessage(uid=self.uid, raw=raw, size=len(raw))
        assert await store.store(message, parse_letter(raw), None) == "stored"
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(Letter).where(
                        Letter.folder_id == store.folder_id, Letter.uid == self.uid
                    )
                )
            ).scalar_one()
        return row


def mail(
    subject: str,
    sender: str = "Ivan Petrov <ivan@client.example>",
    *,
    to: str = "sales@corp.example",
    in_reply_to: str | None = None,
    references: str | None = None,
    body: str = "Hello, we need a quote.\n",
    headers: dict[str, str] | None = None,
    number: list[int] = [0],  # noqa: B006 - a counter for unique Message-IDs
) -> bytes:
    number[0] += 1
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<m{number[0]}.lead@test.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


async def lead_of(sessions: async_sessionmaker[AsyncSession], letter: Letter) -> Lead | None:
    if letter.lead_id is None:
        return None
    async with sessions() as session:
        return await session.get(Lead, letter.lead_id)


async def count(sessions: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.fixture
async def box(sessions: async_sessionmaker[AsyncSession]) -> Mailbox:
    return await Mailbox(sessions, make_config()).open()


async def test_selected_folders_only(box: Mailbox, sessions: Any) -> None:
    """With source = "selected", a letter in a listed folder opens a lead and one in INBOX does not."""
    web = await box.put(mail("Quote for 40 pallets"), folder="Leads/Web")
    inbox = await box.put(mail("Just saying hi", sender="x@other.example"), folder="INBOX")
    lead = await lead_of(sessions, web)
    assert lead is not None and lead.status == "new"
    assert lead.reason == web.lead_reason == "folder Leads/Web is a lead source"
    assert lead.first_letter_id == web.id and lead.sender_address == "ivan@client.example"
    assert inbox.lead_id is None
    assert inbox.lead_reason == "folder INBOX is not a lead source"


async def test_all_folders_and_off(box: Mailbox, sessions: Any) -> None:
    """source = "all" makes every letter a lead; source = "off" looks at nothing."""
    support = await box.put(mail("Printer broken"), account="support", folder="INBOX")
    assert (await lead_of(sessions, support)) is not None
    assert support.lead_reason == "account support counts letters of every folder as leads"
    quiet = await box.put(mail("Anything"), account="quiet", folder="INBOX")
    assert quiet.lead_id is None and quiet.lead_reason == ""
    assert quiet.potential_client_id is None


async def test_numbers_are_unique_and_increasing(box: Mailbox, sessions: Any) -> None:
    """Each new lead gets the next request number."""
    first = await lead_of(sessions, await box.put(mail("One")))
    second = await lead_of(sessions, await box.put(mail("Two", sender="b@b.example")))
    assert first is not None and second is not None
    assert second.number > first.number


async def test_threading_by_in_reply_to_references_and_number(box: Mailbox, sessions: Any) -> None:
    """Replies join the lead by In-Reply-To, by References and by [#N] in the subject."""
    first = await box.put(mail("Quote please"))
    lead = await lead_of(sessions, first)
    assert lead is not None
    by_irt = await box.put(mail("Re: Quote please", in_reply_to=first.message_id))
    assert by_irt.lead_id == lead.id
    assert by_irt.lead_reason == f"reply to lead #{lead.number} (In-Reply-To)"
    by_refs = await box.put(
        mail("Re: Re: Quote please", references=f"<unknown@x.example> {by_irt.message_id}")
    )
    assert by_refs.lead_id == lead.id
    assert by_refs.lead_reason == f"reply to lead #{lead.number} (References)"
    by_number = await box.put(mail(f"Re: [#{lead.number}] our order"), folder="INBOX")
    assert by_number.lead_id == lead.id
    assert (
        by_number.lead_reason == f"reply to lead #{lead.number} ([#{lead.number}] in the subject)"
    )
    assert await count(sessions, Lead) == 1


async def test_same_sender_new_subject_opens_a_new_lead(box: Mailbox, sessions: Any) -> None:
    """A letter from the same sender with a new subject and no reference opens another lead."""
    one = await box.put(mail("First question"))
    two = await box.put(mail("Another question"))
    assert one.lead_id is not None and two.lead_id is not None and one.lead_id != two.lead_id


async def test_own_letters_never_open_but_join(box: Mailbox, sessions: Any) -> None:
    """Letters from the account's address, its aliases or the Sent folder never open a lead, but join one."""
    first = await box.put(mail("Need a quote"))
    own = await box.put(mail("Offer", sender="Anna <sales@corp.example>"))
    alias = await box.put(mail("Offer 2", sender="orders@corp.example"))
    sent = await box.put(
        mail("Re: Need a quote", sender="Anna <sales@corp.example>", in_reply_to=first.message_id),
        folder="Sent",
    )
    assert own.lead_id is None and own.lead_reason == "own letter: sent from sales@corp.example"
    assert alias.lead_id is None
    assert sent.lead_id == first.lead_id
    assert await count(sessions, Lead) == 1


async def test_rules_mark_and_unmark_leads(sessions: Any) -> None:
    """mark_lead opens a lead outside lead folders; not_lead keeps one out of a lead folder."""
    rules = [
        {
            "name": "vip",
            "match": {"domain": "from", "is": "vip.example"},
            "actions": [{"mark_lead": True}],
        },
        {
            "name": "spam",
            "match": {"header": "subject", "contains": "casino"},
            "actions": [{"not_lead": True}],
        },
    ]
    box = await Mailbox(sessions, make_config(rules)).open()
    vip = await box.put(mail("Hello", sender="boss@vip.example"), folder="INBOX")
    spam = await box.put(mail("Best casino"), folder="Leads/Web")
    assert vip.lead_id is not None and vip.lead_reason == "rule vip marks it a lead"
    assert spam.lead_id is None and spam.lead_reason == "rule spam: not a lead"


async def test_robots_do_not_open_leads(box: Mailbox) -> None:
    """An auto-reply or bounce in a lead folder is not a lead."""
    auto = await box.put(mail("Out of office", headers={"Auto-Submitted": "auto-replied"}))
    assert auto.lead_id is None
    assert auto.lead_reason.startswith("automatic letter")


async def test_unknown_sender_becomes_a_potential_client(box: Mailbox, sessions: Any) -> None:
    """A new lead from an unknown sender creates one potential client, reused by the next letter."""
    body = "Good day.\n\n--\nИван Петров\nООО «Ромашка»\nТел.: +7 495 123-45-67\n"
    first = await box.put(mail("Quote", sender="Иван Петров <Ivan@Client.example>", body=body))
    second = await box.put(mail("Another", sender="ivan@client.example"))
    async with sessions() as session:
        rows = list((await session.execute(select(PotentialClient))).scalars())
    assert len(rows) == 1
    pc = rows[0]
    assert (pc.full_name, pc.company, pc.email, pc.phone) == (
        "Иван Петров",
        "ООО «Ромашка»",
        "ivan@client.example",
        "+7 495 123-45-67",
    )
    assert first.potential_client_id == second.potential_client_id == pc.id
    lead = await lead_of(sessions, first)
    assert lead is not None and lead.potential_client_id == pc.id


async def test_no_company_from_a_bare_domain(box: Mailbox, sessions: Any) -> None:
    """Without a signature the company stays empty: a domain is not a reliable company name."""
    await box.put(mail("Hi", sender="Olga <olga@bigcorp.example>"))
    async with sessions() as session:
        pc = (await session.execute(select(PotentialClient))).scalar_one()
    assert (pc.full_name, pc.company) == ("Olga", "")


async def test_resolution_order(box: Mailbox, sessions: Any) -> None:
    """An address resolves to a contact person before a client before a potential client."""
    async with sessions.begin() as session:
        person = await client_for(
            session, full_name="Pavel", company="ООО «Вектор»", email="p@vector.example"
        )
        solo = await client_for(session, full_name="Solo", company="", email="solo@x.example")
    letter = await box.put(mail("Order", sender="p@vector.example"))
    assert (letter.client_id, letter.contact_person_id) == (
        person.client_id,
        person.contact_person_id,
    )
    assert letter.potential_client_id is None
    letter = await box.put(mail("Order", sender="solo@x.example"))
    assert (letter.client_id, letter.contact_person_id) == (solo.client_id, None)
    assert await count(sessions, PotentialClient) == 0
    report = await sender_letters(sessions, "P@Vector.example")
    assert report.party is not None and report.party.kind == "contact_person"
    assert [item.id for item in report.letters] != []


async def test_potential_clients_off_makes_clients(box: Mailbox, sessions: Any) -> None:
    """With potential clients switched off, an unknown sender becomes a client directly."""
    async with sessions.begin() as session:
        await flags.set_flag(session, USE_POTENTIAL_CLIENTS, False)
    body = "Hi\n--\nJohn Smith\nAcme Widgets Ltd\n"
    letter = await box.put(mail("Quote", sender="John Smith <john@acme.example>", body=body))
    assert letter.potential_client_id is None
    assert letter.client_id is not None and letter.contact_person_id is not None
    assert await count(sessions, PotentialClient) == 0
    async with sessions() as session:
        client = await session.get(Client, letter.client_id)
        contact = await session.get(ContactPerson, letter.contact_person_id)
    assert client is not None and (client.kind, client.name) == ("legal", "Acme Widgets Ltd")
    assert contact is not None and contact.full_name == "John Smith"


async def test_scenarios_show_only_their_folders(box: Mailbox, sessions: Any) -> None:
    """A scenario lists leads of its folders only; a lead elsewhere is not shown in it."""
    web = await lead_of(sessions, await box.put(mail("Web lead"), folder="Leads/Web"))
    partner = await lead_of(sessions, await box.put(mail("Partner lead"), folder="Leads/Partners"))
    support = await lead_of(
        sessions, await box.put(mail("Help"), account="support", folder="INBOX")
    )
    assert web and partner and support
    in_sales = [row.number for row in await leads_in_scenario(sessions, "sales")]
    in_support = [row.number for row in await leads_in_scenario(sessions, "support")]
    assert in_sales == [web.number]
    assert sorted(in_support) == sorted([partner.number, support.number])
    with pytest.raises(LeadError, match="no scenario"):
        await leads_in_scenario(sessions, "nope")


async def test_reject_writes_the_rejecting_user(box: Mailbox, sessions: Any) -> None:
    """Rejecting a lead sets its status and makes the rejecting user its (and its letter's) responsible."""
    letter = await box.put(mail("Partner lead"), folder="Leads/Partners")
    lead = await lead_of(sessions, letter)
    assert lead is not None
    with pytest.raises(LeadError, match="not shown in scenario sales"):
        await reject_lead(sessions, lead.number, by="anna", scenario="sales")
    with pytest.raises(LeadError, match="does not exist"):
        await reject_lead(sessions, 999999, by="anna", scenario="support")
    done = await reject_lead(sessions, lead.number, by="anna", scenario="support")
    assert done.previous_status == "new"
    async with sessions() as session:
        after = await session.get(Lead, lead.id)
        first = await session.get(Letter, letter.id)
    assert after is not None and first is not None
    assert (after.status, after.responsible_login, after.status_changed_by) == (
        "rejected",
        "anna",
        "anna",
    )
    assert after.status_scenario == "support" and first.responsible_login == "anna"
    assert [r.number for r in await leads_in_scenario(sessions, "support", status="new")] == []
    with pytest.raises(LeadError, match="already rejected"):
        await reject_lead(sessions, lead.number, by="boris", scenario="support")


async def test_rule_responsible_goes_to_the_lead(sessions: Any) -> None:
    """A rule's set_responsible becomes the new lead's responsible."""
    rules = [
        {
            "name": "to anna",
            "match": {"header": "subject", "contains": "pallets"},
            "actions": [{"set_responsible": "anna"}],
        }
    ]
    box = await Mailbox(sessions, make_config(rules)).open()
    lead = await lead_of(sessions, await box.put(mail("40 pallets")))
    assert lead is not None and lead.responsible_login == "anna"
