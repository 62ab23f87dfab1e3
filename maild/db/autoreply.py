"""SQL of the autoresponder: the throttle claimed in one statement, released on failure, the off switch.

The throttle row of (account, sender) holds the window the last reply opened: the arrival time of
the letter answered. A new letter claims the row with one ``INSERT … ON CONFLICT DO UPDATE …
WHERE window_start < arrival - interval``, so of two processes (or two letters) only one gets the
row back; the other sees the committed claim and is throttled. A claim is made when the reply is
queued; if SMTP finally refuses the reply, the claim is released and the window before it comes
back, so a reply that was never sent never blocks the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maild.db.repo import dialect_insert
from maild.db.tables import Account, AutoreplyLog, AutoreplyState, Letter, utcnow
from maild.errors import MaildError


@dataclass(frozen=True, slots=True)
class Throttle:
    """The window a sender is in: opened by a letter that arrived at ``since``; sent or not yet."""

    since: datetime
    letter_id: int
    sent_at: datetime | None


async def claim(
    session: AsyncSession,
    *,
    account_id: int,
    sender: str,
    letter_id: int,
    arrival: datetime,
    interval: timedelta,
) -> Throttle | None:
    """Claim the sender's window for a letter; None when claimed, else the window that holds."""
    now = utcnow()
    stmt = dialect_insert(session, AutoreplyLog).values(
        account_id=account_id,
        sender=sender,
        window_start=arrival,
        letter_id=letter_id,
        sent_at=None,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "sender"],
        set_={
            "previous_window_start": AutoreplyLog.window_start,
            "previous_letter_id": AutoreplyLog.letter_id,
            "previous_sent_at": AutoreplyLog.sent_at,
            "window_start": stmt.excluded.window_start,
            "letter_id": stmt.excluded.letter_id,
            "sent_at": None,
            "updated_at": stmt.excluded.updated_at,
        },
        where=AutoreplyLog.window_start < arrival - interval,
    ).returning(AutoreplyLog.letter_id)
    if (await session.execute(stmt)).first() is not None:
        return None
    row = (
        await session.execute(
            select(AutoreplyLog.window_start, AutoreplyLog.letter_id, AutoreplyLog.sent_at).where(
                AutoreplyLog.account_id == account_id, AutoreplyLog.sender == sender
            )
        )
    ).one()
    return Throttle(row.window_start, int(row.letter_id), row.sent_at)


async def record_sent(
    session: AsyncSession, *, account_id: int, sender: str, letter_id: int, arrival: datetime
) -> None:
    """Record that the reply to a letter went out: its window now really holds."""
    now = utcnow()
    stmt = dialect_insert(session, AutoreplyLog).values(
        account_id=account_id,
        sender=sender,
        window_start=arrival,
        letter_id=letter_id,
        sent_at=now,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "sender"],
        set_={"sent_at": now, "updated_at": now},
        where=AutoreplyLog.letter_id == letter_id,
    )
    await session.execute(stmt)


async def release(session: AsyncSession, *, account_id: int, sender: str, letter_id: int) -> None:
    """Give back a claim whose reply finally failed: the window before it holds again."""
    this = (AutoreplyLog.account_id == account_id, AutoreplyLog.sender == sender)
    await session.execute(
        delete(AutoreplyLog).where(
            *this, AutoreplyLog.letter_id == letter_id, AutoreplyLog.previous_letter_id.is_(None)
        )
    )
    cleared = {"previous_window_start": None, "previous_letter_id": None, "previous_sent_at": None}
    await session.execute(
        update(AutoreplyLog)
        .where(*this, AutoreplyLog.letter_id == letter_id)
        .values(
            window_start=AutoreplyLog.previous_window_start,
            letter_id=AutoreplyLog.previous_letter_id,
            sent_at=AutoreplyLog.previous_sent_at,
            updated_at=utcnow(),
            **cleared,
        )
    )
    # A later claim took over from this one: it must not bring this one back when it fails too.
    await session.execute(
        update(AutoreplyLog)
        .where(*this, AutoreplyLog.previous_letter_id == letter_id)
        .values(**cleared)
    )


async def set_outcome(session: AsyncSession, letter_id: int, outcome: str) -> None:
    """Record on the letter what the autoresponder decided, for the CRM and the admin."""
    await session.execute(
        update(Letter).where(Letter.id == letter_id).values(autoreply_outcome=outcome[:500])
    )


async def switched_off_at(
    session: AsyncSession, account_id: int, start: datetime, end: datetime
) -> datetime | None:
    """Give when the account's auto-reply for this period was switched off by hand, if it was."""
    row = (
        await session.execute(
            select(
                AutoreplyState.period_start,
                AutoreplyState.period_end,
                AutoreplyState.switched_off_at,
            ).where(AutoreplyState.account_id == account_id)
        )
    ).first()
    if row is None or row.period_start != start or row.period_end != end:
        return None  # switched off for another period: this one is untouched
    return row.switched_off_at  # type: ignore[no-any-return]


async def account_id(session: AsyncSession, name: str) -> int:
    """Give an account's id; MaildError when the database does not know it yet."""
    found = (await session.execute(select(Account.id).where(Account.name == name))).scalar()
    if found is None:
        raise MaildError(f"account {name!r} is not in the database yet: run maild once first")
    return int(found)


async def switch_off(
    session: AsyncSession,
    account: str,
    *,
    start: datetime,
    end: datetime,
    at: datetime,
    by: str = "",
) -> None:
    """Switch an account's auto-reply off from ``at`` until the end of this period."""
    ident = await account_id(session, account)
    stmt = dialect_insert(session, AutoreplyState).values(
        account_id=ident, period_start=start, period_end=end, switched_off_at=at, switched_off_by=by
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={
            "period_start": start,
            "period_end": end,
            "switched_off_at": at,
            "switched_off_by": by,
        },
    )
    await session.execute(stmt)


async def switch_back_on(session: AsyncSession, account: str) -> bool:
    """Undo a manual off switch; tell whether there was one."""
    ident = await account_id(session, account)
    result = await session.execute(delete(AutoreplyState).where(AutoreplyState.account_id == ident))
    return bool(getattr(result, "rowcount", 0))


async def off_switches(session: AsyncSession) -> dict[str, tuple[datetime, datetime, datetime]]:
    """Give every manual off switch by account name: (period start, period end, switched off at)."""
    rows = await session.execute(
        select(
            Account.name,
            AutoreplyState.period_start,
            AutoreplyState.period_end,
            AutoreplyState.switched_off_at,
        ).join(Account, Account.id == AutoreplyState.account_id)
    )
    return {name: (start, end, at) for name, start, end, at in rows.all()}
