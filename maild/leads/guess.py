"""What an unknown sender's letter says of them: a full name, and a company only when it is sure.

Pure: reads the parsed letter, never the database. The full name is the From display name
unless it is an address, a role ("Sales", "noreply"), empty, or sent from a role address
(``noreply@``). The company comes only from a
signature line with a legal form (``ООО «Ромашка»``, ``Acme Ltd``), never from the address's
domain: a domain is not a company name people would recognise. The phone comes from a
signature line that says it is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maild.core.letter import ParsedLetter
from maild.core.names import address_key

_ROLE_NAMES = frozenset(
    [
        "info",
        "sales",
        "support",
        "admin",
        "office",
        "noreply",
        "no-reply",
        "mailer-daemon",
        "postmaster",
        "team",
        "hello",
        "contact",
        "billing",
        "accounts",
        "webmaster",
        "robot",
        "notifications",
    ]
)
_SIGNATURE_LINES = 12
_LEGAL_FORM_RU = re.compile(r"\b(ООО|ОАО|ЗАО|ПАО|АО|ИП|НКО)\s*[«\"„“]([^»\"”“]{2,100})[»\"”“]")
_LEGAL_FORM_EN = re.compile(
    r"^\s*([A-Z][\w&.,' -]{1,80}?,?\s+(?:LLC|Ltd\.?|Limited|Inc\.?|GmbH|AG|S\.A\.|PLC|Corp\.?))\s*$"
)
_PHONE = re.compile(
    r"(?:tel|phone|mobile|mob|тел|телефон|моб)[a-zа-я.]*\s*[:.]?\s*(\+?[\d][\d ()\-]{6,20}\d)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class PartyGuess:
    """A sender as far as the letter tells: what a potential client is created from."""

    email: str
    full_name: str = ""
    company: str = ""
    phone: str = ""


def guess_party(letter: ParsedLetter) -> PartyGuess | None:
    """Read the sender's name, company and phone from a letter; None when it has no sender."""
    sender = letter.sender
    if sender is None or not address_key(sender.address):
        return None
    lines = _signature(letter.text)
    return PartyGuess(
        email=address_key(sender.address),
        full_name=person_name(sender.name, sender.address),
        company=_company(lines),
        phone=_phone(lines),
    )


def person_name(display_name: str, address: str) -> str:
    """Give the display name when it names a person, else empty."""
    name = " ".join(display_name.replace('"', " ").split())
    if not name or "@" in name or name.casefold() == address.casefold():
        return ""
    if name.casefold().replace(" ", "") in _ROLE_NAMES:
        return ""
    if address.partition("@")[0].casefold() in _ROLE_NAMES:
        return ""  # "Website form <noreply@...>" is a machine, not a person
    return name


def _signature(text: str) -> list[str]:
    """Give the lines after the signature separator, else the last lines of the text."""
    lines = text.replace("\r\n", "\n").split("\n")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip() == "--":
            return lines[index + 1 : index + 1 + _SIGNATURE_LINES]
    body = [line for line in lines if not line.startswith(">")]
    return body[-_SIGNATURE_LINES:]


def _company(lines: list[str]) -> str:
    """Find a company with its legal form in the signature lines."""
    for line in lines:
        ru = _LEGAL_FORM_RU.search(line)
        if ru:
            return f"{ru.group(1)} «{ru.group(2).strip()}»"
        en = _LEGAL_FORM_EN.match(line)
        if en:
            return en.group(1).strip()
    return ""


def _phone(lines: list[str]) -> str:
    """Find a phone number the signature labels as one."""
    for line in lines:
        found = _PHONE.search(line)
        if found:
            return " ".join(found.group(1).split())
    return ""
