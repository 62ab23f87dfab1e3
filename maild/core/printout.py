"""A stored letter as plain values for printing, so the renderer never sees the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from maild.core.letter import Address


@dataclass(frozen=True, slots=True)
class PrintAttachment:
    """One attachment as a printout lists it: the letter keeps the bytes."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class PrintLetter:
    """What one printed page shows of a letter: where it is, its headers, text and attachments."""

    id: int
    account: str
    folder: str
    status: str
    error: str | None
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    sent_at: datetime | None
    received_at: datetime | None
    subject: str
    text: str
    html: str
    attachments: tuple[PrintAttachment, ...]
