"""The database side of sending the CRM's letters: read what to send, store what was sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.db import repo
from maild.db.tables import (
    Account,
    Attachment,
    Lead,
    Letter,
    OutboxAttachment,
    OutboxItem,
    User,
    UserSenderName,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class FileRef:
    """One attachment row: its own bytes, or a file of a stored letter named by position."""

    filename: str
    content_type: str
    content: bytes | None
    letter_id: int | None
    letter_position: int | None


@dataclass(frozen=True, slots=True)
class Author:
    """The user a letter is written by: full name, personal sender name on the account, font."""

    login: str
    user_id: int | None = None
    full_name: str = ""
    sender_name: str = ""
    font: str = ""


@dataclass(frozen=True, slots=True)
class SendRow:
    """A CRM letter to send, as the outbox row and its attachments hold it."""

    mail_to: str
    mail_cc: str
    mail_bcc: str
    subject: str
    text_body: str
    html_body: str
    author: Author | None
    request_number: int | None
    files: list[FileRef] = field(default_factory=list)
    letter_ids: list[int] = field(default_factory=list)
    lead_id: int | None = None
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SentLetter:
    """A letter the relay accepted, to store as outgoing and tie to its ``send`` row."""

    outbox_id: int
    raw: bytes
    parsed: ParsedLetter
    author: Author | None
    lead_id: int | None


async def load_send(session: AsyncSession, outbox_id: int, account_id: int) -> SendRow:
    """Read what a ``send`` row asks for, with its author and its lead's number."""
    item = (
        await session.execute(select(OutboxItem).where(OutboxItem.id == outbox_id))
    ).scalar_one()
    files = (
        await session.execute(
            select(OutboxAttachment)
            .where(OutboxAttachment.outbox_id == outbox_id)
            .order_by(OutboxAttachment.position)
        )
    ).scalars()
    number = None
    if item.lead_id is not None:
        number = (
            await session.execute(select(Lead.number).where(Lead.id == item.lead_id))
        ).scalar()
    return SendRow(
        mail_to=item.mail_to or "",
        mail_cc=item.mail_cc or "",
        mail_bcc=item.mail_bcc or "",
        subject=item.subject or "",
        text_body=item.text_body or "",
        html_body=item.html_body or "",
        author=await author_of(session, item.author_login, account_id),
        request_number=int(number) if number is not None else None,
        files=[
            FileRef(f.filename, f.content_type, f.content, f.letter_id, f.letter_position)
            for f in files
        ],
        letter_ids=[int(i) for i in item.attach_letter_ids or []],
    )


async def _within(
    session: AsyncSession, ids: list[int], max_bytes: int
) -> tuple[list[int], list[int]]:
    """Split ids into those whose files fit in ``max_bytes`` together (one at least) and the rest."""
    sizes = await _bytes_to_read(session, ids)
    held = 0
    for number, outbox_id in enumerate(ids):
        if number and held + sizes.get(outbox_id, 0) > max_bytes:
            return ids[:number], ids[number:]
        held += sizes.get(outbox_id, 0)
    return ids, []


async def _bytes_to_read(session: AsyncSession, ids: list[int]) -> dict[int, int]:
    """Give the bytes each row's sending reads: its files, and the stored letters it takes.

    A file taken from a stored letter and a letter attached whole are each read as the whole
    stored letter (``letters.size``), so they count as much as their own files do.
    """
    sizes: dict[int, int] = {}

    def count(rows: Any) -> None:
        for outbox_id, size in rows:
            sizes[int(outbox_id)] = sizes.get(int(outbox_id), 0) + int(size or 0)

    count(
        await session.execute(
            select(OutboxAttachment.outbox_id, func.sum(func.length(OutboxAttachment.content)))
            .where(OutboxAttachment.outbox_id.in_(ids))
            .group_by(OutboxAttachment.outbox_id)
        )
    )
    count(
        await session.execute(
            select(OutboxAttachment.outbox_id, func.sum(Letter.size))
            .join(Letter, Letter.id == OutboxAttachment.letter_id)
            .where(OutboxAttachment.outbox_id.in_(ids), OutboxAttachment.content.is_(None))
            .group_by(OutboxAttachment.outbox_id)
        )
    )
    attached = {
        int(outbox_id): [int(i) for i in letter_ids or []]
        for outbox_id, letter_ids in await session.execute(
            select(OutboxItem.id, OutboxItem.attach_letter_ids).where(OutboxItem.id.in_(ids))
        )
    }
    wanted = {i for letter_ids in attached.values() for i in letter_ids}
    if wanted:
        found = await session.execute(select(Letter.id, Letter.size).where(Letter.id.in_(wanted)))
        stored = {int(letter_id): int(size or 0) for letter_id, size in found}
        count(
            (outbox_id, sum(stored.get(i, 0) for i in letter_ids))
            for outbox_id, letter_ids in attached.items()
        )
    return sizes


async def load_sends(
    session: AsyncSession, outbox_ids: Sequence[int], account_id: int, *, max_bytes: int
) -> tuple[dict[int, SendRow], list[int]]:
    """Read many ``send`` rows in a few statements, with their progress: load_send for a batch.

    Rows are read in the order given until their files hold ``max_bytes`` (one row always);
    the ids of the rest come back unread, so a batch of big letters is not all in memory.
    """
    if not outbox_ids:
        return {}, []
    ids, later = await _within(session, list(outbox_ids), max_bytes)
    items = (await session.execute(select(OutboxItem).where(OutboxItem.id.in_(ids)))).scalars()
    rows = list(items)
    files: dict[int, list[FileRef]] = {}
    for f in (
        await session.execute(
            select(OutboxAttachment)
            .where(OutboxAttachment.outbox_id.in_(ids))
            .order_by(OutboxAttachment.outbox_id, OutboxAttachment.position)
        )
    ).scalars():
        files.setdefault(f.outbox_id, []).append(
            FileRef(f.filename, f.content_type, f.content, f.letter_id, f.letter_position)
        )
    lead_ids = {item.lead_id for item in rows if item.lead_id is not None}
    numbers: dict[int, int] = {}
    if lead_ids:
        found = await session.execute(select(Lead.id, Lead.number).where(Lead.id.in_(lead_ids)))
        numbers = {int(lead): int(number) for lead, number in found.all() if number is not None}
    authors = {
        login: await author_of(session, login, account_id)
        for login in {item.author_login for item in rows}
    }
    return {
        item.id: SendRow(
            mail_to=item.mail_to or "",
            mail_cc=item.mail_cc or "",
            mail_bcc=item.mail_bcc or "",
            subject=item.subject or "",
            text_body=item.text_body or "",
            html_body=item.html_body or "",
            author=authors[item.author_login],
            request_number=numbers.get(item.lead_id) if item.lead_id is not None else None,
            files=files.get(item.id, []),
            letter_ids=[int(i) for i in item.attach_letter_ids or []],
            lead_id=item.lead_id,
            progress=dict(item.result or {}),
        )
        for item in rows
    }, later


async def author_of(session: AsyncSession, login: str | None, account_id: int) -> Author | None:
    """Read the author's name, font and current personal sender name on the account."""
    if not login:
        return None
    user = (await session.execute(select(User).where(User.login == login))).scalar()
    if user is None:
        return Author(login)
    name = (
        await session.execute(
            select(UserSenderName.name).where(
                UserSenderName.user_id == user.id,
                UserSenderName.account_id == account_id,
                UserSenderName.current.is_(True),
            )
        )
    ).scalar()
    return Author(login, user.id, user.full_name, name or "", user.font)


async def attachment_of(session: AsyncSession, letter_id: int, position: int) -> tuple[str, str]:
    """Give a stored letter's attachment name and type by position; KeyError when there is none."""
    row = (
        await session.execute(
            select(Attachment.filename, Attachment.content_type).where(
                Attachment.letter_id == letter_id, Attachment.position == position
            )
        )
    ).first()
    if row is None:
        raise KeyError(f"letter {letter_id} has no attachment at position {position}")
    return row.filename, row.content_type


async def store_sent(
    session: AsyncSession,
    *,
    outbox_id: int,
    folder_id: int,
    raw: bytes,
    parsed: ParsedLetter,
    author: Author | None,
    relink: bool = True,
) -> int:
    """Store a sent letter as outgoing, before it has a UID in Sent, and tie it to its outbox row.

    With ``relink`` false the row keeps pointing at the letter it was queued for (an auto-reply
    stays tied to the letter it answered); the sent letter is named in its result only.
    """
    folder = await repo.load_folder(session, folder_id)
    placeholder = repo.FolderRow(
        folder.id, folder.account_id, 0, folder.last_uid, True, folder.uidvalidity_changes
    )
    message = FetchedMessage(uid=-outbox_id, raw=raw, size=len(raw), internaldate=utcnow())
    lead_id = (
        await session.execute(select(OutboxItem.lead_id).where(OutboxItem.id == outbox_id))
    ).scalar()
    item = repo.NewLetter(
        message, parsed, "stored", None, repo.sha256_of(raw), _outgoing(author, lead_id)
    )
    ids = await repo.insert_letters(session, placeholder, [item], first_sync=False)
    letter_id = ids[-outbox_id]
    progress = {"stage": "sent", "message_id": parsed.message_id, "letter_id": letter_id}
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == outbox_id)
        .values(
            result=progress,
            updated_at=utcnow(),
            **({"letter_id": letter_id} if relink else {}),
        )
    )
    if author is not None and author.user_id is not None and author.sender_name:
        await session.execute(
            update(UserSenderName)
            .where(
                UserSenderName.user_id == author.user_id,
                UserSenderName.account_id == folder.account_id,
                UserSenderName.current.is_(True),
            )
            .values(last_used_at=utcnow())
        )
    return letter_id


async def store_sent_many(
    session: AsyncSession, *, account_id: int, folder_id: int, letters: Sequence[SentLetter]
) -> dict[int, int]:
    """Store sent letters as outgoing and tie each to its row, in a few statements; {row: letter}.

    What :func:`store_sent` does for one letter, for a batch the relay has just accepted.
    """
    if not letters:
        return {}
    now = utcnow()
    placeholder = repo.FolderRow(folder_id, account_id, 0, 0, True, 0)
    items = [
        repo.NewLetter(
            FetchedMessage(uid=-sent.outbox_id, raw=sent.raw, size=len(sent.raw), internaldate=now),
            sent.parsed,
            "stored",
            None,
            repo.sha256_of(sent.raw),
            _outgoing(sent.author, sent.lead_id),
        )
        for sent in letters
    ]
    ids = await repo.insert_letters(session, placeholder, items, first_sync=False)
    stored = {sent.outbox_id: ids[-sent.outbox_id] for sent in letters}
    rows: Table = OutboxItem.__table__  # type: ignore[assignment]
    await session.execute(
        update(rows)
        .where(rows.c.id == bindparam("b_id"))
        .values(
            letter_id=bindparam("b_letter"),
            result=bindparam("b_result", type_=rows.c.result.type),
            updated_at=now,
        ),
        [
            {
                "b_id": sent.outbox_id,
                "b_letter": stored[sent.outbox_id],
                "b_result": {
                    "stage": "sent",
                    "message_id": sent.parsed.message_id,
                    "letter_id": stored[sent.outbox_id],
                },
            }
            for sent in letters
        ],
    )
    users = {
        sent.author.user_id
        for sent in letters
        if sent.author is not None and sent.author.user_id is not None and sent.author.sender_name
    }
    if users:
        await session.execute(
            update(UserSenderName)
            .where(
                UserSenderName.user_id.in_(users),
                UserSenderName.account_id == account_id,
                UserSenderName.current.is_(True),
            )
            .values(last_used_at=now)
        )
    return stored


def _outgoing(author: Author | None, lead_id: int | None) -> dict[str, Any]:
    """Give the columns that make a stored letter one maild sent: its author, its lead."""
    return {
        "direction": "out",
        "responsible_login": author.login if author else None,
        "lead_id": lead_id,
        "lead_reason": f"sent for lead {lead_id}" if lead_id else "",
    }


async def file_sent_many(session: AsyncSession, places: Sequence[tuple[int, int, int]]) -> None:
    """Give sent letters (letter id, UIDVALIDITY, UID) their place in Sent, in one statement."""
    if not places:
        return
    table: Table = Letter.__table__  # type: ignore[assignment]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.uidvalidity == 0)
        .values(uidvalidity=bindparam("b_validity"), uid=bindparam("b_uid"), updated_at=utcnow())
    )
    await session.execute(
        stmt,
        [
            {"b_id": letter_id, "b_validity": uidvalidity, "b_uid": uid}
            for letter_id, uidvalidity, uid in places
        ],
    )


async def unfiled_sent(
    session: AsyncSession, folder_id: int, sha256s: Sequence[str]
) -> dict[str, int]:
    """Find sent letters stored before their APPEND had a UID, by content: not new letters."""
    if not sha256s:
        return {}
    rows = await session.execute(
        select(Letter.sha256, Letter.id)
        .where(
            Letter.folder_id == folder_id,
            Letter.uidvalidity == 0,
            Letter.uid < 0,
            Letter.sha256.in_(list(sha256s)),
        )
        .order_by(Letter.id)
    )
    out: dict[str, int] = {}
    for sha256, letter_id in rows.all():
        out.setdefault(sha256, int(letter_id))
    return out


async def file_sent(session: AsyncSession, letter_id: int, *, uidvalidity: int, uid: int) -> None:
    """Give a sent letter the UID its APPEND got, unless the poller already filed it."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id, Letter.uidvalidity == 0)
        .values(uidvalidity=uidvalidity, uid=uid, updated_at=utcnow())
    )


async def prepare(
    session: AsyncSession, outbox_id: int, account: str, sent_folder: str
) -> tuple[int, int, dict[str, Any]]:
    """Give the account's id, its Sent folder's row (made on first use) and the row's progress."""
    account_id = (
        await session.execute(select(Account.id).where(Account.name == account))
    ).scalar_one()
    folder_id = await repo.ensure_folder(session, account_id=int(account_id), name=sent_folder)
    result = (
        await session.execute(select(OutboxItem.result).where(OutboxItem.id == outbox_id))
    ).scalar()
    return int(account_id), folder_id, dict(result or {})


async def progress(session: AsyncSession, outbox_id: int) -> dict[str, Any]:
    """Give how far a sending row got (``{"stage": "sent", ...}`` once the relay took it)."""
    result = (
        await session.execute(select(OutboxItem.result).where(OutboxItem.id == outbox_id))
    ).scalar()
    return dict(result or {})
