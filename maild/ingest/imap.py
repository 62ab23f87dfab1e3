"""The only aioimaplib importer: a small, safe IMAP client surface for the poller and the rules.

The poller and the rules dispatcher code against :func:`connect`, :class:`ImapEndpoint`,
:class:`FolderStatus` and :class:`ImapSession`; nothing else here is part of the contract.
The session reads (``select``, ``uids_after``, ``sizes``, ``sizes_after``, ``fetch``, ``idle_wait``) and
writes (``move``, ``copy``, ``add_flags``, ``remove_flags``, ``create_folder``,
``folder_exists``, ``append``, ``search_message_id``); the I/O-free half of the writes (flag
checks, COPYUID/APPENDUID, LIST answers) is in :mod:`maild.ingest.imap_write`.

What this adapter guarantees, and why:

* Every failure comes out as a :mod:`maild.errors` exception: ``ImapAuthError`` when LOGIN is
  refused, ``ImapCommandError`` for NO/BAD, ``ImapConnectionError`` for refused connections,
  TLS failures, timeouts, drops, ``* BYE`` and aioimaplib's own ``Abort``/``CommandTimeout``.
  After an ``ImapConnectionError`` the session is *broken*: its socket is already dropped and
  every later call raises at once, because aioimaplib wedges once a command was cancelled.
* Every command runs under a timeout and is also woken by a lost connection (aioimaplib never
  fails pending commands itself); a FETCH only times out after ``timeout`` seconds *without
  data*, so a big letter on a slow link is not cut off, and an APPEND gets one more second
  per 50 kB of letter, since nothing comes back while it uploads.
* UID sets are chunked (at most 500 UIDs for metadata and writes, 150 for bodies per command)
  and only ``UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[...]`` is requested: no ENVELOPE
  or BODYSTRUCTURE (whose quoted parentheses break aioimaplib's framing) and never ``\\Seen``.
  The FETCH attributes are parsed here (:func:`parse_fetch_response`).
* Mailbox names are encoded as modified UTF-7 and quoted; the username is quoted too.
* aioimaplib 2.0.3 (pinned exactly) is patched by subclassing, not monkeypatching: its
  ``data_received`` formats every read into a debug string (two thirds of fetch CPU), its
  ``_handle_responses`` recurses once per line (RecursionError, and a hang, on ~1,000-line
  responses) and its ``FetchCommand.wait_data`` rescans the whole response on every line.
  :class:`_Protocol` and :class:`_FetchCommand` replace those three with linear versions.
* Untagged ``EXISTS``/``EXPUNGE`` that aioimaplib drops while no IDLE is running are counted,
  so :meth:`ImapSession.idle_wait` can report them instead of sleeping through new mail.
* Writes never touch letters maild did not name: a move without MOVE is COPY, ``\\Deleted``
  and ``UID EXPUNGE`` of those UIDs only (UIDPLUS), never a plain EXPUNGE; flags and keywords
  are checked against the IMAP grammar first, so config or letter content cannot inject
  syntax. A NO carries its response code (``ImapCommandError.code``), so a caller can tell a
  missing target folder (``trycreate``) from other refusals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import re
import ssl
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeAlias, TypeVar

from aioimaplib import aioimaplib as _aio

from maild.core.letter import FetchedMessage
from maild.errors import ImapAuthError, ImapCommandError, ImapConnectionError, ImapError
from maild.ingest.imap_write import (
    appenduid_placed,
    appenduid_set,
    copyuid_map,
    flag_list,
    list_names,
    message_id_value,
    multiappend_head,
    multiappend_tail,
    response_code,
)
from maild.logging import get_logger
from maild.tls import client_context, is_loopback

__all__ = [
    "BODY_CHUNK",
    "SIZE_CHUNK",
    "WRITE_CHUNK",
    "FetchItem",
    "FolderStatus",
    "ImapEndpoint",
    "ImapSession",
    "connect",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "is_loopback",
    "parse_fetch_response",
    "quote_string",
    "uid_chunks",
    "uid_set",
]

T = TypeVar("T")

#: At most this many UIDs per metadata FETCH, keeping responses far below aioimaplib's limits.
SIZE_CHUNK = 500
#: At most this many UIDs per body FETCH, bounding memory and the time one command may take.
BODY_CHUNK = 150

#: At most this many UIDs per MOVE, COPY, STORE or UID EXPUNGE.
WRITE_CHUNK = 500

#: Bytes of an APPENDed letter handed to the socket at a time: the transport copies what waits.
LITERAL_CHUNK = 256 * 1024

log = get_logger(__name__)
_LIBRARY_LOGGER = logging.getLogger("aioimaplib.aioimaplib")
# APPEND sends and gets nothing back while the literal uploads: allow this rate on top
_APPEND_BYTES_PER_SECOND = 50_000
_LOGOUT_TIMEOUT = 5.0
_BODY_ITEMS = "(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[])"
# An oversize letter's header is fetched, but at most this much of it: to the server a letter
# without a blank line is all header, and one of 2 GB would otherwise come down whole.
MAX_HEADER_FETCH = 1024 * 1024
_HEADER_ITEMS = f"(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER]<0.{MAX_HEADER_FETCH}>)"
_SIZE_ITEMS = "(UID RFC822.SIZE)"


# --------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapEndpoint:
    """Where and how to log in, kept as one value so a session can be rebuilt after a drop."""

    host: str
    port: int
    security: Literal["tls", "none"]
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    tls_verify: bool = True
    allow_plaintext: bool = False


@dataclass(frozen=True)
class FolderStatus:
    """What SELECT tells the poller: UIDVALIDITY decides whether its UID cursor still holds."""

    uidvalidity: int
    uidnext: int | None
    exists: int


# --------------------------------------------------------------------------------------------
# Small pure helpers (mailbox names, UID sets)
# --------------------------------------------------------------------------------------------


def encode_mailbox_name(name: str) -> str:
    """Encode a folder name as modified UTF-7 (RFC 3501 5.1.3), since IMAP4rev1 names are ASCII."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        """Emit the pending non-ASCII run as one base64 shift sequence."""
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            encoded = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{encoded}-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mailbox_name(name: str) -> str:
    """Decode a modified UTF-7 folder name, so names the server lists can be shown and compared."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        shift = name.find("&", pos)
        if shift < 0:
            out.append(name[pos:])
            break
        out.append(name[pos:shift])
        end = name.find("-", shift + 1)
        if end < 0:
            raise ValueError(f"invalid modified UTF-7 in mailbox name {name!r}")
        chunk = name[shift + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
            except ValueError as exc:
                raise ValueError(f"invalid modified UTF-7 in mailbox name {name!r}") from exc
        pos = end + 1
    return "".join(out)


def quote_string(value: str) -> str:
    """Quote a string as an IMAP quoted string, because aioimaplib sends arguments verbatim."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_argument(folder: str) -> str:
    """Give the wire form of a folder name: modified UTF-7, then quoted."""
    return quote_string(encode_mailbox_name(folder))


def uid_set(uids: Sequence[int]) -> str:
    """Compress sorted UIDs into an IMAP sequence set like ``1:5,7``, keeping commands short."""
    parts: list[str] = []
    start = prev = -1
    for uid in uids:
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start >= 0:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def uid_chunks(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    """Yield sorted, de-duplicated UIDs in groups of at most ``size``, so no response gets huge."""
    ordered = sorted(set(uids))
    if ordered and ordered[0] < 1:
        raise ValueError(f"UIDs start at 1, got {ordered[0]}")
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


# --------------------------------------------------------------------------------------------
# FETCH response parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One ``* n FETCH (...)`` response as plain values; absent attributes stay ``None``."""

    seq: int
    uid: int | None = None
    size: int | None = None
    flags: tuple[str, ...] | None = None
    internaldate: datetime | None = None
    body: bytes | None = None


_FETCH_START = re.compile(rb"(?:\* )?(\d+) FETCH \(", re.IGNORECASE)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\s*$")
_TOKEN = re.compile(
    rb"""[ \t\r\n]*(?:
        (?P<open>\()
      | (?P<close>\))
      | "(?P<quoted>(?:[^"\\]|\\.)*)"
      | \{(?P<literal>\d+)\+?\}[ \t\r\n]*\Z
      | (?P<atom>(?:[^\s()"\[]|\[[^\]]*\]?)+)
      | (?P<other>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_QUOTED_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_INTERNALDATE = re.compile(
    r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*$"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}


class _Open:
    """Marker token for ``(``."""


class _Close:
    """Marker token for ``)``."""


_OPEN = _Open()
_CLOSE = _Close()


@dataclass(frozen=True, slots=True)
class _Atom:
    """An atom or number, kept apart from strings so ``NIL`` is not confused with ``"NIL"``."""

    value: bytes


_Piece: TypeAlias = "_Open | _Close | _Atom | bytes"  # bytes: quoted string or literal data
_Value: TypeAlias = "_Atom | bytes | list[_Value]"


def _tokenize(line: bytes) -> Iterator[_Piece]:
    """Split one response line into tokens; a trailing ``{n}`` is dropped (its data follows)."""
    pos = 0
    end = len(line)
    while pos < end:
        match = _TOKEN.match(line, pos)
        if match is None or match.end() == pos:  # only whitespace left
            return
        pos = match.end()
        kind = match.lastgroup
        if kind == "open":
            yield _OPEN
        elif kind == "close":
            yield _CLOSE
        elif kind == "quoted":
            yield _QUOTED_ESCAPE.sub(rb"\1", match.group("quoted"))
        elif kind == "literal":
            return
        elif kind is not None:
            yield _Atom(match.group(kind))


def _parse_internaldate(raw: bytes) -> datetime | None:
    """Read ``dd-Mon-yyyy hh:mm:ss +zzzz`` without strptime, whose ``%b`` follows the locale."""
    match = _INTERNALDATE.match(raw.decode("ascii", errors="replace"))
    if match is None:
        return None
    day, month_name, year, hour, minute, second, sign, off_h, off_m = match.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    offset = timedelta(hours=int(off_h), minutes=int(off_m))
    try:
        return datetime(
            int(year),
            month,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(-offset if sign == "-" else offset),
        )
    except ValueError:
        return None


def _to_int(value: _Value | None) -> int | None:
    """Read a number attribute, giving ``None`` for anything that is not one."""
    if isinstance(value, _Atom) and value.value.isdigit():
        return int(value.value)
    return None


def _flatten_atoms(value: _Value) -> Iterator[str]:
    """Walk a parenthesised list, giving every atom and string in it as text."""
    if isinstance(value, list):
        for item in value:
            yield from _flatten_atoms(item)
    elif isinstance(value, _Atom):
        yield value.value.decode("ascii", errors="replace")
    else:
        yield value.decode("ascii", errors="replace")


def _nest(pieces: list[_Piece]) -> list[_Value]:
    """Group tokens into nested lists at the parentheses, closing any left open."""
    stack: list[list[_Value]] = [[]]
    for piece in pieces:
        if piece is _OPEN:
            stack.append([])
        elif piece is _CLOSE:
            if len(stack) > 1:
                done = stack.pop()
                stack[-1].append(done)
        else:
            assert not isinstance(piece, _Open | _Close)
            stack[-1].append(piece)
    while len(stack) > 1:
        done = stack.pop()
        stack[-1].append(done)
    return stack[0]


def _build_item(seq: int, pieces: list[_Piece]) -> FetchItem:
    """Turn the tokens of one FETCH response into a :class:`FetchItem`, tolerating junk."""
    values = _nest(pieces)
    found: dict[bytes, _Value | None] = {}
    index = 0
    while index < len(values):
        name = values[index]
        if not isinstance(name, _Atom):
            index += 1  # not an attribute name: resynchronise on the next token
            continue
        found[name.value.upper()] = values[index + 1] if index + 1 < len(values) else None
        index += 2

    flags: tuple[str, ...] | None = None
    if b"FLAGS" in found:  # absent stays None, "FLAGS ()" becomes ()
        listed = found[b"FLAGS"]
        flags = tuple(_flatten_atoms(listed)) if listed is not None else ()
    date = found.get(b"INTERNALDATE")
    body: bytes | None = None
    for name, value in found.items():
        if name.startswith((b"BODY[", b"BINARY[", b"RFC822")) and isinstance(value, bytes):
            body = value
    return FetchItem(
        seq=seq,
        uid=_to_int(found.get(b"UID")),
        size=_to_int(found.get(b"RFC822.SIZE")),
        flags=flags,
        internaldate=_parse_internaldate(date) if isinstance(date, bytes) else None,
        body=body,
    )


# The shape Dovecot and most servers send: simple attributes, at most one literal, last.
_SIMPLE_NAME = rb"[A-Za-z0-9.]+(?:\[[^\]\[\r\n]*\](?:<[0-9.]+>)?)?"
_SIMPLE_VALUE = rb'(?:[0-9]+|NIL|\([^()"{}\r\n]*\)|"[^"\\\r\n]*")'
_SIMPLE_ATTR = re.compile(rb"(" + _SIMPLE_NAME + rb") (" + _SIMPLE_VALUE + rb")")
_SIMPLE_ATTRS = rb"((?:" + _SIMPLE_NAME + rb" " + _SIMPLE_VALUE + rb" )*)"
_SIMPLE_WITH_LITERAL = re.compile(
    rb"(?:\* )?([0-9]+) FETCH \(" + _SIMPLE_ATTRS + rb"(" + _SIMPLE_NAME + rb") \{([0-9]+)\}\Z"
)
_SIMPLE_WITHOUT_LITERAL = re.compile(
    rb"(?:\* )?([0-9]+) FETCH \("
    + _SIMPLE_ATTRS
    + rb"("
    + _SIMPLE_NAME
    + rb") ("
    + _SIMPLE_VALUE
    + rb")\)\Z"
)


def _simple_item(seq: int, pairs: list[tuple[bytes, bytes]], body: bytes | None) -> FetchItem:
    """Build an item from ``(name, value)`` pairs already known to be simple values."""
    uid = size = None
    flags: tuple[str, ...] | None = None
    internaldate = None
    for raw_name, value in pairs:
        name = raw_name.upper()
        if name == b"UID":
            uid = int(value) if value.isdigit() else None
        elif name == b"RFC822.SIZE":
            size = int(value) if value.isdigit() else None
        elif name == b"FLAGS":
            listed = value[1:-1] if value[:1] == b"(" else b""
            flags = tuple(listed.decode("ascii", errors="replace").split())
        elif name == b"INTERNALDATE":
            internaldate = _parse_internaldate(value[1:-1]) if value[:1] == b'"' else None
        elif name.startswith((b"BODY[", b"BINARY[", b"RFC822")) and value[:1] == b'"':
            body = value[1:-1]
    return FetchItem(seq=seq, uid=uid, size=size, flags=flags, internaldate=internaldate, body=body)


def _simple_parse(lines: Sequence[bytes | bytearray], index: int) -> tuple[FetchItem, int] | None:
    """Parse the common item shape with two regexes; None sends it to the general tokenizer."""
    line = lines[index]
    match = _SIMPLE_WITH_LITERAL.match(line)
    if match is not None:
        if index + 2 >= len(lines) or lines[index + 2] != b")":
            return None
        literal = lines[index + 1]
        if len(literal) != int(match.group(4)):
            return None
        pairs = _SIMPLE_ATTR.findall(match.group(2))
        pairs.append((match.group(3), b"NIL"))
        return _simple_item(int(match.group(1)), pairs, bytes(literal)), index + 3
    match = _SIMPLE_WITHOUT_LITERAL.match(line)
    if match is not None:
        pairs = _SIMPLE_ATTR.findall(match.group(2))
        pairs.append((match.group(3), match.group(4)))
        return _simple_item(int(match.group(1)), pairs, None), index + 1
    return None


def _general_parse(lines: Sequence[bytes | bytearray], index: int) -> tuple[FetchItem, int]:
    """Parse one item of any shape token by token, from its ``n FETCH (`` line to its ``)``."""
    first = bytes(lines[index])
    start = _FETCH_START.match(first)
    assert start is not None
    seq = int(start.group(1))
    pieces: list[_Piece] = []
    depth = 1
    rest = first[start.end() :]
    index += 1
    while True:
        for piece in _tokenize(rest):
            if piece is _OPEN:
                depth += 1
            elif piece is _CLOSE:
                depth -= 1
                if depth == 0:
                    return _build_item(seq, pieces), index
            pieces.append(piece)
        if _LITERAL_AT_END.search(rest) and index < len(lines):
            pieces.append(bytes(lines[index]))  # the literal always follows its {n} line
            index += 1
        if index >= len(lines):
            return _build_item(seq, pieces), index
        following = bytes(lines[index])
        if _FETCH_START.match(following):  # a new item: this one was cut short
            return _build_item(seq, pieces), index
        rest = following
        index += 1


def parse_fetch_response(lines: Sequence[bytes | bytearray]) -> list[FetchItem]:
    """Parse aioimaplib's FETCH response lines, because it leaves FETCH attributes unparsed."""
    # aioimaplib gives each response line as bytes (an item's first line without "* ") and
    # each literal as the element right after the line ending in {n}; attributes may come
    # before or after the literal. Other lines (the tagged text, other untagged data) are
    # skipped, and so is a literal that follows one of them.
    items: list[FetchItem] = []
    index = 0
    count = len(lines)
    while index < count:
        line = lines[index]
        if not _FETCH_START.match(line):
            index += 2 if _LITERAL_AT_END.search(line) else 1  # skip a stray literal too
            continue
        parsed = _simple_parse(lines, index) or _general_parse(lines, index)
        items.append(parsed[0])
        index = parsed[1]
    return items


# --------------------------------------------------------------------------------------------
# aioimaplib overrides (pinned to aioimaplib==2.0.3)
# --------------------------------------------------------------------------------------------


class _FetchCommand(_aio.FetchCommand):  # type: ignore[misc]
    """A FETCH command that keeps its parenthesis balance as lines arrive, instead of rescanning.

    It also gathers a literal (a letter) as the pieces read, joined into bytes once complete:
    the stock one grows a bytearray, which the parser then copies into bytes, so every letter
    of a fetch stood twice in memory until the fetch returned.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._balance = 0
        self._pieces: list[bytes | memoryview] = []
        self._received = 0
        super().__init__(*args, **kwargs)

    def literal_missing(self) -> int:
        """Give how many bytes of the current literal are still to come."""
        return int(self._expected_size) - self._received

    def wait_literal_data(self) -> bool:
        """Tell whether a literal is still arriving, counting the pieces instead of a buffer."""
        return self.literal_missing() > 0

    def append_literal_data(self, data: bytes | memoryview) -> bytes | memoryview:
        """Keep a piece of the literal; once it is whole, add it to the response as one bytes."""
        missing = self.literal_missing()
        piece = data[:missing]
        if len(piece):
            self._pieces.append(piece)
            self._received += len(piece)
        if not self.wait_literal_data():  # a literal's parentheses are data: not counted
            super().append_to_resp(b"".join(self._pieces))
            self._end_literal_data()
        self._reset_timer()
        return data[missing:]

    def _end_literal_data(self) -> None:
        """Forget the pieces of the literal just added to the response."""
        super()._end_literal_data()
        self._pieces = []
        self._received = 0

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        """Record a line and update the balance from the last ``n FETCH (`` line on."""
        super().append_to_resp(line, result=result)
        if isinstance(line, bytes):
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self._balance = 0
            self._balance += line.count(b"(") - line.count(b")")

    def wait_data(self) -> bool:
        """Tell whether the current FETCH response is still open, as the stock rescan would."""
        return self._balance != 0


def _literal_missing(command: Any) -> int:
    """Give how many bytes of a command's current literal are still to come."""
    if isinstance(command, _FetchCommand):
        return command.literal_missing()
    return int(command._expected_size) - len(command._resp_literal_data)


_CHANGE_SUFFIXES = (b" EXISTS", b" EXPUNGE")
_CHANGE_LINE = re.compile(rb"\* \d+ (?:EXISTS|EXPUNGE)\Z", re.IGNORECASE)


class _Protocol(_aio.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol with linear-time reading, failure capture and change counting."""

    incomplete_line: bytes
    current_command: Any
    literal_data: bytes | None

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: Any = None) -> None:
        super().__init__(loop, conn_lost_cb)
        self.bytes_received = 0
        self.mailbox_changes = 0
        self.bye: bytes | None = None
        self.failure: BaseException | None = None
        self._tails: dict[str, bytes] = {}
        self._writable = asyncio.Event()
        self._writable.set()
        self._literal: asyncio.Future[None] | None = None  # a big APPEND's letter being written

    def pause_writing(self) -> None:
        """Hold a letter being APPENDed while the socket is behind (asyncio's flow control)."""
        self._writable.clear()

    def resume_writing(self) -> None:
        """Go on with a letter being APPENDed: the socket took what waited."""
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake a letter's writing, which then stops, before aioimaplib hears of the loss."""
        self._writable.set()
        super().connection_lost(exc)

    def _continuation(self, line: bytes) -> None:
        """Send a big APPEND's letter a piece at a time as the socket takes it, not whole.

        Written whole, the transport keeps a copy of all the socket does not take at once:
        most of a 25 MB letter, beside the letter itself.
        """
        sync, data = self.pending_sync_command, self.literal_data
        if sync is None or sync.name != "APPEND" or data is None or len(data) <= LITERAL_CHUNK:
            super()._continuation(line)
            return
        self.literal_data = None
        self._literal = asyncio.ensure_future(self._write_literal(data))
        self._literal.add_done_callback(_swallow_result)

    async def _write_literal(self, data: bytes) -> None:
        """Write a literal and the CRLF that ends its command, waiting while the socket is behind."""
        view = memoryview(data)
        for piece in [
            *(view[at : at + LITERAL_CHUNK] for at in range(0, len(view), LITERAL_CHUNK)),
            _aio.CRLF,
        ]:
            await self._writable.wait()
            transport = self.transport
            if transport is None or transport.is_closing():
                return  # the command fails on the lost connection
            transport.write(piece)

    def data_received(self, d: bytes) -> None:
        """Feed a read to the parser without the stock debug formatting of the whole read."""
        self.bytes_received += len(d)
        try:
            data = self.incomplete_line + d if self.incomplete_line else d
            self._handle_responses(data, self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except _aio.IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data
        except Exception as exc:  # the stream is out of step: nothing on it can be trusted
            self.failure = exc
            if self.transport is not None:
                self.transport.abort()

    def _handle_responses(self, data: bytes, line_handler: Any, current_cmd: Any = None) -> None:
        """Split a read into lines and literals in one pass, with an offset instead of recursion."""
        view = memoryview(data)
        size = len(data)
        pos = 0
        while True:
            if pos >= size:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise _aio.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                wanted = _literal_missing(current_cmd)
                end = min(pos + wanted, size)
                current_cmd.append_literal_data(view[pos:end])
                pos = end
                if current_cmd.wait_literal_data():
                    raise _aio.IncompleteRead(current_cmd)
            crlf = data.find(_aio.CRLF, pos)
            if crlf < 0:
                raise _aio.IncompleteRead(current_cmd, bytes(data[pos:]))
            line = bytes(data[pos:crlf])
            pos = crlf + 2
            cmd = line_handler(line, current_cmd)
            begin_literal = _aio.literal_data_re.match(line) if line.endswith(b"}") else None
            if begin_literal:
                if cmd is None:
                    cmd = _aio.Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        """Turn a BYE greeting into a recorded reason and a drop, instead of a failed task."""
        if self.state == _aio.CONNECTED and line.upper().startswith(b"* BYE"):
            self.bye = line[2:]
            if self.transport is not None:
                self.transport.abort()
            return None
        return super()._handle_line(line, current_cmd)

    def _untagged_response(self, line: bytes) -> Any:
        """Count EXISTS/EXPUNGE that are not part of a SELECT answer, and remember a BYE."""
        if line[-8:].upper().endswith(_CHANGE_SUFFIXES) and _CHANGE_LINE.match(line):
            sync = self.pending_sync_command
            if sync is None or sync.name == "IDLE":
                self.mailbox_changes += 1
        elif line.startswith(b"* BYE"):
            self.bye = line[2:]
        return super()._untagged_response(line)

    def send(self, line: str, scrub: str | None = None) -> None:
        """Send a command line; a MULTIAPPEND's letters follow it at once (non-synchronizing)."""
        super().send(line, scrub)
        tail = self._tails.pop(line.partition(" ")[0], None)
        if tail is not None and self.transport is not None:
            self.transport.write(tail)

    async def multiappend(self, mailbox: str, raws: Sequence[bytes], flags: str) -> Any:
        """APPEND several letters in one command (MULTIAPPEND, RFC 3502) with LITERAL+ literals."""
        tag = self.new_tag()
        self._tails[tag] = multiappend_tail(flags, raws)
        try:
            return await self.execute(
                _aio.Command(
                    "APPEND", tag, mailbox, multiappend_head(flags, raws[0]), loop=self.loop
                )
            )
        finally:
            self._tails.pop(tag, None)

    async def fetch(
        self,
        message_set: str,
        message_parts: str,
        by_uid: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  the overridden signature
    ) -> Any:
        """Run a FETCH with :class:`_FetchCommand`, the incremental one."""
        return await self.execute(
            _FetchCommand(
                self.new_tag(),
                message_set,
                message_parts,
                prefix="UID" if by_uid else "",
                loop=self.loop,
                timeout=timeout,
            )
        )


class _Client(_aio.IMAP4):  # type: ignore[misc]
    """aioimaplib's client wired to :class:`_Protocol`; TLS comes from the context passed in."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Open the connection with our protocol class instead of the stock one."""
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------

_EXISTS = re.compile(rb"(\d+) EXISTS\b", re.IGNORECASE)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_LIBRARY_ERRORS = (
    _aio.AioImapException,
    OSError,
    EOFError,
    TimeoutError,
    RecursionError,
)


def _text(response: Any) -> str:
    """Give the server's completion text of a response, for error messages (never a letter)."""
    lines = response.lines
    if not lines or not isinstance(lines[-1], bytes):
        return ""
    return bytes(lines[-1][:300]).decode("utf-8", errors="replace")


def _code(response: Any) -> str | None:
    """Give the response code of a response's completion, e.g. ``TRYCREATE``."""
    lines = response.lines
    if not lines or not isinstance(lines[-1], bytes):
        return None
    return response_code(lines[-1])


def _untagged(response: Any) -> list[bytes]:
    """Give a response's untagged lines: all but the last, which is the completion text."""
    return [line for line in response.lines[:-1] if isinstance(line, bytes)]


def _swallow_result(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class ImapSession:
    """One logged-in IMAP connection; used by one task at a time, dropped after a connection error."""

    #: What the server announced after login, upper case. A caller may narrow it (e.g. drop
    #: ``MOVE`` for a server whose MOVE misbehaves) and the session follows.
    capabilities: frozenset[str]

    def __init__(self, client: Any, endpoint: ImapEndpoint) -> None:
        self._client = client
        self._proto: _Protocol = client.protocol
        self._where = f"{endpoint.host}:{endpoint.port}"
        self._timeout = endpoint.timeout
        self._lost: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._broken: str | None = None
        self._selected: str | None = None
        self._seen_changes = 0
        self._lock = asyncio.Lock()
        self.capabilities = frozenset()
        self._proto.conn_lost_cb = self._connection_lost

    def __repr__(self) -> str:
        state = f"broken: {self._broken}" if self._broken else f"selected={self._selected!r}"
        return f"<ImapSession {self._where} {state}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def has_idle(self) -> bool:
        """Tell the poller whether it can wait with IDLE instead of polling."""
        return "IDLE" in self.capabilities

    @property
    def has_move(self) -> bool:
        """Tell whether :meth:`move` can use UID MOVE (RFC 6851) rather than COPY and EXPUNGE."""
        return "MOVE" in self.capabilities

    @property
    def has_uidplus(self) -> bool:
        """Tell whether UID EXPUNGE (RFC 4315) can expunge exactly the letters maild moved."""
        return "UIDPLUS" in self.capabilities

    @property
    def has_multiappend(self) -> bool:
        """Tell whether :meth:`append_many` can APPEND many letters in one command."""
        return {"MULTIAPPEND", "LITERAL+"} <= self.capabilities

    @property
    def broken(self) -> bool:
        """Tell whether the connection is unusable and must be replaced."""
        return self._broken is not None

    @property
    def selected(self) -> str | None:
        """Give the folder the last successful SELECT opened."""
        return self._selected

    @property
    def bytes_received(self) -> int:
        """Count bytes read from the server, for traffic metrics."""
        return self._proto.bytes_received

    def _connection_lost(self, exc: BaseException | None) -> None:
        """Wake every pending wait at once, since aioimaplib itself never fails them."""
        if not self._lost.done():
            self._lost.set_result(exc)

    def _fail(self, reason: str) -> ImapConnectionError:
        """Mark the session broken, drop the socket and build the error to raise."""
        if self._broken is None:
            self._broken = reason
        transport = self._proto.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        return ImapConnectionError(f"IMAP {self._where}: {reason}")

    def _lost_reason(self, what: str) -> str:
        """Explain a lost connection with the most specific cause known, for the error message."""
        if self._proto.failure is not None:
            return f"protocol error during {what}: {self._proto.failure!r}"
        if self._proto.bye is not None:
            bye = self._proto.bye[:200].decode("utf-8", errors="replace")
            return f"server closed the connection during {what}: {bye}"
        exc = self._lost.result() if self._lost.done() else None
        detail = f": {exc}" if exc else ""
        return f"connection lost during {what}{detail}"

    def _ensure_usable(self) -> None:
        """Refuse work on a broken session, because aioimaplib cannot recover one."""
        if self._broken is not None:
            raise ImapConnectionError(f"IMAP {self._where}: session is broken ({self._broken})")

    def _ensure_selected(self) -> None:
        """Refuse folder commands before a successful SELECT, instead of sending doomed ones."""
        self._ensure_usable()
        if self._selected is None:
            raise ImapCommandError(f"IMAP {self._where}: no folder selected")

    async def _call(
        self,
        what: str,
        awaitable: Awaitable[T],
        *,
        limit: float | None = None,
        while_data_flows: bool = False,
    ) -> T:
        """Await one library call under a timeout, woken early by a drop; translate every failure."""
        # with while_data_flows the limit counts seconds without incoming data, so a long
        # FETCH that keeps streaming is not cut off
        self._ensure_usable()
        limit = self._timeout if limit is None else limit
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        try:
            while True:
                mark = self._proto.bytes_received
                done, _ = await asyncio.wait(
                    (task, self._lost), timeout=limit, return_when=asyncio.FIRST_COMPLETED
                )
                if task in done:
                    break
                if self._lost in done:
                    raise self._fail(self._lost_reason(what))
                if while_data_flows and self._proto.bytes_received != mark:
                    continue
                raise self._fail(f"{what} timed out after {limit:g} s")
        except BaseException:
            if not task.done():
                task.cancel()
                task.add_done_callback(_swallow_result)
                self._fail(f"{what} was interrupted")
            raise
        try:
            return task.result()
        except _LIBRARY_ERRORS as exc:  # first: ssl.SSLCertVerificationError is a ValueError too
            if isinstance(exc, ssl.SSLCertVerificationError):
                reason = f"TLS certificate verification failed: {exc.verify_message}"
            elif isinstance(exc, ssl.SSLError):
                reason = f"TLS failed: {exc}"
            elif self._lost.done():
                reason = self._lost_reason(what)
            else:
                reason = f"{what} failed: {type(exc).__name__}: {exc}"
            raise self._fail(reason) from exc
        except ValueError as exc:  # aioimaplib refuses CR/LF/NUL in arguments
            raise ImapCommandError(f"IMAP {self._where}: {what}: {exc}") from exc

    async def _command(
        self,
        what: str,
        awaitable: Awaitable[Any],
        *,
        limit: float | None = None,
        while_data_flows: bool = False,
    ) -> Any:
        """Run one command and raise :class:`ImapCommandError` unless it answered OK."""
        response = await self._call(what, awaitable, limit=limit, while_data_flows=while_data_flows)
        if response.result != "OK":
            raise ImapCommandError(
                f"IMAP {self._where}: {what} answered {response.result}: {_text(response)}",
                code=_code(response),
            )
        return response

    # -- login (used by connect) -------------------------------------------------------------

    async def _open(self, username: str, password: str) -> None:
        """Wait for the greeting, log in and learn the capabilities."""
        await self._call("connect", self._client.wait_hello_from_server())
        response = await self._call("LOGIN", self._proto.login(quote_string(username), password))
        if response.result != "OK":
            raise ImapAuthError(
                f"IMAP {self._where}: login refused for {username!r}: {_text(response)}"
            )
        self.capabilities = await self._read_capabilities(response)
        self._proto.capabilities = set(self.capabilities)
        self._seen_changes = self._proto.mailbox_changes

    async def _read_capabilities(self, login_response: Any) -> frozenset[str]:
        """Take capabilities from the LOGIN answer, asking CAPABILITY only if it had none."""
        found: list[bytes] = []
        for line in login_response.lines:
            if not isinstance(line, bytes):
                continue
            code = _CAPABILITY_CODE.search(line)
            if code is not None:
                found.extend(code.group(1).split())
            elif line.upper().startswith(b"CAPABILITY "):
                found.extend(line.split()[1:])
        if not found:
            await self._call("CAPABILITY", self._proto.capability())
            return frozenset(str(cap).upper() for cap in self._proto.capabilities)
        return frozenset(cap.decode("ascii", errors="replace").upper() for cap in found)

    # -- the contract ------------------------------------------------------------------------

    async def select(self, folder: str) -> FolderStatus:
        """Open a folder read-write (IDLE needs SELECT) and read its UIDVALIDITY, UIDNEXT, EXISTS."""
        async with self._lock:
            self._ensure_usable()
            self._selected = None
            response = await self._command(
                f"SELECT {folder!r}", self._proto.select(_mailbox_argument(folder))
            )
            uidvalidity = uidnext = None
            exists = 0
            for line in _untagged(response):
                if (match := _UIDVALIDITY.search(line)) is not None:
                    uidvalidity = int(match.group(1))
                elif (match := _UIDNEXT.search(line)) is not None:
                    uidnext = int(match.group(1))
                elif (match := _EXISTS.match(line)) is not None:
                    exists = int(match.group(1))
            if uidvalidity is None:
                raise ImapCommandError(f"IMAP {self._where}: SELECT {folder!r} gave no UIDVALIDITY")
            self._selected = folder
            self._seen_changes = self._proto.mailbox_changes
            return FolderStatus(uidvalidity=uidvalidity, uidnext=uidnext, exists=exists)

    async def uids_after(self, last_uid: int) -> list[int]:
        """List UIDs above the cursor; ``n:*`` also matches the highest UID, so filter it out."""
        if last_uid < 0:
            raise ValueError(f"last_uid must be >= 0, got {last_uid}")
        async with self._lock:
            self._ensure_selected()
            response = await self._command(
                "UID SEARCH",
                self._proto.search("UID", f"{last_uid + 1}:*", charset=None, by_uid=True),
            )
            found: set[int] = set()
            for line in _untagged(response):
                found.update(int(word) for word in line.split() if word.isdigit())
            return sorted(uid for uid in found if uid > last_uid)

    async def sizes_after(self, last_uid: int) -> dict[int, int]:
        """Give RFC822.SIZE per UID above the cursor in one round trip, for the few letters IDLE heard of.

        It stands for ``uids_after`` then ``sizes``: one command fewer between a push and its
        row. ``n:*`` also matches the highest UID, so that one is filtered out as there.
        """
        if last_uid < 0:
            raise ValueError(f"last_uid must be >= 0, got {last_uid}")
        async with self._lock:
            self._ensure_selected()
            response = await self._command(
                "UID FETCH (RFC822.SIZE)",
                self._proto.fetch(f"{last_uid + 1}:*", _SIZE_ITEMS, by_uid=True),
                while_data_flows=True,
            )
        sizes: dict[int, int] = {}
        for item in parse_fetch_response(response.lines):
            if item.uid is not None and item.uid > last_uid and item.size is not None:
                sizes[item.uid] = item.size
        return sizes

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Give RFC822.SIZE per UID, so big letters can be handled before their bodies come in."""
        result: dict[int, int] = {}
        async with self._lock:
            self._ensure_selected()
            for chunk in uid_chunks(uids, SIZE_CHUNK):
                wanted = set(chunk)
                response = await self._command(
                    "UID FETCH (RFC822.SIZE)",
                    self._proto.fetch(uid_set(chunk), _SIZE_ITEMS, by_uid=True),
                    while_data_flows=True,
                )
                for item in parse_fetch_response(response.lines):
                    if item.uid in wanted and item.size is not None:
                        result[item.uid] = item.size
        return result

    async def fetch(
        self, uids: Sequence[int], *, headers_only: bool = False
    ) -> list[FetchedMessage]:
        """Download letters by UID without touching ``\\Seen``; expunged ones are simply absent."""
        items = _HEADER_ITEMS if headers_only else _BODY_ITEMS
        found: dict[int, FetchedMessage] = {}
        async with self._lock:
            self._ensure_selected()
            for chunk in uid_chunks(uids, BODY_CHUNK):
                wanted = set(chunk)
                response = await self._command(
                    "UID FETCH (BODY.PEEK)",
                    self._proto.fetch(uid_set(chunk), items, by_uid=True),
                    while_data_flows=True,
                )
                for item in parse_fetch_response(response.lines):
                    uid = item.uid
                    if uid is None or uid not in wanted or item.body is None or uid in found:
                        continue
                    found[uid] = FetchedMessage(
                        uid=uid,
                        raw=item.body,
                        size=item.size if item.size is not None else len(item.body),
                        flags=item.flags or (),
                        internaldate=item.internaldate,
                        headers_only=headers_only,
                    )
        return [found[uid] for uid in sorted(found)]

    async def idle_wait(self, timeout: float) -> bool:  # noqa: ASYNC109  IDLE's own deadline
        """Wait in IDLE until the server reports a change or ``timeout`` passes; True on a change."""
        # EXISTS/EXPUNGE the server sent with earlier commands (aioimaplib drops them) count
        # too, and then IDLE is not entered at all; a BYE or a drop raises ImapConnectionError
        async with self._lock:
            self._ensure_selected()
            if not self.has_idle:
                raise ImapCommandError(f"IMAP {self._where}: server has no IDLE")
            if self._take_changes():
                return True
            queue = self._proto.idle_queue
            while not queue.empty():
                queue.get_nowait()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(timeout, 0.0)
            idle_task: asyncio.Future[Any] = await self._call(
                "IDLE", self._client.idle_start(timeout=max(timeout, 0.0) + self._timeout)
            )
            idle_task.add_done_callback(_swallow_result)
            try:
                await self._wait_for_push(idle_task, deadline)
            except BaseException:
                if not idle_task.done():
                    idle_task.cancel()
                raise
            if not idle_task.done():
                self._client.idle_done()
            response = await self._call("IDLE DONE", idle_task)
            if response.result != "OK":
                raise ImapCommandError(
                    f"IMAP {self._where}: IDLE answered {response.result}: {_text(response)}"
                )
            return self._take_changes()

    def _take_changes(self) -> bool:
        """Tell whether EXISTS/EXPUNGE arrived since the last look, and mark them seen."""
        changed = self._proto.mailbox_changes != self._seen_changes
        self._seen_changes = self._proto.mailbox_changes
        return changed

    async def _wait_for_push(self, idle_task: asyncio.Future[Any], deadline: float) -> None:
        """Sleep on the IDLE queue until a change, the deadline, the end of IDLE or a drop."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            push = asyncio.ensure_future(self._client.wait_server_push(timeout=remaining))
            try:
                done, _ = await asyncio.wait(
                    (push, idle_task, self._lost),
                    timeout=remaining + 1.0,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not push.done():
                    push.cancel()
                push.add_done_callback(_swallow_result)
            if self._proto.bye is not None:
                raise self._fail(self._lost_reason("IDLE"))
            if self._lost in done:
                raise self._fail(self._lost_reason("IDLE"))
            if push not in done or push.cancelled() or push.exception() is not None:
                return  # deadline, or the server ended IDLE by itself
            if push.result() is _aio.STOP_WAIT_SERVER_PUSH or idle_task in done:
                return
            if self._proto.mailbox_changes != self._seen_changes:
                return
            # anything else ("* OK Still here") is a keep-alive: keep waiting

    # -- writes ------------------------------------------------------------------------------

    async def move(self, uids: Sequence[int], target: str) -> dict[int, int]:
        """Move letters from the selected folder with their flags; give old -> new UIDs if told."""
        mapping: dict[int, int] = {}
        async with self._lock:
            self._ensure_selected()
            for chunk in uid_chunks(uids, WRITE_CHUNK):
                if self.has_move:
                    response = await self._command(
                        f"UID MOVE to {target!r}",
                        self._proto.move(uid_set(chunk), _mailbox_argument(target), by_uid=True),
                    )
                    mapping.update(copyuid_map(response.lines, len(chunk)))
                else:
                    mapping.update(await self._copy_and_expunge(chunk, target))
        return mapping

    async def _copy_and_expunge(self, chunk: list[int], target: str) -> dict[int, int]:
        """Move without MOVE: COPY, mark ``\\Deleted``, then UID EXPUNGE just these letters."""
        # a plain EXPUNGE would also remove what other clients marked \Deleted, so without
        # UIDPLUS the originals stay marked and a warning says so
        mapping = await self._copy(chunk, target)
        await self._store(chunk, "+FLAGS.SILENT", "(\\Deleted)")
        if self.has_uidplus:
            await self._command("UID EXPUNGE", self._proto.expunge(uid_set(chunk), by_uid=True))
        else:
            log.warning(
                "imap_move_left_deleted",
                server=self._where,
                folder=self._selected,
                target=target,
                count=len(chunk),
                reason="server has neither MOVE nor UIDPLUS",
            )
        return mapping

    async def copy(self, uids: Sequence[int], target: str) -> dict[int, int]:
        """Copy letters from the selected folder with their flags; give old -> new UIDs if told."""
        mapping: dict[int, int] = {}
        async with self._lock:
            self._ensure_selected()
            for chunk in uid_chunks(uids, WRITE_CHUNK):
                mapping.update(await self._copy(chunk, target))
        return mapping

    async def _copy(self, chunk: list[int], target: str) -> dict[int, int]:
        """Run one UID COPY and read its COPYUID (Dovecot puts it in the tagged OK)."""
        response = await self._command(
            f"UID COPY to {target!r}",
            self._proto.copy(uid_set(chunk), _mailbox_argument(target), by_uid=True),
        )
        return copyuid_map(response.lines, len(chunk))

    async def add_flags(self, uids: Sequence[int], flags: Sequence[str]) -> None:
        """Set system flags or keywords on letters of the selected folder; others stay as they are."""
        await self._store_all(uids, "+FLAGS.SILENT", flags)

    async def remove_flags(self, uids: Sequence[int], flags: Sequence[str]) -> None:
        """Clear system flags or keywords on letters of the selected folder."""
        await self._store_all(uids, "-FLAGS.SILENT", flags)

    async def _store_all(self, uids: Sequence[int], action: str, flags: Sequence[str]) -> None:
        """Check the flags first (ValueError), then STORE them chunk by chunk."""
        wanted = flag_list(flags)
        async with self._lock:
            self._ensure_selected()
            if wanted == "()":
                return
            for chunk in uid_chunks(uids, WRITE_CHUNK):
                await self._store(chunk, action, wanted)

    async def _store(self, chunk: list[int], action: str, wanted: str) -> None:
        """Run one silent UID STORE, so the server sends no FETCH per letter back."""
        await self._command(
            f"UID STORE {action} {wanted}",
            self._proto.store(uid_set(chunk), action, wanted, by_uid=True),
        )

    async def folder_exists(self, name: str) -> bool:
        """Tell whether a folder exists and can hold letters (LIST with the exact name)."""
        async with self._lock:
            self._ensure_usable()
            return await self._folder_exists(name)

    async def _folder_exists(self, name: str) -> bool:
        """Compare the names LIST gives for the name, since ``%`` and ``*`` in it are wildcards."""
        response = await self._command(
            f"LIST {name!r}",
            self._proto.simple_command("LIST", '""', _mailbox_argument(name)),
        )
        inbox = name.upper() == "INBOX"
        for listed in list_names(response.lines[:-1]):
            try:
                decoded = decode_mailbox_name(listed)
            except ValueError:
                continue
            if decoded == name or (inbox and decoded.upper() == "INBOX"):
                return True
        return False

    async def create_folder(self, name: str) -> None:
        """Create a folder, and succeed if it is already there, so a move can create its target."""
        async with self._lock:
            self._ensure_usable()
            try:
                await self._command(
                    f"CREATE {name!r}",
                    self._proto.simple_command("CREATE", _mailbox_argument(name)),
                )
            except ImapCommandError as exc:
                # servers without ALREADYEXISTS (RFC 5530) just say NO: ask LIST
                if exc.code != "ALREADYEXISTS" and not await self._folder_exists(name):
                    raise

    async def append(
        self,
        folder: str,
        raw: bytes,
        flags: Sequence[str] = (),
        when: datetime | None = None,
    ) -> int | None:
        """Store a letter in a folder (e.g. a sent one in Sent); give its UID if APPENDUID tells."""
        placed = await self.append_placed(folder, raw, flags, when)
        return placed[1] if placed is not None else None

    async def append_placed(
        self,
        folder: str,
        raw: bytes,
        flags: Sequence[str] = (),
        when: datetime | None = None,
    ) -> tuple[int, int] | None:
        """Store a letter in a folder; give its (UIDVALIDITY, UID) if APPENDUID tells."""
        wanted = flag_list(flags)
        if when is not None and when.utcoffset() is None:
            raise ValueError("the APPEND date must be timezone-aware")
        async with self._lock:
            self._ensure_usable()
            response = await self._command(
                f"APPEND to {folder!r}",
                self._proto.append(
                    raw,
                    _mailbox_argument(folder),
                    flags=wanted if wanted != "()" else None,
                    date=when,
                ),
                limit=self._timeout + len(raw) / _APPEND_BYTES_PER_SECOND,
            )
            return appenduid_placed(response.lines[-1]) if response.lines else None

    async def append_many(
        self, folder: str, raws: Sequence[bytes], flags: Sequence[str] = ()
    ) -> list[tuple[int, int]] | None:
        """Store letters in a folder with one command; give each (UIDVALIDITY, UID) if APPENDUID tells.

        One MULTIAPPEND (RFC 3502): the server stores all of them or none. Needs
        :attr:`has_multiappend`; the letters follow the command at once (LITERAL+, RFC 7888).
        """
        if not raws:
            return []
        if not self.has_multiappend:
            raise ImapCommandError(f"IMAP {self._where}: the server offers no MULTIAPPEND/LITERAL+")
        wanted = flag_list(flags)
        async with self._lock:
            self._ensure_usable()
            response = await self._command(
                f"APPEND of {len(raws)} letters to {folder!r}",
                self._proto.multiappend(_mailbox_argument(folder), raws, wanted),
                limit=self._timeout + sum(len(raw) for raw in raws) / _APPEND_BYTES_PER_SECOND,
            )
            return appenduid_set(response.lines[-1], len(raws)) if response.lines else None

    async def search_message_id(self, message_id: str) -> list[int]:
        """Find letters of the selected folder by Message-ID, e.g. after UIDVALIDITY changed."""
        value = message_id_value(message_id)
        async with self._lock:
            self._ensure_selected()
            response = await self._command(
                "UID SEARCH HEADER Message-ID",
                self._proto.search(
                    "HEADER", "Message-ID", quote_string(value), charset=None, by_uid=True
                ),
            )
            found: set[int] = set()
            for line in _untagged(response):
                found.update(int(word) for word in line.split() if word.isdigit())
            return sorted(found)

    async def close(self) -> None:
        """Log out if the connection is idle and healthy, then drop the socket; never raises."""
        if self._broken is None and not self._lock.locked() and not self._lost.done():
            self._broken = "closed"
            with contextlib.suppress(Exception):  # best effort only
                await asyncio.wait_for(
                    self._proto.logout(), timeout=min(self._timeout, _LOGOUT_TIMEOUT)
                )
        self._broken = self._broken or "closed"
        with contextlib.suppress(Exception):
            waiter = self._client._idle_waiter
            if waiter is not None:
                waiter.cancel()
            pending = [*self._client.tasks, *self._proto.tasks, self._client._client_task]
            for task in pending:
                if not task.done():
                    task.cancel()
                    task.add_done_callback(_swallow_result)
            transport = self._proto.transport
            if transport is not None and not transport.is_closing():
                transport.abort()
            if transport is not None and not self._lost.done():
                await asyncio.wait((self._lost,), timeout=1.0)


# --------------------------------------------------------------------------------------------
# connect
# --------------------------------------------------------------------------------------------


def _quiet_library_logger() -> None:
    """Keep aioimaplib at WARNING or above, since at DEBUG it logs whole letters and secrets."""
    if _LIBRARY_LOGGER.getEffectiveLevel() < logging.WARNING:
        _LIBRARY_LOGGER.setLevel(logging.WARNING)


def _tls_context(endpoint: ImapEndpoint) -> ssl.SSLContext:
    """Build the TLS context: verifying (system CAs plus the extra CA file) unless switched off."""
    try:
        return client_context(endpoint.ca_file, verify=endpoint.tls_verify)
    except (OSError, ssl.SSLError) as exc:
        raise ImapConnectionError(
            f"IMAP {endpoint.host}:{endpoint.port}: cannot load CA file {endpoint.ca_file!r}: {exc}"
        ) from exc


async def connect(endpoint: ImapEndpoint) -> ImapSession:
    """Connect, check the greeting and log in, refusing plaintext anywhere but loopback."""
    _quiet_library_logger()
    where = f"{endpoint.host}:{endpoint.port}"
    context: ssl.SSLContext | None
    if endpoint.security == "tls":
        context = _tls_context(endpoint)
    elif endpoint.security == "none":
        if not is_loopback(endpoint.host) and not endpoint.allow_plaintext:
            raise ImapConnectionError(
                f"IMAP {where}: security 'none' (plaintext) is only allowed for loopback "
                "hosts (127.0.0.0/8, ::1, localhost) unless allow_plaintext is set; "
                "use security 'tls'"
            )
        context = None
    else:
        raise ImapConnectionError(
            f"IMAP {where}: unknown security {endpoint.security!r} (use 'tls' or 'none')"
        )
    try:
        client = _Client(
            host=endpoint.host,
            port=endpoint.port,
            timeout=endpoint.timeout,
            ssl_context=context,
        )
    except (OSError, ValueError) as exc:
        raise ImapConnectionError(f"IMAP {where}: cannot connect: {exc}") from exc
    session = ImapSession(client, endpoint)
    try:
        await session._open(endpoint.username, endpoint.password)
    except ImapError as exc:
        await session.close()
        raise _without_secret(exc, endpoint.password) from None
    except BaseException:
        await session.close()
        raise
    return session


def _without_secret(exc: ImapError, password: str) -> ImapError:
    """Copy a login error with the password masked and no library exception chained to it.

    aioimaplib words some protocol errors with the pending command, and during login that
    command is ``LOGIN user "password"``: neither its text nor its cause may reach a log.
    """
    text = str(exc)
    if password:
        for form in (quote_string(password), password):
            text = text.replace(form, "***")
    clean = copy.copy(exc)
    clean.args = (text,)
    return clean
