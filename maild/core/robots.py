"""Tell letters written by machines and letters maild already sent, so maild never feeds a loop.

Forwards and auto-replies both ask the same two questions of a letter before they send
anything: *did maild itself send this?* (the loop marker every composed letter carries) and
*did a machine send this?* (RFC 3834 and the de-facto headers of lists, bounces and
auto-responders). A letter is given as its raw bytes, or as a mapping of header names to
values (any letter case; repeats joined by line breaks, as in ``ParsedLetter.headers``).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

from maild.core.rawmail import split_letter

#: The header every letter maild composes carries, naming the account it was sent for.
LOOP_HEADER = "X-Maild-Loop"

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
        for _, address in email.utils.getaddresses([value])
    )
