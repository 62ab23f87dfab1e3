"""The SQL that reads letters back for printing: headers, bodies, place and attachment list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from maild.core.letter import Address
from maild.core.printout import PrintAttachment, PrintLetter
from maild.db.tables import Account, Attachment, Folder, Letter


def _addresses(stored: Any) -> tuple[Address, ...]:
    """Read a JSON address list back, tolerating what another writer may have put there."""
    if not isinstance(stored, list):
        return ()
    return tuple(
        Address(address=str(item.get("address", "")), name=str(item.get("name", "")))
        for item in stored
        if isinstance(item, dict)
    )


async def _attachments(
    session: AsyncSession, ids: Sequence[int]
) -> dict[int, list[PrintAttachment]]:
    """List the attachments of the letters, in their order inside each letter."""
    stmt = (
        select(Attachment.letter_id, Attachment.filename, Attachment.content_type, Attachment.size)
        .where(Attachment.letter_id.in_(ids))
        .order_by(Attachment.letter_id, Attachment.position)
    )
    found: dict[int, list[PrintAttachment]] = {}
    for letter_id, filename, content_type, size in (await session.execute(stmt)).all():
        found.setdefault(int(letter_id), []).append(
            PrintAttachment(filename=filename, content_type=content_type, size=int(size))
        )
    return found


async def letters_to_print(session: AsyncSession, ids: Sequence[int]) -> dict[int, PrintLetter]:
    """Read the letters with these ids that exist, keyed by id, without their raw bytes."""
    if not ids:
        return {}
    stmt = (
        select(Letter, Account.name, Folder.name)
        .join(Account, Account.id == Letter.account_id)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Letter.id.in_(ids))
        .options(defer(Letter.raw))
    )
    rows = (await session.execute(stmt)).all()
    attachments = await _attachments(session, [row[0].id for row in rows])
    found: dict[int, PrintLetter] = {}
    for letter, account, folder in rows:
        sender = (
            Address(letter.from_address, letter.from_name)
            if letter.from_address or letter.from_name
            else None
        )
        found[letter.id] = PrintLetter(
            id=letter.id,
            account=account,
            folder=folder,
            status=letter.status,
            error=letter.error,
            sender=sender,
            to=_addresses(letter.to_addresses),
            cc=_addresses(letter.cc_addresses),
            sent_at=letter.sent_at,
            received_at=letter.received_at,
            subject=letter.subject,
            text=letter.text_body,
            html=letter.html_body,
            attachments=tuple(attachments.get(letter.id, ())),
        )
    return found
