"""Write a CRM letter's MIME bytes directly: the email package's own output, at a fraction of its cost.

Building an ``EmailMessage`` parses and re-folds every header several times (set, moved into a
part, given a parameter, written); that was most of the CPU of sending a letter. Here each
header line is still folded by the email package, once, and lines that repeat from letter to
letter (the sender, the parts' ``Content-Type``, a file's headers) are remembered. The
structure (boundaries, blank lines, the order of headers) is written as the package's
generator writes it; ``tests/unit/test_crm_mime.py`` checks byte for byte against the package.

Text parts whose lines all fit in 78 octets go as 7bit or 8bit, as the package would send
them; any other text part is written by the package itself.
"""

from __future__ import annotations

import binascii
import functools
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, BinaryIO

__all__ = [
    "POLICY",
    "REGISTRY",
    "FilePart",
    "Header",
    "header",
    "letter_bytes",
    "repeated",
    "sender",
    "write_base64",
]

_CRLF = b"\r\n"
_MAX_LINE = 78  # octets: the SMTP policy's max_line_length, the limit for 7bit and 8bit text
_BASE64_LINE = 76  # characters, as the email package writes them
_BASE64_BLOCK = 57 * 1024  # bytes encoded at a time: 1,024 whole lines of base64
_DIGITS = re.compile(r"[0-9]")
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_BOUNDARY = re.compile(r"maild-[0-9a-f]{24}")
_BOUNDARY_PLACEHOLDER = "maild-" + "0" * 24


class _Registry(HeaderRegistry):
    """The email package's header classes, each made once instead of once per header set."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        """Give the class for a header name, made on first use."""
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made

    def map_to_type(self, name: str, cls: type[Any]) -> None:
        """Map a header name to a class, forgetting the class made for it before."""
        super().map_to_type(name, cls)
        self._made.pop(name.lower(), None)


REGISTRY = _Registry()
POLICY = SMTP.clone(header_factory=REGISTRY)


@dataclass(frozen=True, slots=True)
class Header:
    """One header as the email package stores and writes it: its folded line and its value."""

    line: bytes
    value: str


@dataclass(frozen=True, slots=True)
class FilePart:
    """An attached file: its MIME type, its name and its bytes."""

    maintype: str
    subtype: str
    filename: str
    content: bytes


def header(name: str, value: object) -> Header:
    """Fold a header as ``msg[name] = value`` and the generator would: bytes, and its value as text."""
    name, parsed = POLICY.header_store_parse(name, value)
    return Header(POLICY.fold_binary(name, parsed), str(parsed))


def shaped(name: str, value: str) -> Header:
    """Fold a header whose plain ASCII value differs from letter to letter mostly in its digits.

    The email package treats every digit alike when it parses and folds a subject, a
    Message-ID or an address list, so the value with its digits zeroed folds to the same
    line, the digits aside: that line is folded once and the digits put back. (Not for Date:
    its digits are parsed as a date.)
    """
    shape = _DIGITS.sub("0", value)
    if shape == value or not value.isascii():
        return header(name, value)
    template = repeated(name, shape)
    marker = shape.encode("ascii")
    if template.value != shape or template.line.count(marker) != 1:
        return header(name, value)
    return Header(template.line.replace(marker, value.encode("ascii")), value)


@functools.lru_cache(maxsize=256)
def repeated(name: str, value: str) -> Header:
    """Fold a header whose value repeats from letter to letter (the loop marker, the date)."""
    return header(name, value)


@functools.lru_cache(maxsize=256)
def sender(display_name: str, addr_spec: str) -> Header:
    """Give the From header of a sender, the same for all of their letters."""
    return header("From", Address(display_name=display_name, addr_spec=addr_spec))


def letter_bytes(
    top: Sequence[bytes],
    text: str,
    html: str,
    files: Sequence[FilePart],
    boundaries: Sequence[str],
) -> bytes:
    """Give the whole letter: headers, then the text (and HTML) part and the files.

    ``top`` holds the letter's own header lines (From to the loop marker); ``boundaries`` one
    boundary per multipart, outermost first.
    """
    head = b"".join(top)
    version = repeated("MIME-Version", "1.0").line
    text_head, text_body = _text_part(text, "plain")
    if not html and not files:
        return head + text_head + version + _CRLF + text_body
    body = text_head + _CRLF + text_body
    names = iter(boundaries)
    if html:
        html_head, html_body = _text_part(html, "html")
        outer_alt = not files
        alternative = _multipart(
            "alternative", next(names), [body, html_head + version + _CRLF + html_body]
        )
        if outer_alt:
            return head + version + alternative
        body = alternative
    return _mixed(head + version, next(names), body, files)


def _mixed(head: bytes, boundary: str, body: bytes, files: Sequence[FilePart]) -> bytes:
    """Give the letter as ``_multipart("mixed", …)`` would, written once into one buffer.

    A 25 MB file is not held as line objects, joined, then copied into each enclosing part:
    the letter's bytes and one block of base64 are all that exist at a time.
    """
    out = io.BytesIO()
    delimiter = b"--" + boundary.encode("ascii")
    out.write(head + _boundary_line("mixed", boundary) + _CRLF + delimiter + _CRLF + body)
    for item in files:
        out.write(_CRLF + delimiter + _CRLF)
        out.write(_file_headers(item.maintype, item.subtype, item.filename) + _CRLF)
        write_base64(out, item.content)
    out.write(_CRLF + delimiter + b"--" + _CRLF)
    return out.getvalue()


def write_base64(out: BinaryIO, content: bytes) -> None:
    """Write bytes in base64 as the email package does: 76-column lines, each ending in CRLF.

    A block of whole lines at a time, so that no list of every line is ever made.
    """
    view = memoryview(content)
    for at in range(0, len(view), _BASE64_BLOCK):
        encoded = binascii.b2a_base64(view[at : at + _BASE64_BLOCK], newline=False)
        lines = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
        out.write(_CRLF.join(lines) + _CRLF)


def _multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    """Give a multipart's Content-Type line, the blank line and its parts between boundaries."""
    line = _boundary_line(subtype, boundary)
    delimiter = b"--" + boundary.encode("ascii")
    inner = (_CRLF + delimiter + _CRLF).join(parts)
    return line + _CRLF + delimiter + _CRLF + inner + _CRLF + delimiter + b"--" + _CRLF


def _boundary_line(subtype: str, boundary: str) -> bytes:
    """Give a multipart's Content-Type line; every maild boundary folds like the next."""
    if not _BOUNDARY.fullmatch(boundary):
        return header("Content-Type", f'multipart/{subtype}; boundary="{boundary}"').line
    return _filled(_boundary_template(subtype), _BOUNDARY_PLACEHOLDER, boundary)


@functools.lru_cache(maxsize=16)
def _boundary_template(subtype: str) -> bytes:
    """Give the Content-Type line of a multipart with the placeholder boundary."""
    return header("Content-Type", f'multipart/{subtype}; boundary="{_BOUNDARY_PLACEHOLDER}"').line


def _filled(template: bytes, placeholder: str, value: str) -> bytes:
    """Put a value where the placeholder of the same length and kind of characters stands.

    Letters, digits, dots and dashes are never encoded nor quoted differently from one
    another, so the package folds such a value as it folds the placeholder: by its length.
    """
    assert len(placeholder) == len(value)
    return template.replace(placeholder.encode("ascii"), value.encode("ascii"), 1)


def _text_part(text: str, subtype: str) -> tuple[bytes, bytes]:
    """Give a text part's Content-Type and transfer encoding lines, and its body."""
    data = text.encode("utf-8")
    lines = data.splitlines()
    if all(len(line) <= _MAX_LINE for line in lines):
        cte = "7bit" if data.isascii() else "8bit"
        return _text_headers(subtype, cte), b"".join(line + _CRLF for line in lines) or _CRLF
    part = EmailMessage(policy=POLICY)
    part.set_content(text, subtype=subtype)
    del part["MIME-Version"]
    whole = part.as_bytes()
    end = whole.index(_CRLF + _CRLF) + 2
    return whole[:end], whole[end + 2 :]


@functools.lru_cache(maxsize=16)
def _text_headers(subtype: str, cte: str) -> bytes:
    """Give the header lines the email package writes for a text part in this encoding."""
    part = EmailMessage(policy=POLICY)
    part.set_content("", subtype=subtype, cte=cte)
    return b"".join(
        POLICY.fold_binary(name, value)
        for name, value in part.items()
        if name.lower() != "mime-version"
    )


def _file_headers(maintype: str, subtype: str, filename: str) -> bytes:
    """Give the header lines the email package writes for an attached file, MIME-Version last."""
    if _SIMPLE_NAME.fullmatch(filename):
        template = _disposition_template(len(filename))
        if template.count(b"0" * len(filename)) == 1:  # on one line, not split in pieces
            disposition = _filled(template, "0" * len(filename), filename)
        else:
            disposition = _file_lines("", "", filename)[2]
    else:
        disposition = _file_lines("", "", filename)[2]
    kind, cte, _, version = _file_lines(maintype, subtype, "x")
    return kind + cte + disposition + version


@functools.lru_cache(maxsize=128)
def _disposition_template(length: int) -> bytes:
    """Give the Content-Disposition line of a file named with ``length`` zeros."""
    return _file_lines("", "", "0" * length)[2]


@functools.lru_cache(maxsize=256)
def _file_lines(maintype: str, subtype: str, filename: str) -> tuple[bytes, ...]:
    """Give the lines the package writes for a file: type, encoding, disposition, MIME-Version."""
    part = EmailMessage(policy=POLICY)
    part.set_content(
        b"",
        maintype=maintype or "application",
        subtype=subtype or "octet-stream",
        filename=filename,
        cte="base64",
    )
    lines = tuple(POLICY.fold_binary(name, value) for name, value in part.items())
    assert len(lines) == 4, lines
    return lines
