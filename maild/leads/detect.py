"""Whether a letter is a lead, joins one, or neither: the pure half of lead detection.

A letter in a lead-source folder opens a lead; a rule's ``mark_lead`` / ``not_lead`` overrides the
folder; own letters (the Sent folder, the account's own addresses, letters maild composed) and
automatic letters (bounces, lists, auto-replies) never open one, though they may join one. A
reply joins the lead of the letter it cites (In-Reply-To, then References from the nearest) or
whose number it carries in the subject as ``[#123]``, instead of opening a new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maild.core.letter import ParsedLetter
from maild.core.names import address_key
from maild.core.robots import has_loop_marker, is_auto_submitted

_NUMBER = re.compile(r"\[#(\d{1,18})\]")


@dataclass(frozen=True, slots=True)
class LeadPolicy:
    """One account's lead settings, as the config gives them."""

    account: str
    source: str = "off"
    folders: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()
    sent_folder: str = "Sent"

    @property
    def enabled(self) -> bool:
        """Tell whether the account has leads at all."""
        return self.source != "off"

    def source_reason(self, folder: str) -> str | None:
        """Say why letters of a folder are leads, or None when they are not."""
        if self.source == "all":
            return f"account {self.account} counts letters of every folder as leads"
        if self.source == "selected" and folder in self.folders:
            return f"folder {folder} is a lead source"
        return None

    def own_reason(self, folder: str, letter: ParsedLetter) -> str | None:
        """Say why a letter is the account's own (so it never opens a lead), or None."""
        if folder == self.sent_folder:
            return f"own letter: it is in the {folder} folder"
        sender = letter.sender
        if sender is not None and address_key(sender.address) in self.addresses:
            return f"own letter: sent from {address_key(sender.address)}"
        if has_loop_marker(letter.headers):
            return "own letter: maild composed it"
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a letter that joins no thread opens a lead, and why (recorded with the letter)."""

    opens: bool
    reason: str


def verdict(
    policy: LeadPolicy, folder: str, letter: ParsedLetter, override: tuple[bool, str] | None
) -> Verdict:
    """Decide whether a letter opens a lead: own letters never; then rules; then the folder."""
    own = policy.own_reason(folder, letter)
    if own is not None:
        return Verdict(False, own)
    if override is not None:
        marked, rule = override
        if marked:
            return Verdict(True, f"rule {rule} marks it a lead")
        return Verdict(False, f"rule {rule}: not a lead")
    source = policy.source_reason(folder)
    if source is None:
        return Verdict(False, f"folder {folder} is not a lead source")
    if is_auto_submitted(letter.headers):
        return Verdict(False, "automatic letter (bounce, list or auto-reply): not a lead")
    return Verdict(True, source)


def cited_ids(letter: ParsedLetter) -> list[tuple[str, str]]:
    """Give the Message-IDs a letter replies to, nearest first, with the header naming each."""
    out: list[tuple[str, str]] = []
    seen = {letter.message_id} if letter.message_id else set()
    if letter.in_reply_to:
        out.append((letter.in_reply_to, "In-Reply-To"))
        seen.add(letter.in_reply_to)
    for message_id in reversed(letter.references):
        if message_id and message_id not in seen:
            out.append((message_id, "References"))
            seen.add(message_id)
    return out


def subject_numbers(subject: str) -> list[int]:
    """Give the lead numbers a subject carries as ``[#123]``, in order."""
    return [int(match) for match in _NUMBER.findall(subject)]
