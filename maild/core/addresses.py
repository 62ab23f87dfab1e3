"""One strict test of "a single plain address", so no letter content can become a recipient list.

Forward targets, auto-reply recipients and the relay's envelope all go through
:func:`address_problem`: exactly one ``local@domain``, nothing a header or an SMTP command line
could be bent with (spaces, line breaks, commas, angle brackets, quotes), and a domain with a dot.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\s,;<>\"()\[\]\\\x00-\x1f\x7f]")


def address_problem(value: str) -> str | None:
    """Give the reason a value is not one plain address, or None when it is one.

    One ``@``, no spaces, line breaks, commas, quotes or angle brackets, a non-empty local
    part and a domain with a dot that neither starts nor ends with one.
    """
    if value.count("@") != 1:
        return "must contain exactly one @"
    if _FORBIDDEN.search(value):
        return "must not contain spaces, line breaks, commas, quotes or angle brackets"
    local, _, domain = value.partition("@")
    if not local:
        return "the part before @ is empty"
    if "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "the domain after @ must contain a dot, e.g. example.com"
    return None


def in_domains(address: str, domains: frozenset[str] | tuple[str, ...]) -> bool:
    """Tell whether an address's domain is one of ``domains`` (exactly, any letter case)."""
    domain = address.rpartition("@")[2].lower()
    return domain in {item.lower() for item in domains}
