"""A letter's header block read byte for byte, so a forward can keep everything it does not change.

A mail library re-folds and re-encodes what it re-serialises, which breaks signatures and
changes bytes nobody asked to change. Here the header block is only *split* into fields
whose bytes are kept exactly (``b"".join(field.raw) + body == raw``), and values are decoded
only for reading. Any bytes at all are accepted: 8-bit text, bare LF or CR line endings,
lines that are not headers.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r|$)")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = re.compile(r"\r\n|\n|\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_MAX_COMMENTS = 32

#: The longest value decoded (RFC 2047) or parsed for addresses; hostile headers are longer.
MAX_DECODED = 16 * 1024
MAX_ADDRESS_TEXT = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawField:
    """One header field exactly as it was written, folding and line endings included."""

    name: str
    raw: bytes

    @property
    def key(self) -> str:
        """Give the lower-cased name, for comparisons."""
        return self.name.lower()

    @property
    def raw_value(self) -> str:
        """Give the unfolded value before RFC 2047 decoding (8-bit bytes read as UTF-8)."""
        value = self.raw.split(b":", 1)[1]
        return _FOLD.sub("", text_of(value)).strip()

    @property
    def value(self) -> str:
        """Give the unfolded value with RFC 2047 encoded words decoded; may hold any character."""
        return decode_words(self.raw_value)


@dataclass(frozen=True, slots=True)
class RawLetter:
    """A letter split into header fields and the rest (the blank line and the body, as bytes)."""

    fields: tuple[RawField, ...]
    body: bytes
    linesep: bytes

    def values(self, name: str) -> list[str]:
        """Give the decoded values of every field with this name, in order."""
        key = name.lower()
        return [field.value for field in self.fields if field.key == key]

    def first(self, name: str) -> RawField | None:
        """Give the first field with this name, or None."""
        key = name.lower()
        return next((field for field in self.fields if field.key == key), None)


def split_letter(raw: bytes) -> RawLetter:
    """Split a raw letter into its header fields and the rest, losing no byte."""
    fields: list[RawField] = []
    name = ""
    current: list[bytes] = []
    offset = 0
    for line in _lines(raw):
        if current and line[:1] in (b" ", b"\t"):
            current.append(line)
            offset += len(line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            break
        if current:
            fields.append(RawField(name, b"".join(current)))
        name = match.group(1).decode("ascii")
        current = [line]
        offset += len(line)
    if current:
        fields.append(RawField(name, b"".join(current)))
    return RawLetter(tuple(fields), raw[offset:], _linesep(raw))


def _lines(raw: bytes) -> Iterator[bytes]:
    """Yield every line with its own line ending (CRLF, LF or a lone CR)."""
    for match in _LINE.finditer(raw):
        line = match.group(0)
        if not line:
            return
        yield line


def _linesep(raw: bytes) -> bytes:
    """Give the letter's first line ending, so added headers look like their neighbours."""
    match = re.search(rb"\r\n|\n|\r", raw)
    return match.group(0) if match else b"\r\n"


def text_of(value: bytes) -> str:
    """Read header bytes as text: UTF-8 when they are, else Latin-1, so no byte is an error."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; a value the decoder chokes on is given back as it was.

    The email package decodes encoded words in quadratic time (280 KB took 16 s), so a value
    holding them is cut to its first 16 KiB: no header worth reading is longer.
    """
    if "=?" not in value:
        return value
    value = value[:MAX_DECODED]
    try:
        return str(email.policy.default.header_factory("x-maild-decode", value))
    except Exception:  # a malformed word must never stop a forward
        return value


def one_line(value: str) -> str:
    """Make a value safe for a new header: control characters and line breaks become one space.

    ``=?`` becomes ``= ?`` too. The email package decodes encoded words in every value it is
    given, then folds the result, writing a decoded line break as a real one (CPython before
    3.11.10 and 3.12.5): a name decoded once that still reads ``=?utf-8?Q?a=0D=0ABcc:...?=``
    would otherwise add a header to the letter maild sends.
    """
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip().replace("=?", "= ?")


def address_pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    """Parse address header values like ``email.utils.getaddresses``, safe on hostile input.

    The standard library parses nested comments and groups recursively, so ``((((…a@b`` or
    ``g:g:g:…`` exhausts the stack: long values are cut, comments are dropped from a value
    with many of them, and a value that still nests too deep gives no address.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        text = value[:MAX_ADDRESS_TEXT]
        if text.count("(") > _MAX_COMMENTS:
            text = _without_comments(text)
        try:
            pairs.extend(email.utils.getaddresses([text]))
        except RecursionError:
            continue
    return pairs


def _without_comments(value: str) -> str:
    """Drop every (comment), however deeply nested, in one pass."""
    kept: list[str] = []
    depth = 0
    for char in value:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth:
            kept.append(char)
    return "".join(kept)


def mailboxes(value: str) -> list[tuple[str, str]]:
    """Parse an address header's raw value into (decoded display name, address) pairs."""
    pairs = address_pairs([value])
    return [
        (one_line(decode_words(name)), one_line(address))
        for name, address in pairs
        if address and "@" in address
    ]
