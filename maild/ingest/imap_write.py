"""The pure side of IMAP writes: flag checks and reading the codes servers answer writes with.

:class:`maild.ingest.imap.ImapSession` sends MOVE, COPY, STORE, CREATE, LIST, APPEND and
SEARCH; this module checks their arguments and reads their answers without any I/O, so a
rules config can check its flags when it is loaded and nothing here needs a server to test.

* Flags are either the five system flags a client may set (``\\Seen``, ``\\Answered``,
  ``\\Flagged``, ``\\Deleted``, ``\\Draft``) or keyword atoms; anything that could end the flag
  list or start a literal (space, parentheses, quotes, ``{``, ``]``, wildcards, control or
  non-ASCII characters) is refused with ``ValueError``, so a flag taken from config or from a
  letter can never inject IMAP syntax.
* ``[COPYUID ...]`` and ``[APPENDUID ...]`` (RFC 4315) become old -> new UID maps, never
  expanding a range larger than the command could have produced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "SYSTEM_FLAGS",
    "appenduid",
    "appenduid_placed",
    "appenduid_set",
    "check_flag",
    "copyuid_map",
    "flag_list",
    "list_names",
    "message_id_value",
    "multiappend_head",
    "multiappend_tail",
    "response_code",
]

#: The system flags a client may store, upper case -> canonical spelling (``\\Recent`` is the
#: server's alone, RFC 3501 2.3.2).
SYSTEM_FLAGS = {
    flag.upper(): flag for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}

# ATOM-CHAR of RFC 3501: printable ASCII except atom-specials ( ) { SP % * " \ ]
_KEYWORD = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")
_MAX_KEYWORD = 100
_MAX_MESSAGE_ID = 998  # the longest header line RFC 5322 allows
_CODE = re.compile(rb"\s*\[([A-Za-z0-9.-]+)")
_COPYUID = re.compile(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", re.IGNORECASE)
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
_APPENDUID_SET = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_LIST_LINE = re.compile(
    rb'(?:\* )?(?:LIST )?\((?P<attrs>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)\Z',
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = re.compile(rb"\{(\d+)\+?\}\Z")
_QUOTED_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_NOT_SELECTABLE = frozenset({"\\NOSELECT", "\\NONEXISTENT"})


def check_flag(flag: str) -> str:
    """Give a flag's canonical form, refusing what is not a settable system flag or a keyword."""
    if not isinstance(flag, str):
        raise ValueError(f"an IMAP flag must be a string, got {type(flag).__name__}")
    if flag.startswith("\\"):
        canonical = SYSTEM_FLAGS.get(flag.upper())
        if canonical is None:
            allowed = ", ".join(SYSTEM_FLAGS.values())
            raise ValueError(f"{flag!r} is not a system flag a client may set ({allowed})")
        return canonical
    if len(flag) > _MAX_KEYWORD or not _KEYWORD.fullmatch(flag):
        raise ValueError(
            f"{flag!r} is not a valid IMAP keyword: use at most {_MAX_KEYWORD} printable "
            'ASCII characters without spaces or any of ( ) { } % * " \\ ]'
        )
    return flag


def flag_list(flags: Sequence[str]) -> str:
    """Give the parenthesised flag list for STORE or APPEND, every flag checked, none twice."""
    if isinstance(flags, str | bytes):
        raise ValueError("flags must be a sequence of flags, not one string")
    seen: dict[str, str] = {}
    for flag in flags:
        canonical = check_flag(flag)
        seen.setdefault(canonical.upper(), canonical)
    return "(" + " ".join(seen.values()) + ")"


def message_id_value(message_id: str) -> str:
    """Give the ``<...>`` form of a Message-ID for HEADER search, refusing empty or unsafe ones."""
    # HEADER searches for a substring: an empty value would match every letter, and the angle
    # brackets keep "<1@x>" from also matching "<21@x>"
    value = message_id.strip()
    if value and not value.startswith("<"):
        value = f"<{value}>"
    if len(value) <= 2 or len(value) > _MAX_MESSAGE_ID:
        raise ValueError(f"not a Message-ID: {message_id!r}")
    if not value.isascii() or any(char < " " or char == "\x7f" for char in value):
        raise ValueError(f"a Message-ID must be printable ASCII: {message_id!r}")
    return value


def response_code(text: bytes | bytearray) -> str | None:
    """Give the response code that opens a completion text, e.g. ``TRYCREATE``, upper case."""
    match = _CODE.match(text)
    return match.group(1).decode("ascii").upper() if match is not None else None


def _expand(uid_set: bytes, limit: int) -> list[int] | None:
    """Expand a UID set like ``3:5,9`` in order, or give None when it holds more than ``limit``."""
    uids: list[int] = []
    for part in uid_set.split(b","):
        first, colon, last = part.partition(b":")
        if not first or (colon and not last):
            return None
        low, high = int(first), int(last or first)
        step = 1 if high >= low else -1
        if len(uids) + abs(high - low) + 1 > limit:
            return None
        uids.extend(range(low, high + step, step))
    return uids


def copyuid_map(lines: Iterable[bytes | bytearray], limit: int) -> dict[int, int]:
    """Read every ``[COPYUID v src dst]`` in a response into old UID -> new UID."""
    # Dovecot sends it untagged ("* OK [COPYUID ...]") for MOVE and in the tagged OK for COPY;
    # a set that does not pair up, or is larger than the command's, is ignored
    mapping: dict[int, int] = {}
    for line in lines:
        if not isinstance(line, bytes | bytearray):
            continue
        for match in _COPYUID.finditer(line):
            source = _expand(match.group(2), limit)
            target = _expand(match.group(3), limit)
            if source is not None and target is not None and len(source) == len(target):
                mapping.update(zip(source, target, strict=True))
    return mapping


def appenduid(text: bytes | bytearray) -> int | None:
    """Read the new UID from an APPEND completion's ``[APPENDUID v uid]``, if the server sent it."""
    match = _APPENDUID.search(text)
    return int(match.group(2)) if match is not None else None


def list_names(lines: Sequence[bytes | bytearray]) -> list[str]:
    """Give the wire names of the selectable folders in a LIST response (still modified UTF-7)."""
    names: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not isinstance(line, bytes | bytearray):
            continue
        match = _LIST_LINE.match(line)
        if match is None:
            continue
        name = bytes(match.group("name")).strip()
        literal = _LITERAL.fullmatch(name)
        if literal is not None:  # aioimaplib gives the literal as the next element
            if index >= len(lines):
                break
            name = bytes(lines[index])
            index += 1
        elif name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2:
            name = _QUOTED_ESCAPE.sub(rb"\1", name[1:-1])
        attributes = {
            attr.upper() for attr in match.group("attrs").decode("ascii", "replace").split()
        }
        if not attributes & _NOT_SELECTABLE:
            names.append(name.decode("utf-8", errors="replace"))
    return names


def appenduid_placed(text: bytes | bytearray) -> tuple[int, int] | None:
    """Read ``(UIDVALIDITY, UID)`` from ``[APPENDUID v uid]``: where the letter is, without a SELECT."""
    match = _APPENDUID.search(text)
    return (int(match.group(1)), int(match.group(2))) if match is not None else None


def appenduid_set(text: bytes | bytearray, count: int) -> list[tuple[int, int]] | None:
    """Read where each letter of a MULTIAPPEND went: ``[APPENDUID v 5:9]``, one UID per letter.

    None when the server gave no APPENDUID or a set that is not one UID per letter, in order.
    """
    match = _APPENDUID_SET.search(text)
    if match is None:
        return None
    uids = _expand(match.group(2), count)
    if uids is None or len(uids) != count:
        return None
    validity = int(match.group(1))
    return [(validity, uid) for uid in uids]


def multiappend_head(flags: str, first: bytes) -> str:
    """Give the end of a MULTIAPPEND command line: the first letter's flags and its literal size.

    Literals are non-synchronizing (``{n+}``, LITERAL+ of RFC 7888): the letters follow at once.
    ``flags`` is a flag list from :func:`flag_list`; an empty one is left out.
    """
    return f"{_flags_before(flags)}{{{len(first)}+}}"


def multiappend_tail(flags: str, raws: Sequence[bytes]) -> bytes:
    """Give what follows the command line: each letter, then the next one's flags and size, CRLF.

    ``raws`` are all the letters; the command line already announced the first one's literal.
    """
    pieces = [raws[0]]
    for raw in raws[1:]:
        pieces.append(f" {_flags_before(flags)}{{{len(raw)}+}}\r\n".encode("ascii"))
        pieces.append(raw)
    pieces.append(b"\r\n")
    return b"".join(pieces)


def _flags_before(flags: str) -> str:
    """Give a flag list and a space to put before a literal, or nothing for no flags."""
    return "" if flags == "()" else f"{flags} "
