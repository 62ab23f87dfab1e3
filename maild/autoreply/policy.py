"""Whether to answer a letter automatically, as a pure function: a reply plan or the reason not to.

The checks are those of RFC 3834, RFC 5230 (Sieve vacation) and Dovecot Pigeonhole, plus the
loop checks helpdesks learned the hard way; docs/config.md lists them in order. Every time
decision uses the letter's arrival time (IMAP INTERNALDATE), never the clock, so a daemon that
catches up after downtime decides exactly what it would have decided live. The one check that
needs the database, the once-per-interval throttle, is claimed after this (maild/db/autoreply.py).
"""

from __future__ import annotations

import email.header
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from maild.core import robots
from maild.core.addresses import address_problem
from maild.core.decision import Autoreply
from maild.core.letter import ParsedLetter
from maild.core.rawmail import address_pairs

#: The subject of a reply to a letter without one.
NO_SUBJECT = "Automated reply"
#: How much of the original subject a reply repeats; the rest becomes "…".
MAX_SUBJECT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Period:
    """One account's auto-reply as configured: on or off, when, what it says, how often."""

    enabled: bool
    start: datetime | None
    end: datetime | None
    text: str
    subject: str = ""
    interval: timedelta = timedelta(days=3)
    null_sender: bool = True

    def covers(self, when: datetime) -> bool:
        """Tell whether a time is inside [start, end], both ends included."""
        if self.start is None or self.end is None:
            return False
        return self.start <= when <= self.end


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """An auto-reply to send, once the throttle for ``key`` is claimed."""

    to: str
    key: str
    to_name: str
    subject: str
    text: str
    in_reply_to: str
    references: tuple[str, ...]
    arrival: datetime
    text_rule: str | None = None


@dataclass(frozen=True, slots=True)
class Suppressed:
    """No auto-reply, and why (recorded on the letter and logged)."""

    reason: str


def plan_reply(
    letter: ParsedLetter,
    *,
    arrival: datetime | None,
    period: Period,
    addresses: frozenset[str],
    switched_off_at: datetime | None = None,
    override: tuple[Autoreply, str] | None = None,
) -> ReplyPlan | Suppressed:
    """Run every check on one letter; give the reply to send or the first check it fails."""
    headers = letter.headers
    if not period.enabled:
        return Suppressed("auto-reply is disabled")
    if arrival is None:
        return Suppressed("the letter has no arrival time (INTERNALDATE)")
    if not period.covers(arrival):
        return Suppressed(f"arrived {arrival.isoformat()}, outside the period")
    if switched_off_at is not None and arrival >= switched_off_at:
        return Suppressed(f"switched off by hand at {switched_off_at.isoformat()}")
    if override is not None and override[0].text is None:
        return Suppressed(f'rule "{override[1]}" says no auto-reply')
    sender = robots.return_path(headers)
    if sender is None:
        return Suppressed("no Return-Path: the envelope sender is unknown")
    if not sender:
        return Suppressed("null envelope sender <> (a bounce)")
    problem = address_problem(sender)
    if problem is not None:
        return Suppressed(f"the Return-Path is not one plain address ({problem})")
    key = sender.lower()
    own = {address.lower() for address in addresses}
    reason = _robot_reason(headers, key, own)
    if reason is not None:
        return Suppressed(reason)
    text = override[0].text if override is not None and override[0].text else period.text
    return ReplyPlan(
        to=sender,
        key=key,
        to_name=_display_name(letter, key),
        subject=reply_subject(letter.subject, period.subject),
        text=text,
        in_reply_to=letter.message_id if letter.message_id.startswith("<") else "",
        references=letter.references,
        arrival=arrival,
        text_rule=override[1] if override is not None else None,
    )


def _robot_reason(headers: Mapping[str, str], sender: str, own: set[str]) -> str | None:
    """Give the first of checks 3 and 5 to 11 the letter fails, or None when it passes them all."""
    if sender in own:
        return "the sender is the account itself"
    listed = robots.list_header(headers)
    if listed is not None:
        return f"mailing list ({listed})"
    submitted = robots.auto_submitted(headers)
    if submitted is not None:
        return f"Auto-Submitted: {submitted}"
    precedence = robots.bulk_precedence(headers)
    if precedence is not None:
        return f"Precedence: {precedence}"
    if robots.suppresses_out_of_office(headers):
        return "X-Auto-Response-Suppress asks for none"
    if robots.is_system_address(sender):
        return f"system address {sender}"
    if not own & robots.recipient_addresses(headers):
        return "the account is not in To, Cc or Bcc"
    if robots.is_noreply_address(sender):
        return f"no-reply address {sender}"
    marker = robots.autoreply_header(headers)
    if marker is not None:
        return f"another auto-responder's letter ({marker})"
    if robots.is_report(headers):
        return "a delivery or read report (multipart/report)"
    if robots.has_loop_marker(headers):
        return "maild sent this letter (loop marker)"
    return None


def period_state(period: Period, now: datetime, switched_off_at: datetime | None = None) -> str:
    """Name the auto-reply's state at a time: disabled, scheduled, on, ended or off by hand."""
    if not period.enabled or period.start is None or period.end is None:
        return "disabled"
    if now < period.start:
        return "scheduled"
    if now > period.end:
        return "ended"
    if switched_off_at is not None and now >= switched_off_at:
        return "off by hand"
    return "on"


def reply_subject(original: str, configured: str = "") -> str:
    """Give the reply's subject: the configured one, else "Auto: " and the original, shortened."""
    if configured.strip():
        return " ".join(configured.split())
    subject = " ".join(original.split())
    if not subject:
        return NO_SUBJECT
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1].rstrip() + "…"
    return f"Auto: {subject}"


def _display_name(letter: ParsedLetter, address: str) -> str:
    """Give the name Sender or From shows for the address answered; "" when they show another."""
    for mailbox in letter.from_:
        if mailbox.address.lower() == address and mailbox.name:
            return mailbox.name
    for value in robots.header_values(letter.headers, "Sender"):
        for name, found in address_pairs([value]):
            if found.lower() == address and name:
                return _decoded(name)
    return ""


def _decoded(name: str) -> str:
    """Decode an RFC 2047 display name; a malformed one is kept as written."""
    try:
        return str(email.header.make_header(email.header.decode_header(name)))
    except (ValueError, LookupError, UnicodeError):
        return name
