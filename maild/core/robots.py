"""Tell letters written by machines and letters maild already sent, so maild never feeds a loop.

Forwards and auto-replies both ask the same two questions of a letter before they send
anything: *did maild itself send this?* (the loop marker every composed letter carries) and
*did a machine send this?* (RFC 3834 and the de-facto headers of lists, bounces and
auto-responders). A letter is given as its raw bytes, or as a mapping of header names to
values (any letter case; repeats joined by line breaks, as in ``ParsedLetter.headers``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from maild.core.rawmail import address_pairs, split_letter

#: The header every letter maild composes carries, naming the account it was sent for.
LOOP_HEADER = "X-Maild-Loop"

_ANGLE_PATH = re.compile(r"<\s*(?:@[^:<>]*:)?([^<>]*)>")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_SUPPRESS = frozenset({"all", "oof", "autoreply"})
_ROBOT_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster"})

Headers = bytes | Mapping[str, str]


def header_values(letter: Headers, name: str) -> list[str]:
    """Give every value of one header, decoded, whether the letter is raw bytes or a mapping."""
    if isinstance(letter, bytes):
        return split_letter(letter).values(name)
    key = name.lower()
    return [
        line.strip()
        for header, joined in letter.items()
        if header.lower() == key
        for line in joined.splitlines() or [""]
    ]


def _normal(address: str) -> str:
    """Compare addresses without case, spaces or angle brackets."""
    return address.strip().strip("<>").strip().lower()


def has_loop_marker(letter: Headers, address: str | None = None) -> bool:
    """Tell whether maild composed this letter: for any account, or for ``address`` only."""
    markers = [_normal(value) for value in header_values(letter, LOOP_HEADER)]
    if address is None:
        return bool(markers)
    return _normal(address) in markers


def is_auto_submitted(letter: Headers) -> bool:
    """Tell whether a machine sent the letter (auto-reply, bounce, list or bulk mail)."""
    return (
        any(_token(value) not in ("", "no") for value in header_values(letter, "Auto-Submitted"))
        or any(_token(v) in _BULK_PRECEDENCE for v in header_values(letter, "Precedence"))
        or bool(header_values(letter, "List-Id"))
        or any(_null_path(value) for value in header_values(letter, "Return-Path"))
        or bool(header_values(letter, "X-Autoreply"))
        or bool(header_values(letter, "X-Autorespond"))
        or any(_suppresses(value) for value in header_values(letter, "X-Auto-Response-Suppress"))
        or any(_from_robot(value) for value in header_values(letter, "From"))
    )


def _token(value: str) -> str:
    """Give a header's first word, lower-cased, without parameters or comments."""
    return value.split(";", 1)[0].split("(", 1)[0].strip().lower()


def _null_path(value: str) -> bool:
    """Tell whether a Return-Path is the null sender ``<>`` used by bounces."""
    return "".join(value.split()) == "<>"


def _suppresses(value: str) -> bool:
    """Tell whether X-Auto-Response-Suppress asks that no auto-reply be sent."""
    return any(part.strip().lower() in _SUPPRESS for part in value.split(","))


def _from_robot(value: str) -> bool:
    """Tell whether a From address is a mail system's own (MAILER-DAEMON, postmaster)."""
    return any(
        address.rsplit("@", 1)[0].strip().lower() in _ROBOT_LOCAL_PARTS
        for _, address in address_pairs([value])
    )


# -- the autoresponder's questions (RFC 3834, RFC 5230 and helpdesk practice) -------------------

#: Headers only mailing lists add (RFC 2369, RFC 2919): a letter with one is never answered.
LIST_HEADERS = (
    "List-Id",
    "List-Help",
    "List-Subscribe",
    "List-Unsubscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
)
#: Headers other auto-responders put on their replies.
AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_SYSTEM_LOCAL_PARTS = frozenset({"mailer-daemon", "listserv", "majordomo"})
_NOREPLY_LOCAL_PARTS = frozenset({"noreply", "no-reply", "do-not-reply", "donotreply"})
_OOF_SUPPRESS = frozenset({"all", "oof"})


def return_path(letter: Headers) -> str | None:
    """Give the envelope sender from Return-Path: "" for the null sender, None without the header."""
    values = header_values(letter, "Return-Path")
    if not values:
        return None
    value = " ".join(values[0].split())
    if _null_path(value):
        return ""
    address = _path_address(value)
    return address if "@" in address else ""


def _path_address(value: str) -> str:
    """Take the address out of ``<addr>`` (dropping a source route); anything else stays as is.

    No lenient parsing: ``<a@x>, <b@y>`` or ``a@x garbage`` come back whole, so the caller's
    strict address check refuses them instead of picking one address out of the list.
    """
    inner = _ANGLE_PATH.fullmatch(value)
    if inner is not None:
        return inner.group(1).strip()
    return value


def list_header(letter: Headers) -> str | None:
    """Name the first mailing-list header the letter carries, if any."""
    return next((name for name in LIST_HEADERS if header_values(letter, name)), None)


def auto_submitted(letter: Headers) -> str | None:
    """Give the Auto-Submitted value when it is anything but absent or ``no``."""
    for value in header_values(letter, "Auto-Submitted"):
        if _token(value) != "no":
            return _token(value) or "(empty)"
    return None


def bulk_precedence(letter: Headers) -> str | None:
    """Give the Precedence value when it is bulk, junk or list."""
    return next(
        (_token(v) for v in header_values(letter, "Precedence") if _token(v) in _BULK_PRECEDENCE),
        None,
    )


def suppresses_out_of_office(letter: Headers) -> bool:
    """Tell whether X-Auto-Response-Suppress holds All or OOF (DR, RN, NRN alone do not count)."""
    return any(
        part.strip().lower() in _OOF_SUPPRESS
        for value in header_values(letter, "X-Auto-Response-Suppress")
        for part in value.split(",")
    )


def autoreply_header(letter: Headers) -> str | None:
    """Name the other auto-responder's header the letter carries, if any."""
    return next((name for name in AUTOREPLY_HEADERS if header_values(letter, name)), None)


def is_report(letter: Headers) -> bool:
    """Tell whether the letter is a delivery or read report (multipart/report)."""
    return any(_token(v) == "multipart/report" for v in header_values(letter, "Content-Type"))


def _local_part(address: str) -> str:
    return address.rsplit("@", 1)[0].strip().lower()


def is_system_address(address: str) -> bool:
    """Tell a mail system's address: MAILER-DAEMON, LISTSERV, majordomo, owner-*, *-request."""
    local = _local_part(address)
    return local in _SYSTEM_LOCAL_PARTS or local.startswith("owner-") or local.endswith("-request")


def is_noreply_address(address: str) -> bool:
    """Tell an address nobody reads: noreply, no-reply, do-not-reply."""
    return _local_part(address) in _NOREPLY_LOCAL_PARTS


def recipient_addresses(letter: Headers) -> set[str]:
    """Give every address of To, Cc, Bcc and their Resent- forms, lower-cased."""
    names = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")
    values = [value for name in names for value in header_values(letter, name)]
    return {address.strip().lower() for _, address in address_pairs(values) if address}
