"""Queue a letter for maild to send, checked now: what the CRM's integration calls instead of raw SQL.

The letter is composed once as a trial (autotexts, addresses, sizes, font), so a mistake is an
error for the caller at insert time, not a dead outbox row later; then one ``send`` row and its
attachment rows are inserted in the caller's transaction, and the dispatcher is woken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.db import repo, sending
from maild.db.tables import Account, Lead, OutboxAttachment, OutboxItem, utcnow
from maild.outbox.letter import Draft, DraftError, FileAttachment, compose
from maild.settings import AccountConfig, Config


@dataclass(frozen=True, slots=True)
class Message:
    """The recipients, subject and bodies of a CRM letter, as the CRM wrote them."""

    to: str
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""


def draft_for(
    config: Config,
    account: AccountConfig,
    author: sending.Author | None,
    message: Message,
    *,
    request_number: int | None,
    files: Sequence[FileAttachment],
    letters: Sequence[bytes],
) -> Draft:
    """Put a CRM letter together with its account's and author's settings, as it will be sent."""
    return Draft(
        account_address=account.address,
        account_name=account.name,
        sender_name=(author.sender_name if author else "") or account.display_name,
        author_full_name=(author.full_name if author else "") or account.display_name,
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        subject=message.subject,
        text=message.text,
        html=message.html,
        signature=account.outgoing.signature,
        signature_html=account.outgoing.signature_html,
        font=(author.font if author else "") or config.outgoing.default_font,
        request_number=request_number,
        files=files,
        letters=letters,
        max_attachments_bytes=int(account.outgoing.max_attachments_mb * 1024 * 1024),
    )


@dataclass(frozen=True, slots=True)
class NewLetter:
    """A letter the CRM wants sent from a shared account."""

    account: str
    to: str
    subject: str = ""
    text: str = ""
    html: str = ""
    cc: str = ""
    bcc: str = ""
    author_login: str | None = None
    lead_id: int | None = None
    files: Sequence[FileAttachment] = ()
    letter_ids: Sequence[int] = ()


async def queue_letter(
    session: AsyncSession, config: Config, letter: NewLetter, *, key: str
) -> int:
    """Check a letter by composing it, then queue it under a unique key; give the outbox id."""
    account = config.account(letter.account)
    if account is None:
        raise DraftError(f"no account is named {letter.account!r}")
    account_id = (
        await session.execute(select(Account.id).where(Account.name == account.name))
    ).scalar()
    if account_id is None:
        raise DraftError(f"account {account.name!r} is not in the database yet: start maild once")
    author = await sending.author_of(session, letter.author_login, int(account_id))
    number = None
    if letter.lead_id is not None:
        number = (
            await session.execute(select(Lead.number).where(Lead.id == letter.lead_id))
        ).scalar()
        if number is None:
            raise DraftError(f"no lead has id {letter.lead_id}")
    letters = [await repo.letter_raw(session, i) for i in letter.letter_ids]
    compose(
        draft_for(
            config,
            account,
            author,
            Message(letter.to, letter.cc, letter.bcc, letter.subject, letter.text, letter.html),
            request_number=number,
            files=letter.files,
            letters=letters,
        )
    )
    return await _insert(session, int(account_id), letter, key)


async def _insert(session: AsyncSession, account_id: int, letter: NewLetter, key: str) -> int:
    """Insert the outbox row and its attachments."""
    now = utcnow()
    outbox_id = (
        await session.execute(
            insert(OutboxItem)
            .values(
                account_id=account_id,
                kind="send",
                target=letter.to[:998],
                payload={},
                idempotency_key=key,
                seq=0,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
                author_login=letter.author_login,
                mail_to=letter.to,
                mail_cc=letter.cc,
                mail_bcc=letter.bcc,
                subject=letter.subject,
                text_body=letter.text,
                html_body=letter.html,
                lead_id=letter.lead_id,
                attach_letter_ids=list(letter.letter_ids),
            )
            .returning(OutboxItem.id)
        )
    ).scalar_one()
    if letter.files:
        await session.execute(
            insert(OutboxAttachment),
            [
                {
                    "outbox_id": outbox_id,
                    "position": position,
                    "filename": item.filename,
                    "content_type": item.content_type,
                    "content": item.content,
                }
                for position, item in enumerate(letter.files)
            ],
        )
    return int(outbox_id)
