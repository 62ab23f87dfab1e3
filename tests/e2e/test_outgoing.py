"""The CRM's letters sent by the whole daemon: real Dovecot, a real SMTP sink, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import Folder, Lead, Letter, OutboxAttachment, OutboxItem, utcnow
from maild.outbox import dispatcher
from maild.outbox.crm import NewLetter, queue_letter
from maild.outbox.letter import DraftError, FileAttachment
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter
from maild.testing.smtp import SmtpSink
from tests.e2e.helpers import make_config, unique_folder, wait_until

CLIENT = "ivan@client.example"


def _config(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_port: int, **outgoing: Any
) -> tuple[Config, str, str]:
    """Sales watches a lead inbox and its own Sent folder; Anna sends as "Анна Петрова"."""
    inbox, sent = unique_folder("In"), unique_folder("Sent")
    dovecot.create_folder("sales", inbox)
    dovecot.create_folder("sales", sent)
    base = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [inbox, sent]},
        smtp_port=smtp_port,
        first_sync="process",
    )
    data = base.model_dump(mode="json")
    account = data["accounts"][0]
    account["display_name"] = "Corp Sales"
    account["folders"]["sent"] = sent
    account["leads"] = {"source": "selected", "folders": [inbox]}
    account["outgoing"] = {
        "signature": "{current_user}\nCorp Sales, +7 495 000-00-00",
        "max_attachments_mb": 1,
        **outgoing,
    }
    data["users"] = [
        {
            "login": "anna",
            "full_name": "Anna Petrova",
            "sender_names": {"sales": "Анна Петрова"},
            "font": "Verdana, 11pt",
        }
    ]
    data["outgoing"] = {"default_font": "Arial, 10pt"}
    return Config.model_validate(data), inbox, sent


async def _queue(db_url: str, config: Config, item: NewLetter, key: str) -> int:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as session:
            return await queue_letter(session, config, item, key=key)
    finally:
        await engine.dispose()


async def _one(db_url: str, stmt: Any) -> Any:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return (await session.execute(stmt)).all()
    finally:
        await engine.dispose()


def crm_row(key: str, text_body: str) -> Any:
    """Build a send row as the CRM may write it directly, past queue_letter's checks."""
    now = utcnow()
    return insert(OutboxItem).values(
        account_id=1,
        kind="send",
        target="",
        payload={},
        idempotency_key=key,
        seq=0,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
        mail_to=CLIENT,
        subject="Offer",
        text_body=text_body,
        attach_letter_ids=[],
    )


async def test_crm_letter_end_to_end(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A queued letter goes out with the personal name, signature autotext, request number, font
    and an attached stored letter byte for byte; it is filed in Sent and stored once as outgoing."""
    config, inbox, sent = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    request = letter(sender=("Ivan", CLIENT), to=SALES, subject="Need 40 pallets", body="Price?")
    dovecot.append("sales", inbox, request)
    assert (await Daemon(config).run(once=True)).ok
    [(letter_id, lead_id, stored_raw)] = await _one(
        db_url, select(Letter.id, Letter.lead_id, Letter.raw).where(Letter.direction == "in")
    )
    assert lead_id is not None
    outbox_id = await _queue(
        db_url,
        config,
        NewLetter(
            account="sales",
            to=f"Иван <{CLIENT}>",
            subject="Re: Need 40 pallets {request_number_reply}",
            text="Dear Ivan, our offer is attached. Request {request_number}.",
            html="<p>Dear Ivan, our offer is attached.</p>",
            author_login="anna",
            lead_id=lead_id,
            files=[FileAttachment("offer.pdf", "application/pdf", b"%PDF-1.4 offer")],
            letter_ids=[letter_id],
        ),
        key="crm:offer:1",
    )
    result = await Daemon(config).run(once=True)
    assert result.ok and result.outbox is not None and result.outbox.done == 1

    [mail] = smtp_sink.messages
    assert list(mail.rcpt_tos) == [CLIENT] and mail.mail_from == SALES
    msg = email.message_from_bytes(mail.content, policy=email.policy.default)
    assert str(msg["From"]) == f"Анна Петрова <{SALES}>"
    [(number,)] = await _one(db_url, select(Lead.number).where(Lead.id == lead_id))
    assert str(msg["Subject"]) == f"Re: Need 40 pallets [#{number}]"
    assert f"Request {number}." in msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    body = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert body is not None and html is not None
    assert "-- \r\nAnna Petrova\r\nCorp Sales" in body.get_content()
    assert '<div style="font-family: Verdana; font-size: 11pt">' in html.get_content()
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["offer.pdf", "letter-1.eml"]
    eml = mail.content.split(b'filename="letter-1.eml"', 1)[1].split(b"\r\n\r\n", 1)[1]
    assert eml.startswith(bytes(stored_raw))

    assert len(dovecot.uids("sales", sent)) == 1
    outgoing = await _one(
        db_url,
        select(Letter.direction, Letter.uid, Letter.lead_id, Letter.responsible_login)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Folder.name == sent),
    )
    assert len(outgoing) == 1
    direction, uid, out_lead, responsible = outgoing[0]
    assert (direction, out_lead, responsible) == ("out", lead_id, "anna") and uid > 0
    [(status, row_result)] = await _one(
        db_url, select(OutboxItem.status, OutboxItem.result).where(OutboxItem.id == outbox_id)
    )
    assert status == "done" and row_result["filed"] is True

    # The Sent folder is watched: reading it again stores no twin of the sent letter.
    assert (await Daemon(config).run(once=True)).ok
    again = await _one(
        db_url,
        select(Letter.id).join(Folder, Folder.id == Letter.folder_id).where(Folder.name == sent),
    )
    assert len(again) == 1


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (NewLetter(account="sales", to=CLIENT, subject="Hi\r\nBcc: evil@x.example"), "one line"),
        (NewLetter(account="sales", to=f"{CLIENT}\nBcc: evil@x.example"), "one line"),
        (NewLetter(account="sales", to="not an address"), "not a list of addresses"),
        (NewLetter(account="sales", to=CLIENT, subject="{request_number}"), "has no lead"),
        (NewLetter(account="sales", to=CLIENT, text="Hello {first_name}"), "unknown autotext"),
        (
            NewLetter(
                account="sales",
                to=CLIENT,
                files=[
                    FileAttachment("big.bin", "application/octet-stream", bytes(2 * 1024 * 1024))
                ],
            ),
            "over the account's limit of 1.0 MB",
        ),
    ],
)
async def test_bad_letters_are_refused_at_queue_time(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    smtp_sink: SmtpSink,
    item: NewLetter,
    message: str,
) -> None:
    """Header injection, unknown autotexts and oversize attachments are errors when queued."""
    config, _, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    assert (await Daemon(config).run(once=True)).ok
    with pytest.raises(DraftError, match=message):
        await _queue(db_url, config, item, key="crm:bad")
    assert await _one(db_url, select(OutboxItem.id)) == []


async def test_a_raw_row_over_the_limit_goes_dead_without_smtp(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A row the CRM inserts directly is checked too: over the limit it is dead with the sizes, nothing sent."""
    config, _, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port, max_attachments_mb=0.001)
    assert (await Daemon(config).run(once=True)).ok
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as session:
            await session.execute(crm_row("crm:raw:1", "see attached"))
        async with session_factory(engine).begin() as session:
            await session.execute(
                insert(OutboxAttachment).values(
                    outbox_id=1,
                    position=0,
                    filename="a.bin",
                    content_type="application/octet-stream",
                    content=bytes(5000),
                )
            )
    finally:
        await engine.dispose()
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.dead == 1
    [(status, error)] = await _one(db_url, select(OutboxItem.status, OutboxItem.last_error))
    assert status == "dead" and "over the account's limit" in error and "MB" in error
    assert smtp_sink.messages == []


async def test_daemon_picks_up_a_queued_letter_promptly(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A running daemon sends a letter queued meanwhile: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    config, _, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    data = config.model_dump(mode="json")
    data["outbox"]["poll_seconds"] = 0.3 if db_url.startswith("sqlite") else 60
    config = Config.model_validate(data)
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: _accounts_ready(db_url), timeout=30)
        await asyncio.sleep(0.5)
        await _queue(
            db_url, config, NewLetter(account="sales", to=CLIENT, text="hello"), key="crm:live"
        )
        await wait_until(lambda: _sent(smtp_sink), timeout=20)
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 60)
    assert len(smtp_sink.messages) == 1


async def _accounts_ready(db_url: str) -> bool:
    try:
        return bool(await _one(db_url, select(Folder.id)))
    except Exception:
        return False


async def _sent(sink: SmtpSink) -> bool:
    return len(sink.messages) == 1


@pytest.mark.parametrize(
    ("batch_size", "load_bytes"),
    [(None, None), (6, None), (None, 7000)],
    ids=["one-batch", "batches-of-6", "two-letters-in-memory"],
)
async def test_a_batch_of_letters_each_sent_and_filed_once(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    smtp_sink: SmtpSink,
    batch_size: int | None,
    load_bytes: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Letters claimed together go over several SMTP connections: each is sent once, filed once
    with its UID, stored once as outgoing; a row that cannot be composed is dead, the rest go.

    In batches of 6 the same holds across batches, and the chunks recorded span them. With
    7,000 bytes to hold, a batch reads two letters' 3,000-byte files and gives the rest back
    for the next claim, and the sent letters are recorded in chunks cut by their bytes.
    """
    if load_bytes is not None:
        monkeypatch.setattr(dispatcher, "LOAD_BYTES", load_bytes)
    config, _, sent = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    if batch_size is not None:
        config = config.model_copy(
            update={"outbox": config.outbox.model_copy(update={"batch_size": batch_size})}
        )
    assert (await Daemon(config).run(once=True)).ok
    count = 20
    for n in range(count):
        await _queue(
            db_url,
            config,
            NewLetter(
                account="sales",
                to=f"Client {n} <client{n}@client.example>",
                subject=f"Offer {n}",
                text=f"Offer {n}\n\n{{current_user}}",
                author_login="anna",
                files=[FileAttachment(f"offer-{n}.pdf", "application/pdf", bytes([n]) * 3000)],
            ),
            key=f"crm:batch:{n}",
        )
    engine = create_engine(db_url)
    try:  # a row the CRM wrote past queue_letter's checks: an unknown autotext
        async with session_factory(engine).begin() as session:
            await session.execute(crm_row("crm:batch:bad", "Hello {first_name}"))
    finally:
        await engine.dispose()
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None
    assert (result.outbox.done, result.outbox.dead) == (count, 1)
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
        f"client{n}@client.example" for n in range(count)
    )
    assert len(dovecot.uids("sales", sent)) == count
    rows = await _one(
        db_url,
        select(OutboxItem.status, OutboxItem.result, OutboxItem.letter_id, OutboxItem.last_error)
        .where(OutboxItem.kind == "send")
        .order_by(OutboxItem.id),
    )
    assert [status for status, *_ in rows] == ["done"] * count + ["dead"]
    assert "unknown autotext" in rows[-1][3]
    uids = {row_result["uid"] for _, row_result, _, _ in rows[:count]}
    assert len(uids) == count and all(row_result["filed"] for _, row_result, _, _ in rows[:count])
    stored = await _one(
        db_url,
        select(Letter.id, Letter.uid, Letter.direction, Letter.responsible_login)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Folder.name == sent),
    )
    assert sorted(letter_id for letter_id, *_ in stored) == sorted(r[2] for r in rows[:count])
    assert {uid for _, uid, _, _ in stored} == uids
    assert {(d, who) for _, _, d, who in stored} == {("out", "anna")}
    # Reading the Sent folder again stores no twin of any sent letter.
    assert (await Daemon(config).run(once=True)).ok
    again = await _one(
        db_url,
        select(Letter.id).join(Folder, Folder.id == Letter.folder_id).where(Folder.name == sent),
    )
    assert len(again) == count


async def test_a_batch_into_a_missing_sent_folder_is_filed_one_by_one(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """The server refuses the batch's MULTIAPPEND (no Sent folder yet, none stored); the letters
    are then APPENDed one by one, the folder created on the way: each filed once."""
    base, _, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    data = base.model_dump(mode="json")
    missing = unique_folder("Sent")
    data["accounts"][0]["folders"]["sent"] = missing
    config = Config.model_validate(data)
    assert (await Daemon(config).run(once=True)).ok
    count = 3
    for n in range(count):
        await _queue(
            db_url,
            config,
            NewLetter(
                account="sales", to=f"client{n}@client.example", text="Hi", author_login="anna"
            ),
            key=f"crm:missing:{n}",
        )
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.done == count
    assert len(smtp_sink.messages) == count
    assert len(dovecot.uids("sales", missing)) == count
    rows = await _one(db_url, select(OutboxItem.result).where(OutboxItem.kind == "send"))
    assert all(row_result["filed"] and row_result["uid"] for (row_result,) in rows)
