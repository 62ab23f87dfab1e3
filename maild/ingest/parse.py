"""The only mail-parser importer: raw bytes in, a plain ParsedLetter out, safe to run in a worker process."""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.feedparser
import email.message
import email.parser
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import mailparser

from maild.core.letter import Address, AttachmentInfo, ParsedLetter
from maild.core.rawmail import split_letter
from maild.core.robots import LOOP_HEADER
from maild.errors import ParseError

_Letter = TypeVar("_Letter", bound=ParsedLetter)
_MSGID_RE = re.compile(r"<[^<>\s\x00-\x1f\x7f]+>")
_MAX_HEADER_VALUE = 4000
_MAX_ID = 998
_RFC822 = re.compile(rb"^(content-type:[ \t]*)message/rfc822", re.IGNORECASE | re.MULTILINE)
_CHARSET = re.compile(rb'(charset\s*=\s*)("[^"\r\n]*"?|[^;\r\n]*)', re.IGNORECASE)

# What mail-parser is given of a letter's header block. The email package's header decoding is
# quadratic in places (encoded words, quotes, many fields), so a header made to exploit it would
# hold a parser for hours; real headers stay far below these. The raw letter is stored whole.
MAX_HEADER_FIELDS = 1000
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 256 * 1024
# Fields kept past those limits (once each), so a bomb cannot push the sender or subject out.
_KEY_FIELDS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "return-path",
        "auto-submitted",
        "precedence",
        "list-id",
        "x-auto-response-suppress",
        LOOP_HEADER.lower(),
    }
)
# A base64 attachment longer than this is decoded and hashed this many characters at a time, so
# its content never stands whole in memory beside its text; a letter is fed to the parser in
# pieces of _FEED_BYTES, so its text never stands whole beside the parsed parts.
_B64_SLICE = 1024 * 1024
_NOT_B64 = bytes(
    set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
)
_FEED_BYTES = 64 * 1024
# What a parsed letter keeps: defects listed, References ids, text per header name.
MAX_DEFECTS = 100
MAX_REFERENCES = 100
_MAX_HEADER_TEXT = 64 * 1024


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


def _references(value: Any) -> tuple[str, ...]:
    """Keep the first and the newest ids of References (RFC 5322 trims so), none over 998 chars."""
    ids = [item for item in _message_ids(value) if len(item) <= _MAX_ID]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[1 - MAX_REFERENCES :]
    return tuple(ids)


def _first_id(value: Any) -> str:
    """Give the first <id> of a header, or the cleaned value when it has no brackets."""
    ids = _message_ids(value)
    return ids[0] if ids else _header_line(value)[:_MAX_ID]


def _payload_bytes(attachment: dict[str, Any]) -> bytes:
    """Decode an attachment's payload as mail-parser hands it (base64 when binary)."""
    payload = attachment.get("payload") or ""
    if attachment.get("binary"):
        try:
            return base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return clean_text(payload).encode("utf-8")
    return clean_text(payload).encode("utf-8", "replace")


def _payload_digest(attachment: dict[str, Any]) -> tuple[int, str]:
    """Give an attachment's decoded size and SHA-256; a big base64 one is decoded a slice at a time."""
    payload = attachment.get("payload") or ""
    if attachment.get("binary") and isinstance(payload, str) and len(payload) > _B64_SLICE:
        digest = _b64_digest(payload)
        if digest is not None:
            return digest
    content = _payload_bytes(attachment)
    return len(content), hashlib.sha256(content).hexdigest()


def _b64_digest(payload: str) -> tuple[int, str] | None:
    """Decode base64 in slices, as ``b64decode`` would the whole; None where only the whole can say.

    Each slice before the first ``=`` gives its data characters in whole quads (the rest goes on
    to the next slice), so the decoder starts every slice at a quad boundary, just as it stands
    there in one pass over the whole; the last slice, from the first ``=`` on, is decoded as it
    comes, padding and all. Non-ASCII text and a last slice that does not decode are left to the
    whole decode, whose fallback then decides.
    """
    end = payload.find("=")
    end = len(payload) if end < 0 else end
    digest = hashlib.sha256()
    size = 0
    carry = b""
    start = 0
    try:
        while end - start > _B64_SLICE:
            data = carry + payload[start : start + _B64_SLICE].encode("ascii")
            data = data.translate(None, _NOT_B64)
            whole = len(data) - len(data) % 4
            decoded = binascii.a2b_base64(data[:whole])
            digest.update(decoded)
            size += len(decoded)
            carry = data[whole:]
            start += _B64_SLICE
        decoded = binascii.a2b_base64(carry + payload[start:].encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    digest.update(decoded)
    return size + len(decoded), digest.hexdigest()


def _attachments(raw_attachments: list[dict[str, Any]]) -> tuple[AttachmentInfo, ...]:
    """List attachments with their decoded sizes and hashes, not their content."""
    out = []
    for position, item in enumerate(raw_attachments or ()):
        size, sha256 = _payload_digest(item)
        disposition = clean_text(item.get("content-disposition")).split(";")[0].strip().lower()
        out.append(
            AttachmentInfo(
                position=position,
                filename=_header_line(item.get("filename"))[:1000],
                content_type=_header_line(item.get("mail_content_type"))[:255]
                or "application/octet-stream",
                size=size,
                content_id=_header_line(item.get("content-id"))[:998],
                disposition=disposition[:32],
                sha256=sha256,
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
    if len(out) > MAX_DEFECTS:
        out[MAX_DEFECTS:] = [f"... and {len(out) - MAX_DEFECTS} more defects"]
    return tuple(out)


def _date(value: Any) -> datetime | None:
    """Give the Date header as aware UTC, or None when absent or unreadable."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _headers(mail: Any) -> dict[str, str]:
    """Keep the raw headers as flat strings for rule conditions; names lower-cased, repeats joined."""
    message = mail.message
    if message is None:
        return {}
    return _header_fields(message)


def _header_fields(message: email.message.Message) -> dict[str, str]:
    """Flatten a message's header fields as rule conditions read them, each value one clean line."""
    values: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for name, value in message.items():
        key = _header_line(name).lower()
        if not key or sizes.get(key, 0) > _MAX_HEADER_TEXT:
            continue
        try:
            text = _header_line(value)
        except Exception:  # a malformed header must not lose the letter
            text = ""
        values.setdefault(key, []).append(text)
        sizes[key] = sizes.get(key, 0) + len(text) + 1
    return {key: "\n".join(texts) for key, texts in values.items()}


def parse_header_block(raw: bytes) -> dict[str, str]:
    """Read only a letter's header fields, as parse_letter keeps them, for rules on stored letters.

    ``raw`` may be the letter's first bytes only: the body is not read. A header that cannot be
    read at all gives no fields, as a letter without those headers would.
    """
    try:
        bounded, _ = bounded_header(raw)
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        return _header_fields(parser.parsebytes(bounded))
    except Exception:  # a hostile header must not stop the rules on the other letters
        return {}


def bounded_header(raw: bytes) -> tuple[bytes, str | None]:
    """Give the bytes to parse: the letter itself, or its header cut to the limits and a defect."""
    if _surely_within_limits(raw):
        return raw, None
    letter = split_letter(raw)
    fields = letter.fields
    total = sum(len(field.raw) for field in fields)
    if (
        len(fields) <= MAX_HEADER_FIELDS
        and total <= MAX_HEADER_BYTES
        and all(len(field.raw) <= MAX_FIELD_BYTES for field in fields)
    ):
        return raw, None
    kept: list[bytes] = []
    used = cut = 0
    seen: set[str] = set()
    for field in fields:
        data = field.raw
        too_long = len(data) > MAX_FIELD_BYTES
        if too_long:
            data = data[:MAX_FIELD_BYTES].rstrip(b"\r\n") + letter.linesep
        fits = len(kept) < MAX_HEADER_FIELDS and used + len(data) <= MAX_HEADER_BYTES
        if fits or (field.key in _KEY_FIELDS and field.key not in seen):
            kept.append(data)
            used += len(data)
            cut += too_long
            seen.add(field.key)
    defect = (
        f"HeaderLimitDefect: the header has {len(fields)} fields and {total} bytes; "
        f"parsed {len(kept)} fields ({cut} cut to {MAX_FIELD_BYTES} bytes), "
        f"the limits being {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes; "
        "the raw letter is stored whole"
    )
    return b"".join(kept) + letter.body, defect


def _surely_within_limits(raw: bytes) -> bool:
    """Tell, without splitting fields, that a header ending early with few lines cannot break a limit.

    The header ends at the first empty line at the latest, so its fields hold at most the bytes
    before it and are no more than its lines: under MAX_FIELD_BYTES and MAX_HEADER_FIELDS, every
    limit holds. Anything else (no empty line, a long header, lone-CR line ends) is split.
    """
    ends = [at for at in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if at >= 0]
    if not ends or min(ends) >= MAX_FIELD_BYTES:
        return False
    head = raw[: min(ends) + 1]
    return head.count(b"\n") + head.count(b"\r") < MAX_HEADER_FIELDS


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
        bounded, trimmed = bounded_header(raw)
        mail, renamed = _mail_of(bounded)
        defects = tuple(d for d in (trimmed, renamed) if d) + _defects(mail)
        text = clean_text("\n".join(mail.text_plain or ()))
        return kind(
            message_id=_first_id(mail.message_id),
            in_reply_to=_first_id(mail.in_reply_to),
            references=_references(mail.references),
            from_=_addresses(mail.from_),
            to=_addresses(mail.to),
            cc=_addresses(mail.cc),
            reply_to=_addresses(mail.reply_to),
            subject=_header_line(mail.subject),
            sent_at=_date(mail.date),
            text=text,
            html=clean_text("\n".join(mail.text_html or ())),
            attachments=_attachments(mail.attachments),
            defects=defects,
            headers=_headers(mail),
            text_utf8=text.encode("utf-8", "surrogatepass"),
            **extra,
        )
    except RecursionError as exc:
        raise ParseError("letter is nested too deeply to parse") from exc
    except Exception as exc:  # mail-parser and the stdlib raise many kinds on hostile input
        raise ParseError(f"cannot parse letter: {type(exc).__name__}: {exc}") from exc


class _MailParser(mailparser.MailParser):  # type: ignore[misc]
    """mail-parser without its two summary dicts, and fed the letter in pieces.

    maild reads the parts, and the dicts cost a third of a parse. ``email.message_from_bytes``
    decodes the whole letter into one string and wraps it in a StringIO of four bytes a
    character before reading it 8 KB at a time: for a 25 MB letter, 130 MB that feeding the
    same bytes in pieces never needs, and that the email package reads the same either way.
    """

    @classmethod
    def from_bytes(cls, bt: bytes) -> Any:
        """Parse as ``MailParser.from_bytes``, feeding the bytes to the email package in pieces."""
        return cls._parse_guarded(lambda: _message_from_pieces(bt))

    def _make_mail(self, complete: bool = True) -> dict[str, Any]:
        """Build nothing: ``mail`` and ``mail_partial`` re-read every part and header maild reads itself."""
        return {}


def _message_from_pieces(raw: bytes) -> email.message.Message:
    """Build the message ``email.message_from_bytes`` builds, without the letter whole as text."""
    feeder = email.feedparser.BytesFeedParser(policy=email.policy.compat32)
    for start in range(0, len(raw), _FEED_BYTES):
        feeder.feed(raw[start : start + _FEED_BYTES])
    return feeder.close()


def _mail_of(raw: bytes) -> tuple[Any, str | None]:
    """Run mail-parser; when an attached letter trips it, parse again reading those as files.

    mail-parser re-flattens attached letters and lets the email package's errors out of the
    whole parse: CharsetError for a charset name that is not ASCII, HeaderParseError for a
    header holding a vertical tab. Then non-ASCII charset names are read as x-unknown-8bit and
    attached letters as plain files, and a defect says so.
    """
    try:
        return _MailParser.from_bytes(raw), None
    except email.errors.MessageError as exc:
        calmer = _RFC822.sub(rb"\1application/octet-stream", _CHARSET.sub(_ascii_charset, raw))
        defect = (
            f"AttachedLetterDefect: {type(exc).__name__}: {clean_text(exc)[:200]}; "
            "attached letters were read as files, 8-bit charset names as x-unknown-8bit"
        )
        return _MailParser.from_bytes(calmer), defect


def _ascii_charset(match: re.Match[bytes]) -> bytes:
    """Give a charset parameter back as it was, or named x-unknown-8bit when it is not ASCII."""
    if match.group(2).isascii():
        return match.group(0)
    return match.group(1) + b"x-unknown-8bit"


def parse_many(raws: list[bytes]) -> list[HashedLetter | str]:
    """Parse and hash several letters in one worker call (one round trip), a failure becoming its reason."""
    out: list[HashedLetter | str] = []
    for raw in raws:
        try:
            out.append(parse_and_hash(raw))
        except ParseError as exc:
            out.append(str(exc))
    return out
