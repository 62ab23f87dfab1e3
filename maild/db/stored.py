"""Stored letters read back as the rules see them: only the columns asked for, never ``raw`` whole.

``maild rules apply`` evaluates the rules on letters already stored. Their ``letters`` row holds
what the parser made of them, so a page of letters is one query over the columns the rules read
(plus one over ``attachments`` when they read those); the header block, when needed, is the
first bytes of ``raw`` only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.db.tables import Account, Attachment, Folder, Letter, RuleHit

#: The bytes of ``raw`` read for its header block: as much as an oversize letter's header keeps.
HEADER_SLICE = 1024 * 1024

_COLUMNS: dict[str, tuple[Any, ...]] = {
    "subject": (Letter.subject,),
    "from": (Letter.from_address, Letter.from_name),
    "to": (Letter.to_addresses,),
    "cc": (Letter.cc_addresses,),
    "reply_to": (Letter.reply_to_addresses,),
    "text": (Letter.text_body,),
    "html": (Letter.html_body,),
}
_PLACE = (
    Letter.id,
    Letter.account_id,
    Account.name,
    Letter.folder_id,
    Folder.name,
    Letter.status,
    Letter.direction,
    Letter.size,
    func.coalesce(Letter.received_at, Letter.created_at),
)


@dataclass(frozen=True, slots=True)
class RuleLetter:
    """One stored letter with its place, status and what the rules read of it."""

    id: int
    account_id: int
    account: str
    folder_id: int
    folder: str
    status: str
    direction: str
    size: int
    received_at: datetime
    letter: ParsedLetter


async def rule_letters(
    session: AsyncSession, ids: Sequence[int], columns: Collection[str]
) -> list[RuleLetter]:
    """Read letters with the columns named (see ``maild.rules.needs``), in the order of ``ids``."""
    wanted = [name for name in _COLUMNS if name in columns]
    selected = [column for name in wanted for column in _COLUMNS[name]]
    stmt = (
        select(*_PLACE, *selected)
        .join(Account, Account.id == Letter.account_id)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Letter.id.in_(list(ids)))
    )
    rows = (await session.execute(stmt)).all()
    attachments = await _attachments(session, ids) if "attachments" in columns else {}
    found = {}
    for row in rows:
        values = _values(wanted, row[len(_PLACE) :])
        letter_id = int(row[0])
        letter = ParsedLetter(attachments=attachments.get(letter_id, ()), **values)
        found[letter_id] = RuleLetter(
            id=letter_id,
            account_id=int(row[1]),
            account=str(row[2]),
            folder_id=int(row[3]),
            folder=str(row[4]),
            status=str(row[5]),
            direction=str(row[6]),
            size=int(row[7]),
            received_at=row[8],
            letter=letter,
        )
    return [found[i] for i in ids if i in found]


def _values(wanted: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """Map the selected columns onto ParsedLetter's fields."""
    out: dict[str, Any] = {}
    at = 0
    for name in wanted:
        if name == "from":
            address, display = row[at], row[at + 1]
            out["from_"] = (Address(str(address), str(display or "")),) if address else ()
            at += 2
            continue
        value = row[at]
        at += 1
        if name in ("to", "cc", "reply_to"):
            out[name] = _mailboxes(value)
        elif name == "subject":
            out["subject"] = value or ""
        else:
            out[name] = value or ""
    return out


def _mailboxes(value: Any) -> tuple[Address, ...]:
    """Read a JSON list of {name, address} back into Address values."""
    return tuple(
        Address(str(item.get("address", "")), str(item.get("name", "")))
        for item in value or ()
        if isinstance(item, dict) and item.get("address")
    )


async def _attachments(
    session: AsyncSession, ids: Sequence[int]
) -> dict[int, tuple[AttachmentInfo, ...]]:
    """List the attachments of the letters, by letter id, in their position order."""
    stmt = (
        select(
            Attachment.letter_id,
            Attachment.position,
            Attachment.filename,
            Attachment.content_type,
            Attachment.size,
            Attachment.content_id,
            Attachment.disposition,
            Attachment.sha256,
        )
        .where(Attachment.letter_id.in_(list(ids)))
        .order_by(Attachment.letter_id, Attachment.position)
    )
    out: dict[int, list[AttachmentInfo]] = {}
    for row in (await session.execute(stmt)).all():
        out.setdefault(int(row[0]), []).append(
            AttachmentInfo(
                position=int(row[1]),
                filename=row[2] or "",
                content_type=row[3] or "",
                size=int(row[4] or 0),
                content_id=row[5] or "",
                disposition=row[6] or "",
                sha256=row[7] or "",
            )
        )
    return {letter_id: tuple(items) for letter_id, items in out.items()}


async def header_slices(session: AsyncSession, ids: Sequence[int]) -> dict[int, bytes]:
    """Read the first HEADER_SLICE bytes of each letter's raw bytes, where its header block is."""
    if not ids:
        return {}
    stmt = select(Letter.id, func.substr(Letter.raw, 1, HEADER_SLICE, type_=LargeBinary)).where(
        Letter.id.in_(list(ids))
    )
    return {int(i): bytes(head or b"") for i, head in (await session.execute(stmt)).all()}


async def known_hits(session: AsyncSession, ids: Sequence[int]) -> set[tuple[int, str, str]]:
    """Give the (letter id, rule, ruleset version) hits already recorded for these letters."""
    if not ids:
        return set()
    stmt = select(RuleHit.letter_id, RuleHit.rule, RuleHit.ruleset_version).where(
        RuleHit.letter_id.in_(list(ids))
    )
    return {(int(i), str(rule), str(version)) for i, rule, version in (await session.execute(stmt))}
