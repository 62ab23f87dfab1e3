"""The only mail-parser importer: raw bytes in, a plain ParsedLetter out, safe to run in a worker process."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import mailparser

from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.errors import ParseError

_Letter = TypeVar("_Letter", bound=ParsedLetter)
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_MAX_HEADER_VALUE = 4000


def clean_text(value: Any) -> str:
    """Make a string every database accepts: no NUL, no lone surrogates."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _header_line(value: Any) -> str:
    """Flatten a header value to one clean line, so nothing from a letter can inject a header."""
    text = clean_text(value)
    return " ".join(text.split())[:_MAX_HEADER_VALUE]


def _addresses(pairs: Any) -> tuple[Address, ...]:
    """Turn mail-parser's (name, address) pairs into Address values, dropping empty ones."""
    out = []
    for pair in pairs or ():
        try:
            name, address = pair
        except (TypeError, ValueError):
            continue
        address = _header_line(address).lower()
        if address:
            out.append(Address(address=address, name=_header_line(name)))
    return tuple(out)


def _message_ids(value: Any) -> tuple[str, ...]:
    """Pick the <id> tokens out of a References or In-Reply-To header."""
    return tuple(_MSGID_RE.findall(clean_text(value)))


def _first_id(value: Any) -> str:
    """Give the first <id> of a header, or the cleaned value when it has no brackets."""
    ids = _message_ids(value)
    return ids[0] if ids else _header_line(value)[:998]


def _payload_bytes(attachment: dict[str, Any]) -> bytes:
    """Decode an attachment's payload as mail-parser hands it (base64 when binary)."""
    payload = attachment.get("payload") or ""
    if attachment.get("binary"):
        try:
            return base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return clean_text(payload).encode("utf-8")
    return clean_text(payload).encode("utf-8", "replace")


def _attachments(raw_attachments: list[dict[str, Any]]) -> tuple[AttachmentInfo, ...]:
    """List attachments with their decoded sizes and hashes, not their content."""
    out = []
    for position, item in enumerate(raw_attachments or ()):
        content = _payload_bytes(item)
        disposition = clean_text(item.get("content-disposition")).split(";")[0].strip().lower()
        out.append(
            AttachmentInfo(
                position=position,
                filename=_header_line(item.get("filename"))[:1000],
                content_type=_header_line(item.get("mail_content_type"))[:255]
                or "application/octet-stream",
                size=len(content),
                content_id=_header_line(item.get("content-id"))[:998],
                disposition=disposition[:32],
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
    return tuple(out)


def _defects(mail: Any) -> tuple[str, ...]:
    """Flatten mail-parser's defect structure into readable strings."""
    out: list[str] = []
    for entry in mail.defects or ():
        if isinstance(entry, dict):
            for part, items in entry.items():
                out.extend(f"{part}: {clean_text(item)}" for item in items)
        else:
            out.append(clean_text(entry))
    return tuple(out)


def _date(value: Any) -> datetime | None:
    """Give the Date header as aware UTC, or None when absent or unreadable."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _headers(mail: Any) -> dict[str, str]:
    """Keep the raw headers as flat strings for rule conditions; names lower-cased, repeats joined."""
    out: dict[str, str] = {}
    message = mail.message
    if message is None:
        return out
    for name, value in message.items():
        key = _header_line(name).lower()
        if not key:
            continue
        try:
            text = _header_line(value)
        except Exception:  # a malformed header must not lose the letter
            text = ""
        out[key] = f"{out[key]}\n{text}" if key in out else text
    return out


@dataclass(frozen=True, slots=True)
class HashedLetter(ParsedLetter):
    """A parsed letter with the SHA-256 of its raw bytes, hashed in the parser process, not the loop."""

    raw_sha256: str = ""


def parse_letter(raw: bytes) -> ParsedLetter:
    """Parse one raw letter; any failure becomes ParseError so the caller keeps it raw."""
    return _parse(raw, ParsedLetter)


def parse_and_hash(raw: bytes) -> HashedLetter:
    """Parse one raw letter and hash its bytes, both off the event loop; raise ParseError as parse_letter."""
    return _parse(raw, HashedLetter, raw_sha256=hashlib.sha256(raw).hexdigest())


def _parse(raw: bytes, kind: type[_Letter], **extra: Any) -> _Letter:
    """Build a ``kind`` from mail-parser's reading of ``raw``; any failure becomes ParseError."""
    try:
        mail = mailparser.parse_from_bytes(raw)
        return kind(
            message_id=_first_id(mail.message_id),
            in_reply_to=_first_id(mail.in_reply_to),
            references=_message_ids(mail.references),
            from_=_addresses(mail.from_),
            to=_addresses(mail.to),
            cc=_addresses(mail.cc),
            reply_to=_addresses(mail.reply_to),
            subject=_header_line(mail.subject),
            sent_at=_date(mail.date),
            text=clean_text("\n".join(mail.text_plain or ())),
            html=clean_text("\n".join(mail.text_html or ())),
            attachments=_attachments(mail.attachments),
            defects=_defects(mail),
            headers=_headers(mail),
            **extra,
        )
    except RecursionError as exc:
        raise ParseError("letter is nested too deeply to parse") from exc
    except Exception as exc:  # mail-parser and the stdlib raise many kinds on hostile input
        raise ParseError(f"cannot parse letter: {type(exc).__name__}: {exc}") from exc


def parse_many(raws: list[bytes]) -> list[HashedLetter | str]:
    """Parse and hash several letters in one worker call (one round trip), a failure becoming its reason."""
    out: list[HashedLetter | str] = []
    for raw in raws:
        try:
            out.append(parse_and_hash(raw))
        except ParseError as exc:
            out.append(str(exc))
    return out
