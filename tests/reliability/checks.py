"""What an outgoing letter composed from a hostile one must hold to: its own headers only, parsable."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from maild.autoreply.compose import compose_reply
from maild.autoreply.policy import Period, ReplyPlan, plan_reply
from maild.core.decision import ForwardMode
from maild.core.letter import ParsedLetter
from maild.core.rawmail import RawField, split_letter
from maild.errors import ParseError
from maild.ingest.parse import parse_letter
from maild.outbox.compose import RESEND_DROPPED, Identity, forward

ACCOUNT = Identity("sales@corp.example", "Corp Sales")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PERIOD = Period(True, NOW - timedelta(days=1), NOW + timedelta(days=1), "Away until Monday.")
MODES: tuple[ForwardMode, ...] = ("attach", "resend", "redirect")

# The header fields each forward mode writes itself; anything else in its block was injected.
OWN_FIELDS = {
    "attach": {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "auto-submitted",
        "x-maild-loop",
    },
    "resend": {"from", "reply-to", "x-original-from", "auto-submitted", "x-maild-loop"},
    "redirect": {"resent-date", "resent-from", "resent-to", "resent-message-id", "x-maild-loop"},
}
REPLY_FIELDS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "precedence",
    "x-auto-response-suppress",
    "x-maild-loop",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def own_block(fields: tuple[RawField, ...], allowed: set[str], what: str) -> None:
    """Check header fields maild wrote: only its own names, no stray control bytes, short lines."""
    for item in fields:
        assert item.key in allowed, f"{what}: injected header {item.name!r}: {item.raw[:200]!r}"
        assert not CONTROL.search(item.raw), f"{what}: control byte in {item.raw[:200]!r}"
        assert all(len(line) <= 998 for line in re.split(rb"\r\n|\n", item.raw)), what


def check_forward(mode: ForwardMode, raw: bytes, *, parse_again: bool = True) -> None:
    """Compose a forward of the letter; its own header block holds nothing of the letter's lines."""
    out = forward(mode, raw, account=ACCOUNT, to="desk@corp.example", now=NOW)
    fields = split_letter(out.raw).fields
    if mode == "redirect":
        assert out.raw.endswith(raw)
        fields = split_letter(out.raw[: len(out.raw) - len(raw)]).fields
    elif mode == "resend":
        kept = [f for f in split_letter(raw).fields if f.key not in RESEND_DROPPED]
        fields = fields[: len(fields) - len(kept)]
        assert len([f for f in fields if f.key == "from"]) == 1
    own_block(fields, OWN_FIELDS[mode], f"forward {mode}")
    if parse_again:
        reparses(out.raw, f"forward {mode}")


def reparses(raw: bytes, what: str) -> ParsedLetter:
    """Parse a composed letter again: it must be a letter, never a ParseError."""
    try:
        return parse_letter(raw)
    except ParseError as exc:  # pragma: no cover - the assertion says what went wrong
        raise AssertionError(f"{what} does not parse again: {exc}") from exc


def _payload(letter: ParsedLetter, plan: ReplyPlan | None) -> dict[str, Any]:
    """Give the outbox payload the responder would queue (a fixed recipient when suppressed)."""
    sender = letter.sender
    return {
        "to": plan.to if plan else "client@client.example",
        "to_name": plan.to_name if plan else (sender.name if sender else ""),
        "subject": plan.subject if plan else "Auto: " + letter.subject,
        "text": PERIOD.text,
        "in_reply_to": plan.in_reply_to if plan else letter.message_id,
        "references": list(plan.references if plan else letter.references),
    }


def check_reply(letter: ParsedLetter) -> None:
    """Plan and compose the auto-reply to the letter; its headers are its own, and it parses."""
    verdict = plan_reply(letter, arrival=NOW, period=PERIOD, addresses=frozenset({ACCOUNT.address}))
    plan = verdict if isinstance(verdict, ReplyPlan) else None
    reply = compose_reply(
        _payload(letter, plan), account_address=ACCOUNT.address, account_name=ACCOUNT.name
    )
    own_block(split_letter(reply.raw).fields, REPLY_FIELDS, "auto-reply")
    reparses(reply.raw, "auto-reply")
