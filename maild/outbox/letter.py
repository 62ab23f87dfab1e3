"""Compose a letter the CRM asks maild to send: personal sender name, autotexts, signature, font.

Pure: everything it needs comes in a ``Draft``; it gives the bytes to send and what to store.

* The From display name is the author's personal sender name on the account, else the
  account's display name.
* Autotexts in the subject, the bodies and the signature: ``{current_user}`` (the author's full
  name), ``{request_number}`` (the number of the lead the letter is created from) and
  ``{request_number_reply}`` (the same as ``[#123]``, the form replies are threaded by). Any other
  ``{name}`` is an error, never a literal in a customer's inbox.
* HTML letters are wrapped in the author's font, else the general default font; plain text is
  never touched.
* All attachments together, attached letters included, must fit the account's limit; a letter
  over it is refused with the sizes, before any SMTP traffic.
* Header values are checked: no line breaks, addresses parsed and re-encoded (RFC 2047 names).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import html
import io
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from maild.core.addresses import address_problem
from maild.core.letter import Address as LetterAddress
from maild.core.letter import AttachmentInfo, ParsedLetter
from maild.core.robots import LOOP_HEADER
from maild.outbox import mime
from maild.outbox.compose import safe_boundary, transfer_encoding

_AUTOTEXT = re.compile(r"\{([a-z_]+)\}")
_LINE_BREAK = re.compile(r"[\r\n\x00]")
_FONT = re.compile(r"^[A-Za-z0-9 ,.\-']{1,120}$")
_SIZE = re.compile(r"^\d+(?:\.\d+)?(?:pt|px|em|%)$")
_MB = 1024 * 1024
_HEADERS = mime.REGISTRY
_REPEATED = frozenset({"Date", LOOP_HEADER})  # the same for many letters: folded once
_POLICY = mime.POLICY
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


class DraftError(ValueError):
    """A letter the CRM asked for cannot be sent as it is; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class FileAttachment:
    """A file to attach: its name, type and bytes."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Draft:
    """Everything a CRM letter is composed from."""

    account_address: str
    account_name: str
    sender_name: str
    author_full_name: str
    to: str
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    signature: str = ""
    signature_html: str = ""
    font: str = ""
    request_number: int | None = None
    files: Sequence[FileAttachment] = ()
    letters: Sequence[bytes] = ()
    max_attachments_bytes: int = 25 * _MB
    now: datetime | None = None
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class Composed:
    """A composed letter: bytes, envelope, and the parsed view stored as the outgoing letter."""

    raw: bytes
    sender: str
    recipients: tuple[str, ...]
    parsed: ParsedLetter = field(repr=False)


def compose(draft: Draft) -> Composed:
    """Compose the letter or raise DraftError saying what is wrong with the draft."""
    _check_size(draft)
    _font_style(draft.font)  # a bad font is an error even for a plain-text letter
    values = _autotexts(draft)
    to, cc, bcc = (
        _addresses(draft.to, "to"),
        _addresses(draft.cc, "cc"),
        _addresses(draft.bcc, "bcc"),
    )
    if not to and not cc and not bcc:
        raise DraftError("the letter has no recipient (to, cc and bcc are empty)")
    subject = _one_line(_fill(draft.subject, values, "subject"), "subject")
    text = _fill(draft.text, values, "text_body")
    body_html = _fill(draft.html, values, "html_body")
    signature = _fill(draft.signature, values, "signature")
    signature_html = _fill(draft.signature_html, values, "signature_html")
    sender_name = _one_line(draft.sender_name, "sender name")
    plain = _with_text_signature(text, signature) if text or not body_html else ""
    letter_html = _html(body_html, signature, signature_html, draft.font) if body_html else ""
    files = [_file_part(position, item) for position, item in enumerate(draft.files)]
    fields: list[tuple[str, str]] = [
        *([("To", _listed(to))] if to else []),
        *([("Cc", _listed(cc))] if cc else []),
        ("Subject", subject),
        ("Date", email.utils.format_datetime(draft.now or datetime.now(UTC))),
        ("Message-ID", draft.message_id or _message_id(draft.account_address)),
        (LOOP_HEADER, draft.account_address),
    ]
    top = [mime.sender(sender_name, draft.account_address)]
    top += [
        mime.repeated(name, value) if name in _REPEATED else mime.shaped(name, value)
        for name, value in fields
    ]
    text_part = plain or _text_of(body_html, signature)
    if draft.letters:
        head = [("From", Address(display_name=sender_name, addr_spec=draft.account_address))]
        raw = _package_bytes([*head, *fields], text_part, letter_html, files, draft.letters)
    else:
        boundaries = [f"maild-{secrets.token_hex(12)}" for _ in range(2)]
        raw = mime.letter_bytes([h.line for h in top], text_part, letter_html, files, boundaries)
    everyone = tuple(a.addr_spec for a in (*to, *cc, *bcc))
    return Composed(
        raw,
        draft.account_address,
        everyone,
        _parsed(
            draft,
            to,
            cc,
            {name: item.value for (name, _), item in zip(fields, top[1:], strict=True)},
            subject=subject,
            text=plain,
            body_html=body_html,
        ),
    )


def _listed(addresses: list[Address]) -> str:
    """Give an address list as the email package reads a list of addresses set as a header.

    ``msg["To"] = [addresses]`` parses exactly this text, so either folds to the same line.
    """
    return ", ".join(str(address) for address in addresses)


def _file_part(position: int, item: FileAttachment) -> mime.FilePart:
    """Check a file's type and name, and give it as the part it is attached as."""
    where = f"files[{position}]"
    maintype, subtype = _content_type(item.content_type, f"{where}.content_type")
    filename = _one_line(item.filename, f"{where}.filename")
    return mime.FilePart(maintype, subtype, filename, item.content)


def _package_bytes(
    top: Sequence[tuple[str, object]],
    text: str,
    letter_html: str,
    files: Sequence[mime.FilePart],
    letters: Sequence[bytes],
) -> bytes:
    """Compose with the email package: the letters that attach stored letters, and the reference.

    ``top`` holds the letter's own headers, From to the loop marker, in order.
    """
    msg = EmailMessage(policy=_POLICY)
    for name, value in top:
        msg[name] = value
    msg.set_content(text)
    if letter_html:
        msg.add_alternative(letter_html, subtype="html")
    bodies = []
    for item in files:
        token = secrets.token_hex(16).encode("ascii") if item.content else b""
        msg.add_attachment(
            token,
            maintype=item.maintype,
            subtype=item.subtype,
            filename=item.filename,
            cte="base64",
        )
        if token:
            bodies.append((base64.b64encode(token), item.content))
    _name_boundaries(msg)
    return _with_letters(msg, bodies, letters)


def _with_letters(
    msg: EmailMessage, bodies: Sequence[tuple[bytes, bytes]], letters: Sequence[bytes]
) -> bytes:
    """Attach stored letters as message/rfc822 parts holding their original bytes, unchanged."""
    if not letters:
        return _with_bodies(msg.as_bytes(), bodies)
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed()
    everything = b"".join(letters)
    msg.set_boundary(safe_boundary(everything))
    tokens = []
    for number, raw in enumerate(letters, 1):
        token = f"maild-letter-{secrets.token_hex(16)}"
        part = EmailMessage(policy=_POLICY)
        part["Content-Type"] = "message/rfc822"
        part["Content-Disposition"] = f'attachment; filename="letter-{number}.eml"'
        part["Content-Transfer-Encoding"] = transfer_encoding(raw)
        part.set_payload(token)
        msg.attach(part)
        tokens.append((token.encode("ascii"), raw))
    out = _with_bodies(msg.as_bytes(), bodies)
    for marker, raw in tokens:
        out = out.replace(marker, raw, 1)  # the CRLF before the boundary is the boundary's own
    return out


def _name_boundaries(msg: EmailMessage) -> None:
    """Give each multipart a random boundary now.

    Left to the email package, each boundary is checked by a regular expression against the
    whole text of its part; a random 96-bit name does not occur in it.
    """
    for part in msg.walk():
        if part.is_multipart() and part.get_boundary() is None:
            part.set_boundary(f"maild-{secrets.token_hex(12)}")


def _with_bodies(out: bytes, bodies: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Put each file's base64 lines where its placeholder's are.

    The email package writes a base64 body line by line, the larger part of composing a
    letter with attachments; the same 76-column lines come from one C call here.
    """
    for marker, content in bodies:
        lines = io.BytesIO()
        mime.write_base64(lines, content)
        lines.truncate(max(lines.tell() - 2, 0))  # the line end after the last is the part's own
        out = out.replace(marker, lines.getvalue(), 1)
    return out


def part_named(raw: bytes, filename: str) -> bytes:
    """Give the decoded bytes of a stored letter's attachment by its file name; KeyError if absent."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for part in message.walk():
        if part.get_filename() == filename and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload
    raise KeyError(f"the stored letter has no attachment named {filename!r} any more")


def _check_size(draft: Draft) -> None:
    """Refuse a letter whose attachments together are over the account's limit."""
    sizes = [len(item.content) for item in draft.files] + [len(raw) for raw in draft.letters]
    total = sum(sizes)
    if total > draft.max_attachments_bytes:
        raise DraftError(
            f"attachments total {total / _MB:.1f} MB ({len(sizes)} files), over the account's "
            f"limit of {draft.max_attachments_bytes / _MB:.1f} MB (accounts.outgoing.max_attachments_mb)"
        )


def _autotexts(draft: Draft) -> dict[str, str | None]:
    """Give each known autotext's value; None where it has none for this letter."""
    number = draft.request_number
    return {
        "current_user": draft.author_full_name or None,
        "request_number": str(number) if number is not None else None,
        "request_number_reply": f"[#{number}]" if number is not None else None,
    }


def _fill(text: str, values: dict[str, str | None], where: str) -> str:
    """Replace the autotexts in a text; an unknown one, or one without a value, is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join("{" + key + "}" for key in values)
            raise DraftError(f"{where}: unknown autotext {{{name}}} (known: {known})")
        value = values[name]
        if value is None:
            why = (
                "the letter has no lead"
                if name.startswith("request")
                else "the author has no full name"
            )
            raise DraftError(f"{where}: autotext {{{name}}} has no value: {why}")
        return value

    return _AUTOTEXT.sub(one, text)


def _one_line(value: str, where: str) -> str:
    """Refuse a header value with a line break or NUL: no header injection from the CRM.

    An encoded word is no way around it: ``=?`` becomes ``= ?`` (see ``rawmail.one_line``).
    """
    if _LINE_BREAK.search(value):
        raise DraftError(f"{where}: must be one line (it contains a line break or NUL)")
    return value.strip().replace("=?", "= ?")


def _content_type(value: str, where: str) -> tuple[str, str]:
    """Split a MIME type; anything but ``type/subtype`` tokens is an error, never a header part."""
    if not value:
        return "application", "octet-stream"
    if not _MIME_TYPE.fullmatch(value):
        raise DraftError(f"{where}: {value!r} is not a MIME type such as application/pdf")
    maintype, _, subtype = value.partition("/")
    return maintype, subtype


def _addresses(value: str, where: str) -> list[Address]:
    """Parse an address list strictly; a line break or anything not an address is an error."""
    if not value.strip():
        return []
    _one_line(value, where)
    header: Any = _HEADERS(where, value)  # "to", "cc" or "bcc": an address header
    if header.defects:
        raise DraftError(f"{where}: {value!r} is not a list of addresses: {header.defects[0]}")
    out = []
    for item in header.addresses:
        local, domain = item.username, item.domain
        if (
            not local
            or "." not in domain
            or domain.startswith(".")
            or not item.addr_spec.isascii()
            or address_problem(item.addr_spec) is not None
        ):
            raise DraftError(f"{where}: {item.addr_spec or value!r} is not an email address")
        out.append(Address(display_name=item.display_name, addr_spec=item.addr_spec))
    if not out:
        raise DraftError(f"{where}: {value!r} holds no email address")
    return out


def _with_text_signature(text: str, signature: str) -> str:
    """Append the signature after the standard separator."""
    if not signature:
        return text
    return f"{text.rstrip()}\n\n-- \n{signature.strip()}\n"


def _text_of(body_html: str, signature: str) -> str:
    """Give a plain-text part for an HTML-only letter: the HTML's text, then the signature."""
    text = re.sub(r"<[^>]+>", " ", body_html)
    text = re.sub(r"[ \t]+", " ", html.unescape(text)).strip()
    return _with_text_signature(text, signature)


def _html(body_html: str, signature: str, signature_html: str, font: str) -> str:
    """Give the HTML part: the body, the signature, wrapped in the font when one is set."""
    sig = signature_html or (html.escape(signature).replace("\n", "<br>\n") if signature else "")
    content = body_html + (f"\n<br><br>-- <br>\n{sig}" if sig else "")
    style = _font_style(font)
    return f'<div style="{style}">{content}</div>' if style else content


def _font_style(font: str) -> str:
    """Turn "Verdana, 11pt" into CSS; a value that is not a plain font name is an error."""
    if not font:
        return ""
    if not _FONT.match(font):
        raise DraftError(f"font {font!r} must be letters, digits, spaces, commas, dots or dashes")
    parts = [part.strip() for part in font.split(",") if part.strip()]
    sizes = [part for part in parts if _SIZE.match(part)]
    families = [part for part in parts if part not in sizes]
    css = []
    if families:
        css.append("font-family: " + ", ".join(families))
    if sizes:
        css.append("font-size: " + sizes[-1])
    return "; ".join(css)


def _message_id(address: str) -> str:
    """Make a new Message-ID in the account's domain."""
    domain = address.rsplit("@", 1)[-1]
    return email.utils.make_msgid(domain=domain if domain.isascii() else "maild.invalid")


def _parsed(
    draft: Draft,
    to: list[Address],
    cc: list[Address],
    values: dict[str, str],
    *,
    subject: str,
    text: str,
    body_html: str,
) -> ParsedLetter:
    """Describe the composed letter as maild stores letters, without parsing it back.

    ``values`` gives the headers' values as the email package reads them (Message-ID, Date).
    """
    attachments = [
        AttachmentInfo(position, item.filename, item.content_type, len(item.content))
        for position, item in enumerate(draft.files)
    ] + [
        AttachmentInfo(len(draft.files) + n, f"letter-{n + 1}.eml", "message/rfc822", len(raw))
        for n, raw in enumerate(draft.letters)
    ]
    return ParsedLetter(
        message_id=values["Message-ID"],
        from_=(LetterAddress(draft.account_address.lower(), draft.sender_name),),
        to=tuple(LetterAddress(a.addr_spec.lower(), a.display_name) for a in to),
        cc=tuple(LetterAddress(a.addr_spec.lower(), a.display_name) for a in cc),
        subject=subject,
        sent_at=email.utils.parsedate_to_datetime(values["Date"]),
        text=text,
        html=body_html,
        attachments=tuple(attachments),
    )
