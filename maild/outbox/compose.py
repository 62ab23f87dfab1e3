"""Turn a stored letter into the letter a forward sends, in one of three modes; pure functions.

* ``attach``: a new letter from the account, ``Fwd: <subject>``, with the original attached
  unchanged as ``message/rfc822``.
* ``resend``: the original content sent from the account's address. Dropped from the
  original are the headers that would fail or mislead at the recipient once the letter comes
  from another sender: the signatures and authentication verdicts that no longer hold
  (DKIM-Signature, DomainKey-Signature, X-Google-DKIM-Signature, ARC-*,
  Authentication-Results, Received-SPF), the addresses bounces and receipts would go to
  (Return-Path, Sender, Errors-To, Disposition-Notification-To, Return-Receipt-To,
  X-Confirm-Reading-To), Bcc (it must not reach a new reader), and the From,
  X-Original-From and Auto-Submitted that are replaced. Every other header and the body
  bytes are kept exactly.
* ``redirect``: the original bytes with a ``Resent-*`` block (RFC 5322 §3.6.6) on top;
  only the envelope changes.

Every composed letter carries the loop marker (``X-Maild-Loop: <account address>``);
``attach`` and ``resend`` also say ``Auto-Submitted: auto-generated`` (RFC 3834). Text taken
from the original is decoded, put on one line and re-encoded (RFC 2047), never copied raw
into a new header, so a subject with a line break cannot add a header.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart

from maild.core.decision import ForwardMode
from maild.core.rawmail import RawLetter, decode_words, mailboxes, one_line, split_letter
from maild.core.robots import LOOP_HEADER

__all__ = [
    "Identity",
    "Outgoing",
    "forward",
    "forward_attach",
    "forward_redirect",
    "forward_resend",
]

RESEND_DROPPED = frozenset(
    {
        "dkim-signature",
        "domainkey-signature",
        "x-google-dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "authentication-results",
        "received-spf",
        "return-path",
        "sender",
        "errors-to",
        "disposition-notification-to",
        "return-receipt-to",
        "x-confirm-reading-to",
        "bcc",
        "from",
        "x-original-from",
        "auto-submitted",
    }
)

_SAFE_ADDRESS = re.compile(r"[^@\s<>()\[\]\\,;:\"]+@[^@\s<>()\[\]\\,;:\"]+")
_FWD_PREFIX = re.compile(r"^\s*(?:fwd?|fw)\s*:", re.IGNORECASE)
_LONGEST_LINE = 998
_POLICY = email.policy.SMTP
# The most of the original's text a composed header takes, and the most senders Reply-To names:
# the email package folds long values in quadratic time (a 1 MB subject took 88 s).
MAX_COPIED = 1000
MAX_REPLY_TO = 20


@dataclass(frozen=True, slots=True)
class Identity:
    """The account a forward is sent for: its address and the name shown with it."""

    address: str
    name: str = ""

    def mailbox(self) -> Address:
        """Give the account as a From mailbox, the name encoded as needed."""
        return Address(display_name=one_line(self.name), addr_spec=_checked(self.address))

    @property
    def label(self) -> str:
        """Give how the account is named in ``"Sender via <label>"``."""
        return one_line(self.name) or self.address


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A composed letter ready for the relay: its bytes and its envelope."""

    raw: bytes
    sender: str
    recipients: tuple[str, ...]


def forward(
    mode: ForwardMode,
    raw: bytes,
    *,
    account: Identity,
    to: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> Outgoing:
    """Compose a forward of ``raw`` to ``to`` in the given mode.

    ``message_id`` names the new letter (attach) or the resending (redirect); resend keeps
    the original's. Given the same on every attempt, a letter sent twice (a crash between
    the relay's yes and the outbox row's update) reaches its recipient as one letter twice.
    """
    if mode == "attach":
        return forward_attach(raw, account=account, to=to, now=now, message_id=message_id)
    if mode == "redirect":
        return forward_redirect(raw, account=account, to=to, now=now, message_id=message_id)
    return forward_resend(raw, account=account, to=to, now=now)


def forward_attach(
    raw: bytes,
    *,
    account: Identity,
    to: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> Outgoing:
    """Compose a new letter from the account with the original attached unchanged."""
    letter = split_letter(raw)
    boundary = safe_boundary(raw)
    encoding = transfer_encoding(raw)
    headers: list[tuple[str, object]] = [
        ("From", account.mailbox()),
        ("To", Address(addr_spec=_checked(to))),
        ("Subject", _fwd_subject(_first(letter, "Subject"))),
        ("Date", _now(now)),
        ("Message-ID", message_id or _message_id(account)),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    if encoding != "7bit":
        headers.append(("Content-Transfer-Encoding", encoding))
    headers += [("Auto-Submitted", "auto-generated"), *_earlier_markers(letter, account)]
    headers.append((LOOP_HEADER, account.address))
    crlf = b"\r\n"
    delimiter = b"--" + boundary.encode("ascii")
    note = _note_part(letter, account)
    attached = _header_block(
        [
            ("Content-Type", "message/rfc822"),
            ("Content-Disposition", 'attachment; filename="forwarded.eml"'),
            ("Content-Transfer-Encoding", encoding),
        ],
        crlf,
    )
    body = b"".join(
        [
            crlf,
            delimiter + crlf,
            note if note.endswith(crlf) else note + crlf,
            delimiter + crlf,
            attached + crlf,
            raw,
            crlf + delimiter + b"--" + crlf,
        ]
    )
    return Outgoing(_header_block(headers, crlf) + body, account.address, (_checked(to),))


def forward_resend(
    raw: bytes, *, account: Identity, to: str, now: datetime | None = None
) -> Outgoing:
    """Compose the original content sent from the account, replies going to the original sender."""
    letter = split_letter(raw)
    from_field = letter.first("From")
    original_from = from_field.raw_value if from_field is not None else ""
    senders = mailboxes(original_from)[:MAX_REPLY_TO]
    shown = (senders[0][0] or senders[0][1])[:MAX_COPIED] if senders else ""
    name = f"{shown} via {account.label}" if shown else account.label
    headers: list[tuple[str, object]] = [
        ("From", Address(display_name=name, addr_spec=_checked(account.address)))
    ]
    reply_to = _addresses(senders)
    if letter.first("Reply-To") is None and reply_to:
        headers.append(("Reply-To", reply_to))
    if original_from:
        headers.append(("X-Original-From", one_line(decode_words(original_from))[:MAX_COPIED]))
    headers += [("Auto-Submitted", "auto-generated"), (LOOP_HEADER, account.address)]
    kept = [field.raw for field in letter.fields if field.key not in RESEND_DROPPED]
    if kept and not kept[-1].endswith((b"\n", b"\r")):
        kept[-1] += letter.linesep
    rest = letter.body
    if not rest.startswith((b"\n", b"\r")):
        rest = letter.linesep + rest
    if kept and kept[-1].endswith(b"\r") and rest.startswith(b"\n"):
        # a bare CR meeting the blank line's LF would make one CRLF of them, and the body's
        # first lines headers of the letter sent (the field that stood between them is dropped)
        kept[-1] += b"\n"
    head = _header_block(headers, letter.linesep)
    return Outgoing(head + b"".join(kept) + rest, account.address, (_checked(to),))


def forward_redirect(
    raw: bytes,
    *,
    account: Identity,
    to: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> Outgoing:
    """Give the original bytes with a Resent- block and the loop marker prepended."""
    linesep = split_letter(raw).linesep
    headers: list[tuple[str, object]] = [
        ("Resent-Date", _now(now)),
        ("Resent-From", account.mailbox()),
        ("Resent-To", Address(addr_spec=_checked(to))),
        ("Resent-Message-ID", message_id or _message_id(account)),
        (LOOP_HEADER, account.address),
    ]
    return Outgoing(_header_block(headers, linesep) + raw, account.address, (_checked(to),))


def _earlier_markers(letter: RawLetter, account: Identity) -> list[tuple[str, object]]:
    """Carry the loop markers of earlier hops into a new letter, so a loop is seen in any mode."""
    own = account.address.lower()
    seen: set[str] = set()
    out: list[tuple[str, object]] = []
    for value in letter.values(LOOP_HEADER):
        marker = one_line(value).strip("<> ").lower()
        if _SAFE_ADDRESS.fullmatch(marker) and marker.isascii() and marker not in seen | {own}:
            seen.add(marker)
            out.append((LOOP_HEADER, marker))
    return out


def _checked(address: str) -> str:
    """Refuse an address that could smuggle a header or an SMTP parameter (ASCII only)."""
    if not _SAFE_ADDRESS.fullmatch(address) or not address.isascii() or not address.isprintable():
        raise ValueError(f"not a plain address: {address!r}")
    return address


def _header_block(headers: Sequence[tuple[str, object]], linesep: bytes) -> bytes:
    """Fold new headers with the email package, so every value is encoded and on its own lines."""
    policy = _POLICY.clone(linesep="\n" if linesep == b"\n" else "\r\n")
    message = EmailMessage(policy=policy)
    for name, value in headers:
        message[name] = value
    return b"".join(policy.fold_binary(name, value) for name, value in message.items())


def _first(letter: RawLetter, name: str) -> str:
    """Give a header's first decoded value on one line (at most MAX_COPIED characters), or ``""``."""
    values = letter.values(name)
    return one_line(values[0])[:MAX_COPIED] if values else ""


def _fwd_subject(subject: str) -> str:
    """Prefix ``Fwd:`` once: a subject already forwarded keeps its single prefix."""
    if not subject:
        return "Fwd: (no subject)"
    return subject if _FWD_PREFIX.match(subject) else f"Fwd: {subject}"


def _note_part(letter: RawLetter, account: Identity) -> bytes:
    """Give the short text part that says what was forwarded, from whom and when."""
    lines = [f"Forwarded automatically for {account.address}.", "", "--- Forwarded message ---"]
    for name in ("From", "Date", "Subject", "To", "Cc"):
        value = _first(letter, name)
        if value:
            lines.append(f"{name}: {value}")
    lines += ["", "The original letter is attached unchanged.", ""]
    text = "\n".join(lines)
    part = MIMEPart(policy=_POLICY)
    encoding = "7bit" if text.isascii() else "quoted-printable"
    part.set_content(text, subtype="plain", charset="utf-8", cte=encoding)
    return part.as_bytes(policy=_POLICY)


def _addresses(pairs: list[tuple[str, str]]) -> list[Address]:
    """Turn parsed (name, address) pairs into mailboxes, skipping any that will not encode."""
    out = []
    for name, address in pairs:
        if not address.isascii():
            continue
        try:
            out.append(Address(display_name=name, addr_spec=address))
        except (ValueError, IndexError, TypeError, HeaderParseError):
            continue  # e.g. a domain ending in a dot: that sender is left out of Reply-To
    return out


def _now(now: datetime | None) -> datetime:
    """Give the date of the composed letter: the one given, or the current time in UTC."""
    return now if now is not None else datetime.now(UTC)


def forward_message_id(row: str, account: Identity) -> str:
    """Name a forward after its outbox row, so every attempt at it carries the same Message-ID."""
    digest = hashlib.sha256(row.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"<{digest}.forward@{_id_domain(account)}>"


def _id_domain(account: Identity) -> str:
    """Give the domain of the account's Message-IDs: its address's, if ASCII."""
    domain = account.address.rsplit("@", 1)[-1]
    return domain if domain.isascii() else "maild.invalid"


def _message_id(account: Identity) -> str:
    """Make a new Message-ID in the account's domain."""
    return email.utils.make_msgid(domain=_id_domain(account))


def safe_boundary(raw: bytes) -> str:
    """Pick a MIME boundary that does not occur in the attached letter."""
    while True:
        boundary = f"maild-{secrets.token_hex(12)}"
        if boundary.encode("ascii") not in raw:
            return boundary


def transfer_encoding(raw: bytes) -> str:
    """Label the attached bytes honestly: 7bit, 8bit, or binary (NUL or overlong lines)."""
    if b"\0" in raw or any(len(line) > _LONGEST_LINE for line in re.split(rb"\r\n|\n|\r", raw)):
        return "binary"
    return "7bit" if raw.isascii() else "8bit"
