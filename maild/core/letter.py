"""The parsed letter as plain values, so every layer can share it without a mail library."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address header, with its display name kept for the Responsible lookup."""

    address: str
    name: str = ""

    def as_dict(self) -> dict[str, str]:
        """Give the JSON shape stored in the database."""
        return {"name": self.name, "address": self.address}


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """What the CRM needs to list an attachment without opening the raw letter."""

    position: int
    filename: str
    content_type: str
    size: int
    content_id: str = ""
    disposition: str = ""
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class ParsedLetter:
    """Everything maild reads out of one raw letter; built off the event loop."""

    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    sent_at: datetime | None = None
    text: str = ""
    html: str = ""
    attachments: tuple[AttachmentInfo, ...] = ()
    defects: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    text_utf8: bytes | None = field(default=None, compare=False, repr=False)
    """``text`` encoded as UTF-8 (lone surrogates kept), when the parser made it.

    Rules search the text as UTF-8 bytes, and a letter crossing from a parser process is
    pickled, which encodes its text anyway: the parser encodes once, the pickle carries these
    bytes in place of the text, and the daemon's busy process never encodes it again.
    """

    @property
    def sender(self) -> Address | None:
        """Give the first From mailbox, the one leads and replies are keyed on."""
        return self.from_[0] if self.from_ else None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the text only once: as its UTF-8 bytes when they are there, else as text."""
        values = [getattr(self, item.name) for item in fields(self)]
        if self.text_utf8 is not None:
            values[_TEXT_AT] = None
        return (_rebuild, (type(self), tuple(values)))


def _rebuild(kind: type[ParsedLetter], values: tuple[Any, ...]) -> ParsedLetter:
    """Unpickle a letter, decoding its text from the UTF-8 bytes it was sent as."""
    if values[_TEXT_AT] is None:
        utf8 = values[_UTF8_AT]
        values = (
            *values[:_TEXT_AT],
            utf8.decode("utf-8", "surrogatepass"),
            *values[_TEXT_AT + 1 :],
        )
    return kind(*values)


_NAMES = [item.name for item in fields(ParsedLetter)]
_TEXT_AT = _NAMES.index("text")
_UTF8_AT = _NAMES.index("text_utf8")


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One letter as the IMAP server gave it: raw bytes plus the metadata the cursor needs."""

    uid: int
    raw: bytes
    size: int
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    headers_only: bool = False
