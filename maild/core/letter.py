"""The parsed letter as plain values, so every layer can share it without a mail library."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

    @property
    def sender(self) -> Address | None:
        """Give the first From mailbox, the one leads and replies are keyed on."""
        return self.from_[0] if self.from_ else None


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One letter as the IMAP server gave it: raw bytes plus the metadata the cursor needs."""

    uid: int
    raw: bytes
    size: int
    flags: tuple[str, ...] = ()
    internaldate: datetime | None = None
    headers_only: bool = False
