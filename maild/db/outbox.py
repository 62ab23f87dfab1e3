"""SQL for rule hits and the outbox: recording decisions and claiming effects to perform.

Claims take a lease (``locked_until``) in their own short transaction, so a crashed dispatcher's
rows come back when the lease ends: an effect may be performed twice after a crash, never lost.
On PostgreSQL concurrent dispatchers (one per maild process) skip each other's rows with
``FOR UPDATE SKIP LOCKED``; SQLite has one writer at a time anyway. A dispatcher that reaches a
row late in its batch confirms its claim first (``confirm``): if the lease ran out meanwhile and
another dispatcher claimed the row, the claim's ``locked_until`` no longer matches and it leaves
the row to the other one.
``attempts`` counts attempts that ended (done, retry, dead), not claims: a killed dispatcher
leaves most of its claimed batch untried, and charging those rows would park them dead after
a single real failure once a few crashes had used up ``max_attempts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maild.db.repo import dialect_insert
from maild.db.tables import Account, Folder, Letter, OutboxItem, RuleHit, utcnow

IMAP_KINDS = ("add_flag", "remove_flag", "copy", "move")


@dataclass(frozen=True, slots=True)
class NewEffect:
    """One outbox row to create: what to do, to which letter, under which unique key."""

    account_id: int
    letter_id: int | None
    kind: str
    target: str
    payload: dict[str, Any]
    key: str
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    """An outbox row claimed for one attempt, with what the dispatcher needs to perform it."""

    id: int
    account: str
    letter_id: int | None
    kind: str
    target: str
    payload: dict[str, Any]
    seq: int
    attempts: int
    folder: str | None
    uidvalidity: int | None
    uid: int | None
    message_id: str
    letter_status: str | None = None
    locked_until: datetime | None = None  # the claim's lease: confirm() checks it is still this


async def record_hits(
    session: AsyncSession, hits: Sequence[tuple[int, str, str, list[dict[str, Any]]]]
) -> None:
    """Write the audit trail: (letter id, rule, ruleset version, effects) per matched rule."""
    if not hits:
        return
    now = utcnow()
    await session.execute(
        dialect_insert(session, RuleHit),
        [
            {
                "letter_id": letter_id,
                "rule": rule,
                "ruleset_version": version,
                "effects": effects,
                "created_at": now,
            }
            for letter_id, rule, version, effects in hits
        ],
    )


async def add_effects(session: AsyncSession, effects: Sequence[NewEffect]) -> None:
    """Queue effects; a key already queued is left as it is, so replays never double an effect."""
    if not effects:
        return
    stmt = dialect_insert(session, OutboxItem).on_conflict_do_nothing(
        index_elements=["idempotency_key"]
    )
    await session.execute(stmt, _effect_rows(effects))


async def add_new_effects(session: AsyncSession, effects: Sequence[NewEffect]) -> set[str]:
    """Queue effects as add_effects does; give the keys that were not queued before."""
    if not effects:
        return set()
    stmt = (
        dialect_insert(session, OutboxItem)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(OutboxItem.idempotency_key)
    )
    return {str(key) for key in (await session.execute(stmt, _effect_rows(effects))).scalars()}


def _effect_rows(effects: Sequence[NewEffect]) -> list[dict[str, Any]]:
    """Give the outbox rows of new effects: pending, due now."""
    now = utcnow()
    return [
        {
            "account_id": effect.account_id,
            "letter_id": effect.letter_id,
            "kind": effect.kind,
            "target": effect.target,
            "payload": effect.payload,
            "idempotency_key": effect.key,
            "seq": effect.seq,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for effect in effects
    ]


async def mark_deleted(session: AsyncSession, letter_id: int) -> None:
    """Record that a rule moved the letter into its account's deleted folder."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(marked_for_deletion=True, updated_at=utcnow())
    )


async def set_responsible(
    session: AsyncSession, letter_id: int, login: str | None, *, reason: str
) -> None:
    """Record the letter's Responsible (None: nobody, e.g. an ambiguous name) and why."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(responsible_login=login, responsible_reason=reason[:500], updated_at=utcnow())
    )


async def recent_forwards(session: AsyncSession, sender: str, *, since: datetime) -> int:
    """Count forwards queued since a time for letters from one sender: the loop fuse's meter."""
    found = await session.execute(
        select(func.count())
        .select_from(OutboxItem)
        .join(Letter, Letter.id == OutboxItem.letter_id)
        .where(
            OutboxItem.kind == "forward",
            OutboxItem.created_at >= since,
            Letter.from_address == sender,
        )
    )
    return int(found.scalar_one())


async def moved_here(
    session: AsyncSession, *, account_id: int, folder: str, sha256s: Sequence[str]
) -> dict[str, int]:
    """Find letters maild itself moved into this folder, by content: they are not new letters."""
    if not sha256s:
        return {}
    # By the account's folders, so the (folder_id, sha256) index finds the letters: asked by
    # account and ordered by id, SQLite read the whole letters table for every stored group.
    found = await session.execute(
        select(Letter.sha256, Letter.id)
        .join(OutboxItem, OutboxItem.letter_id == Letter.id)
        .where(
            Letter.folder_id.in_(select(Folder.id).where(Folder.account_id == account_id)),
            Letter.account_id == account_id,
            Letter.sha256.in_(list(sha256s)),
            OutboxItem.kind == "move",
            OutboxItem.target == folder,
        )
    )
    out: dict[str, int] = {}
    for sha256, letter_id in sorted(found.all(), key=lambda row: int(row[1])):
        out.setdefault(sha256, int(letter_id))
    return out


async def relocate_letter(
    session: AsyncSession, letter_id: int, *, folder_id: int, uidvalidity: int, uid: int
) -> None:
    """Point a letter at the folder and UID it now lives at."""
    await session.execute(
        update(Letter)
        .where(Letter.id == letter_id)
        .values(folder_id=folder_id, uidvalidity=uidvalidity, uid=uid, updated_at=utcnow())
    )


def _due(now: datetime) -> Any:
    """The condition of a row that may be attempted now."""
    return and_(
        OutboxItem.status == "pending",
        OutboxItem.next_attempt_at <= now,
        or_(OutboxItem.locked_until.is_(None), OutboxItem.locked_until < now),
    )


async def _due_ids(session: AsyncSession, condition: Any, limit: int) -> list[int]:
    """Select and lock up to ``limit`` due row ids, skipping rows other dispatchers hold."""
    query = (
        select(OutboxItem.id)
        .where(condition)
        .order_by(OutboxItem.letter_id, OutboxItem.seq, OutboxItem.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [int(row) for row in (await session.execute(query)).scalars()]


async def claim_due(
    session: AsyncSession, *, limit: int, lease_seconds: float, mailbox_limit: int = 0
) -> list[ClaimedItem]:
    """Lease up to ``limit`` due rows, oldest first, for one attempt each (numbered from 1).

    The first ``mailbox_limit`` due mailbox rows (move, copy, flags) come along too: the
    dispatcher performs those a group per IMAP command, so many at a time cost little more.
    """
    now = utcnow()
    ids = await _due_ids(session, _due(now), limit)
    if mailbox_limit > 0:
        mailbox = and_(_due(now), OutboxItem.kind.in_(IMAP_KINDS))
        ids = sorted(set(ids) | set(await _due_ids(session, mailbox, mailbox_limit)))
    if not ids:
        return []
    until = now + timedelta(seconds=lease_seconds)
    await session.execute(
        update(OutboxItem).where(OutboxItem.id.in_(ids)).values(locked_until=until, updated_at=now)
    )
    rows = await session.execute(
        select(
            OutboxItem,
            Account.name,
            Folder.name,
            Letter.uidvalidity,
            Letter.uid,
            Letter.message_id,
            Letter.status,
        )
        .join(Account, Account.id == OutboxItem.account_id)
        .outerjoin(Letter, Letter.id == OutboxItem.letter_id)
        .outerjoin(Folder, Folder.id == Letter.folder_id)
        .where(OutboxItem.id.in_(ids))
        .order_by(OutboxItem.letter_id, OutboxItem.seq, OutboxItem.id)
    )
    return [
        ClaimedItem(
            id=item.id,
            account=account,
            letter_id=item.letter_id,
            kind=item.kind,
            target=item.target,
            payload=dict(item.payload or {}),
            seq=item.seq,
            attempts=item.attempts + 1,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=uid,
            message_id=message_id or "",
            letter_status=status,
            locked_until=until,
        )
        for item, account, folder, uidvalidity, uid, message_id, status in rows.all()
    ]


async def confirm(
    session: AsyncSession, item: ClaimedItem, *, lease_seconds: float
) -> datetime | None:
    """Extend a claim that is still this one's; None when another dispatcher has claimed the row."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    result = await session.execute(
        update(OutboxItem)
        .where(
            OutboxItem.id == item.id,
            OutboxItem.status == "pending",
            OutboxItem.locked_until == item.locked_until,
        )
        .values(locked_until=until)
    )
    return until if getattr(result, "rowcount", 0) == 1 else None


async def mark_done(session: AsyncSession, item_id: int, result: dict[str, Any]) -> None:
    """Record an effect as performed."""
    now = utcnow()
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            status="done",
            attempts=OutboxItem.attempts + 1,
            result=result,
            locked_until=None,
            last_error=None,
            done_at=now,
            updated_at=now,
        )
    )


async def mark_done_many(
    session: AsyncSession, results: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    """Record effects (row id, result) as performed, in one statement."""
    if not results:
        return
    table: Table = OutboxItem.__table__  # type: ignore[assignment]
    now = utcnow()
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status="done",
            attempts=table.c.attempts + 1,
            result=bindparam("b_result", type_=table.c.result.type),
            locked_until=None,
            last_error=None,
            done_at=now,
            updated_at=now,
        )
    )
    await session.execute(stmt, [{"b_id": i, "b_result": result} for i, result in results])


async def mark_retry(session: AsyncSession, item_id: int, error: str, at: datetime) -> None:
    """Put an effect back to be tried again at a later time, keeping the reason."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            next_attempt_at=at,
            attempts=OutboxItem.attempts + 1,
            locked_until=None,
            last_error=error[:4000],
            updated_at=utcnow(),
        )
    )


async def release(session: AsyncSession, item_ids: Sequence[int]) -> None:
    """Give claimed rows back untried (an earlier effect of their letter is not done yet)."""
    if item_ids:
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(list(item_ids)))
            .values(locked_until=None, updated_at=utcnow())
        )


async def mark_dead(session: AsyncSession, item_id: int, reason: str) -> None:
    """Park an effect that cannot succeed, with the reason, for an admin to look at."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            status="dead",
            attempts=OutboxItem.attempts + 1,
            locked_until=None,
            last_error=reason[:4000],
            updated_at=utcnow(),
        )
    )


async def pending_before(session: AsyncSession, letter_id: int, seq: int) -> bool:
    """Tell whether an earlier mailbox effect of the same letter is still pending."""
    found = await session.execute(
        select(func.count())
        .select_from(OutboxItem)
        .where(
            OutboxItem.letter_id == letter_id,
            OutboxItem.kind.in_(IMAP_KINDS),
            OutboxItem.seq < seq,
            OutboxItem.status == "pending",
        )
    )
    return int(found.scalar_one()) > 0


async def blocked(session: AsyncSession, items: Sequence[ClaimedItem]) -> set[int]:
    """Give the ids of rows whose letter still has an earlier mailbox effect pending."""
    letters = {item.letter_id for item in items if item.letter_id is not None}
    if not letters:
        return set()
    found = await session.execute(
        select(OutboxItem.letter_id, func.min(OutboxItem.seq))
        .where(
            OutboxItem.letter_id.in_(letters),
            OutboxItem.kind.in_(IMAP_KINDS),
            OutboxItem.status == "pending",
        )
        .group_by(OutboxItem.letter_id)
    )
    first = {letter_id: int(seq) for letter_id, seq in found.all() if letter_id is not None}
    return {
        item.id
        for item in items
        if item.letter_id is not None and first.get(item.letter_id, item.seq) < item.seq
    }


async def next_due_at(session: AsyncSession) -> datetime | None:
    """Give when the earliest pending row becomes due, None when nothing is pending."""
    found = await session.execute(
        select(func.min(OutboxItem.next_attempt_at)).where(OutboxItem.status == "pending")
    )
    value: datetime | None = found.scalar_one_or_none()
    return value


async def list_items(
    session: AsyncSession, *, status: str | None, limit: int
) -> list[tuple[OutboxItem, str]]:
    """List outbox rows, newest first, with their account's name."""
    query = (
        select(OutboxItem, Account.name)
        .join(Account, Account.id == OutboxItem.account_id)
        .order_by(OutboxItem.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(OutboxItem.status == status)
    return [(item, name) for item, name in (await session.execute(query)).all()]


async def revive(session: AsyncSession, item_ids: Sequence[int] | None) -> int:
    """Make dead rows (all, or the given ones) pending again, due now; give how many."""
    query = update(OutboxItem).where(OutboxItem.status == "dead")
    if item_ids is not None:
        query = query.where(OutboxItem.id.in_(list(item_ids)))
    result = await session.execute(
        query.values(
            status="pending",
            attempts=0,
            next_attempt_at=utcnow(),
            locked_until=None,
            updated_at=utcnow(),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def dead_since(session: AsyncSession, since: datetime) -> list[OutboxItem]:
    """List the rows parked dead since a time, oldest first: what one command gave up on."""
    found = await session.execute(
        select(OutboxItem)
        .where(OutboxItem.status == "dead", OutboxItem.updated_at >= since)
        .order_by(OutboxItem.id)
    )
    return list(found.scalars())


async def pending_of(session: AsyncSession, letter_ids: Sequence[int]) -> int:
    """Count the rows of these letters still pending (a retry due later, or another's claim)."""
    total = 0
    ids = list(letter_ids)
    for start in range(0, len(ids), 500):
        found = await session.execute(
            select(func.count()).where(
                OutboxItem.status == "pending", OutboxItem.letter_id.in_(ids[start : start + 500])
            )
        )
        total += int(found.scalar_one())
    return total


async def counts(session: AsyncSession) -> dict[str, int]:
    """Count outbox rows by status."""
    found = await session.execute(
        select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
    )
    return {status: int(n) for status, n in found.all()}
