"""Compose an auto-reply (RFC 3834): the headers that stop loops, threading, and the configured text.

Pure: everything comes in as arguments. The envelope sender is null (``MAIL FROM:<>``) unless the
account's relay refuses that; the one recipient is the envelope sender of the letter answered,
never its Reply-To. Header lines are folded by the SMTP policy, so none is over 998 octets.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from maild.core.addresses import address_problem
from maild.core.letter import Address as LetterAddress
from maild.core.letter import ParsedLetter
from maild.core.rawmail import one_line
from maild.core.robots import LOOP_HEADER

#: How many Message-IDs of the original References a reply keeps (the newest ones).
MAX_REFERENCES = 20
_MESSAGE_ID = re.compile(r"<[^<>\s\x00-\x1f\x7f]+>")


@dataclass(frozen=True, slots=True)
class AutoReplyLetter:
    """A composed auto-reply: bytes, envelope, and the view stored as the outgoing letter."""

    raw: bytes
    sender: str
    recipients: tuple[str, ...]
    parsed: ParsedLetter


def compose_reply(
    payload: dict[str, Any],
    *,
    account_address: str,
    account_name: str,
    now: datetime | None = None,
    message_id: str = "",
) -> AutoReplyLetter:
    """Compose the reply an ``autoreply`` outbox row describes (see ReplyPlan for its fields)."""
    to = str(payload["to"])
    problem = address_problem(to)
    if problem is not None:
        raise ValueError(f"auto-reply recipient {to!r} is not one plain address: {problem}")
    to_name = _one_line(str(payload.get("to_name", "")))
    subject = _one_line(str(payload.get("subject", "")))
    in_reply_to = next(iter(_message_ids(str(payload.get("in_reply_to", "")))), "")
    references = [ref for item in payload.get("references", []) for ref in _message_ids(str(item))][
        -MAX_REFERENCES:
    ]
    if in_reply_to:
        references = [ref for ref in references if ref != in_reply_to] + [in_reply_to]
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(display_name=_one_line(account_name), addr_spec=account_address)
    msg["To"] = Address(display_name=to_name, addr_spec=to) if to_name else to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id or _message_id(account_address)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg["Auto-Submitted"] = "auto-replied"
    msg["Precedence"] = "bulk"
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = account_address
    text = str(payload.get("text", ""))
    msg.set_content(text if text.endswith("\n") else text + "\n", charset="utf-8")
    raw = msg.as_bytes()
    sender = "" if payload.get("null_sender", True) else account_address
    parsed = ParsedLetter(
        message_id=str(msg["Message-ID"]),
        in_reply_to=in_reply_to,
        references=tuple(references),
        from_=(LetterAddress(account_address.lower(), account_name),),
        to=(LetterAddress(to.lower(), to_name),),
        subject=subject,
        sent_at=email.utils.parsedate_to_datetime(str(msg["Date"])),
        text=text,
        headers={"auto-submitted": "auto-replied", LOOP_HEADER.lower(): account_address},
    )
    return AutoReplyLetter(raw, sender, (to,), parsed)


def _message_ids(value: str) -> list[str]:
    """Give the ``<id>`` tokens of a value and nothing else, so no text rides along into a header."""
    return _MESSAGE_ID.findall(value)


def _one_line(value: str) -> str:
    """Flatten a value to one line: nothing from a letter answered may add a header."""
    return one_line(value)


def _message_id(address: str) -> str:
    """Make a new Message-ID in the account's domain."""
    domain = address.rsplit("@", 1)[-1]
    return email.utils.make_msgid(domain=domain if domain.isascii() else "maild.invalid")
