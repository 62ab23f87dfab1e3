"""Repository functions: every SQL statement maild runs lives here, portable across SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.letter import Address, FetchedMessage, ParsedLetter
from maild.db.tables import Account, Attachment, Folder, Letter, utcnow
from maild.errors import LeaseLost


@dataclass(frozen=True)
class FolderRow:
    """A folder's identity and cursor, as read at the start of a transaction."""

    id: int
    account_id: int
    uidvalidity: int | None
    last_uid: int
    first_sync_done: bool
    uidvalidity_changes: int


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """Pick the dialect's INSERT so ON CONFLICT works on both databases."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _cached(session: AsyncSession, name: str, build: Any) -> Any:
    """Build a statement once per dialect: building and hashing one costs more than a small group."""
    key = (session.get_bind().dialect.name, name)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build(
            dialect_insert(session, Letter.__table__), dialect_insert(session, Attachment.__table__)
        )
    return stmt


async def upsert_account(
    session: AsyncSession, *, name: str, address: str, display_name: str, enabled: bool
) -> int:
    """Mirror an account from config into the database and give its id."""
    stmt = dialect_insert(session, Account).values(
        name=name,
        address=address,
        display_name=display_name,
        enabled=enabled,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "address": address,
            "display_name": display_name,
            "enabled": enabled,
            "updated_at": utcnow(),
        },
    ).returning(Account.id)
    return int((await session.execute(stmt)).scalar_one())


async def ensure_folder(session: AsyncSession, *, account_id: int, name: str) -> int:
    """Create the folder row on first sight and give its id."""
    stmt = (
        dialect_insert(session, Folder)
        .values(
            account_id=account_id,
            name=name,
            last_uid=0,
            first_sync_done=False,
            uidvalidity_changes=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["account_id", "name"])
    )
    await session.execute(stmt)
    found = await session.execute(
        select(Folder.id).where(Folder.account_id == account_id, Folder.name == name)
    )
    return int(found.scalar_one())


async def load_folder(session: AsyncSession, folder_id: int) -> FolderRow:
    """Read a folder's cursor."""
    row = (await session.execute(select(Folder).where(Folder.id == folder_id))).scalar_one()
    return FolderRow(
        id=row.id,
        account_id=row.account_id,
        uidvalidity=row.uidvalidity,
        last_uid=row.last_uid,
        first_sync_done=row.first_sync_done,
        uidvalidity_changes=row.uidvalidity_changes,
    )


def _this_folder(folder_id: int, owner: str | None) -> list[Any]:
    """Select the folder's row, and only while ``owner`` holds its lease when one is given."""
    if owner is None:
        return [Folder.id == folder_id]
    return [Folder.id == folder_id, Folder.lease_owner == owner]


def _lost(folder_id: int, owner: str | None) -> LeaseLost:
    """Say that a lease-holding write found the folder held by another process."""
    return LeaseLost(f"folder {folder_id} is no longer leased to {owner}: another process has it")


async def advance_and_load_folder(
    session: AsyncSession, folder_id: int, uid: int, *, owner: str | None = None
) -> FolderRow:
    """Move the cursor forward to ``uid`` and read the folder in one statement, at a group's start.

    One round trip instead of a read and an update per transaction; the update also takes the
    folder row's lock first, and it rolls back with the rest if the group fails. With an
    ``owner``, the update finds the row only while that process holds the folder's lease, and
    LeaseLost is raised otherwise: nothing of the group is stored.
    """
    stmt = (
        update(Folder)
        .where(*_this_folder(folder_id, owner))
        .values(last_uid=case((Folder.last_uid < uid, uid), else_=Folder.last_uid))
        .returning(
            Folder.account_id,
            Folder.uidvalidity,
            Folder.last_uid,
            Folder.first_sync_done,
            Folder.uidvalidity_changes,
        )
    )
    result = await session.execute(stmt)
    row = result.one() if owner is None else result.one_or_none()
    if row is None:
        raise _lost(folder_id, owner)
    return FolderRow(
        id=folder_id,
        account_id=row.account_id,
        uidvalidity=row.uidvalidity,
        last_uid=row.last_uid,
        first_sync_done=row.first_sync_done,
        uidvalidity_changes=row.uidvalidity_changes,
    )


async def set_uidvalidity(
    session: AsyncSession,
    folder_id: int,
    uidvalidity: int,
    *,
    changed: bool,
    owner: str | None = None,
) -> None:
    """Adopt a new UIDVALIDITY and restart the cursor from UID 0 (as the lease's holder)."""
    values: dict[str, Any] = {"uidvalidity": uidvalidity, "last_uid": 0}
    if changed:
        values["uidvalidity_changes"] = Folder.uidvalidity_changes + 1
    found = await session.execute(
        update(Folder).where(*_this_folder(folder_id, owner)).values(**values).returning(Folder.id)
    )
    if owner is not None and found.first() is None:
        raise _lost(folder_id, owner)


async def advance_cursor(session: AsyncSession, folder_id: int, uid: int) -> None:
    """Move the cursor forward, never backward, in the letter's own transaction."""
    await session.execute(
        update(Folder).where(Folder.id == folder_id, Folder.last_uid < uid).values(last_uid=uid)
    )


async def mark_synced(session: AsyncSession, folder_id: int, *, owner: str | None = None) -> None:
    """Record a complete pass over the folder; the first one ends the first sync."""
    found = await session.execute(
        update(Folder)
        .where(*_this_folder(folder_id, owner))
        .values(first_sync_done=True, last_synced_at=utcnow())
        .returning(Folder.id)
    )
    if owner is not None and found.first() is None:
        raise _lost(folder_id, owner)


async def rekey_letter(
    session: AsyncSession, folder: FolderRow, *, sha256: str, uidvalidity: int, uid: int
) -> int | None:
    """After a UIDVALIDITY change, move an already stored copy to its new UID instead of storing it twice."""
    found = await session.execute(
        select(Letter.id)
        .where(
            Letter.folder_id == folder.id,
            Letter.sha256 == sha256,
            Letter.uidvalidity != uidvalidity,
        )
        .order_by(Letter.id)
        .limit(1)
    )
    letter_id = found.scalar_one_or_none()
    if letter_id is None:
        return None
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(uidvalidity=uidvalidity, uid=uid, updated_at=utcnow())
    )
    return int(letter_id)


def _addresses(items: Sequence[Address]) -> list[dict[str, str]]:
    return [item.as_dict() for item in items]


def letter_values(parsed: ParsedLetter) -> dict[str, Any]:
    """Map a parsed letter onto the letters columns."""
    sender = parsed.sender
    return {
        "message_id": parsed.message_id[:998],
        "in_reply_to": parsed.in_reply_to[:998],
        "reference_ids": list(parsed.references),
        "from_address": sender.address[:320] if sender else "",
        "from_name": sender.name[:500] if sender else "",
        "to_addresses": _addresses(parsed.to),
        "cc_addresses": _addresses(parsed.cc),
        "reply_to_addresses": _addresses(parsed.reply_to),
        "subject": parsed.subject,
        "sent_at": parsed.sent_at,
        "text_body": parsed.text,
        "html_body": parsed.html,
        "defects": list(parsed.defects),
    }


@dataclass(frozen=True)
class NewLetter:
    """One fetched letter ready to insert: what was fetched, what parsing made of it, and its status."""

    message: FetchedMessage
    parsed: ParsedLetter | None
    status: str
    error: str | None
    sha256: str
    #: Columns set at once rather than updated after: an update rewrites the whole row, raw too.
    columns: Mapping[str, Any] = field(default_factory=dict)


def _letter_row(folder: FolderRow, item: NewLetter, first_sync: bool) -> dict[str, Any]:
    """Map one new letter onto every letters column."""
    now = utcnow()
    parsed = item.parsed if item.parsed is not None else ParsedLetter()
    return {
        "account_id": folder.account_id,
        "folder_id": folder.id,
        "uidvalidity": folder.uidvalidity,
        "uid": item.message.uid,
        "direction": "in",
        "status": item.status,
        "error": item.error,
        "received_at": item.message.internaldate,
        "size": item.message.size,
        "sha256": item.sha256,
        "raw": item.message.raw,
        "imap_flags": list(item.message.flags),
        "first_sync": first_sync,
        "marked_for_deletion": False,
        "created_at": now,
        "updated_at": now,
        **letter_values(parsed),
        **item.columns,
    }


async def insert_letters(
    session: AsyncSession, folder: FolderRow, items: Sequence[NewLetter], *, first_sync: bool
) -> dict[int, int]:
    """Insert letters in one statement, skipping UIDs already stored; give {uid: new letter id}."""
    if not items:
        return {}
    table = Letter.__table__
    stmt = _cached(
        session,
        "insert_letters",
        lambda letters, _: letters.on_conflict_do_nothing(
            index_elements=["folder_id", "uidvalidity", "uid"]
        ).returning(table.c.id, table.c.uid),
    )
    rows = [_letter_row(folder, item, first_sync) for item in items]
    result = await session.execute(stmt, rows)
    ids = {int(uid): int(letter_id) for letter_id, uid in result.all()}
    await insert_attachments(
        session,
        [
            (ids[item.message.uid], item.parsed)
            for item in items
            if item.parsed is not None and item.message.uid in ids
        ],
    )
    return ids


async def insert_attachments(
    session: AsyncSession, letters: Sequence[tuple[int, ParsedLetter]]
) -> None:
    """List the attachments of newly stored letters in one statement."""
    rows = [
        {
            "letter_id": letter_id,
            "position": item.position,
            "filename": item.filename,
            "content_type": item.content_type,
            "size": item.size,
            "content_id": item.content_id,
            "disposition": item.disposition,
            "sha256": item.sha256,
        }
        for letter_id, parsed in letters
        for item in parsed.attachments
    ]
    if rows:
        await session.execute(_cached(session, "insert_attachments", lambda _, a: a), rows)


def sha256_of(raw: bytes) -> str:
    """Hash a raw letter, the key for re-matching after a UIDVALIDITY change."""
    return hashlib.sha256(raw).hexdigest()


async def failed_letter_ids(session: AsyncSession, *, limit: int | None = None) -> list[int]:
    """List letters whose parse or storage failed, oldest first."""
    stmt = select(Letter.id).where(Letter.status == "failed").order_by(Letter.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [int(i) for i in (await session.execute(stmt)).scalars()]


async def letter_raw(session: AsyncSession, letter_id: int) -> bytes:
    """Read one letter's raw bytes."""
    return bytes(
        (await session.execute(select(Letter.raw).where(Letter.id == letter_id))).scalar_one()
    )


@dataclass(frozen=True)
class StoredLetter:
    """One stored letter as the rules dry run reads it back: where it is, its status and raw bytes."""

    id: int
    account: str
    folder: str
    status: str
    size: int
    raw: bytes
    received_at: datetime


def _received() -> Any:
    """Give when a letter arrived: the server's INTERNALDATE, else when maild stored it."""
    return func.coalesce(Letter.received_at, Letter.created_at)


async def letter_ids_received(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime | None = None,
    account: str | None = None,
    folder: str | None = None,
    limit: int | None = None,
) -> list[tuple[int, int]]:
    """List (id, size) of incoming letters received in [since, until), oldest first, no bytes.

    Letters maild sent are left out: rules decide incoming letters only.
    """
    received = _received()
    stmt = select(Letter.id, Letter.size).where(received >= since, Letter.direction == "in")
    if until is not None:
        stmt = stmt.where(received < until)
    if account is not None:
        stmt = stmt.join(Account, Account.id == Letter.account_id).where(Account.name == account)
    if folder is not None:
        stmt = stmt.join(Folder, Folder.id == Letter.folder_id).where(Folder.name == folder)
    stmt = stmt.order_by(received, Letter.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(i), int(size)) for i, size in (await session.execute(stmt)).all()]


async def stored_letters(session: AsyncSession, ids: Sequence[int]) -> list[StoredLetter]:
    """Read letters with their raw bytes and place, in the order of ``ids`` (missing ones skipped)."""
    stmt = (
        select(
            Letter.id,
            Account.name,
            Folder.name,
            Letter.status,
            Letter.size,
            Letter.raw,
            _received(),
        )
        .join(Account, Account.id == Letter.account_id)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Letter.id.in_(ids))
    )
    found = {
        int(row[0]): StoredLetter(
            id=int(row[0]),
            account=str(row[1]),
            folder=str(row[2]),
            status=str(row[3]),
            size=int(row[4]),
            raw=bytes(row[5]),
            received_at=row[6],
        )
        for row in (await session.execute(stmt)).all()
    }
    return [found[i] for i in ids if i in found]


async def mark_parsed(session: AsyncSession, letter_id: int, parsed: ParsedLetter) -> None:
    """Fill a previously failed letter from a successful parse."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(status="stored", error=None, updated_at=utcnow(), **letter_values(parsed))
    )
    await session.execute(delete(Attachment).where(Attachment.letter_id == letter_id))
    await insert_attachments(session, [(letter_id, parsed)])


async def mark_failed_again(session: AsyncSession, letter_id: int, error: str) -> None:
    """Record the newest reason a failed letter still fails."""
    await session.execute(
        update(Letter).where(Letter.id == letter_id).values(error=error, updated_at=utcnow())
    )


async def count_letters(session: AsyncSession) -> dict[str, int]:
    """Count letters by status, for summaries."""
    rows = await session.execute(select(Letter.status, func.count()).group_by(Letter.status))
    return {str(status): int(n) for status, n in rows.all()}
