"""What the rules decided about one letter, as plain values: effects to perform, never performed here.

The rules engine returns a ``Decision``; the pipeline records it and turns each effect into an
outbox row keyed by the letter and the effect's ``key()``, so an effect is performed at most once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from maild.core.letter import ParsedLetter

ForwardMode = Literal["attach", "resend", "redirect"]
FORWARD_MODES: tuple[ForwardMode, ...] = ("attach", "resend", "redirect")


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the letter on to another address, in one of three ways (see docs/config.md)."""

    to: str
    mode: ForwardMode = "attach"
    kind: ClassVar[str] = "forward"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"forward:{self.mode}:{self.to}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "to": self.to, "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Move:
    """Move the letter to a folder; into the account's deleted folder it also marks it deleted."""

    folder: str
    marks_deleted: bool = False
    kind: ClassVar[str] = "move"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"move:{self.folder}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "folder": self.folder, "marks_deleted": self.marks_deleted}


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy the letter to a folder, leaving it where it is."""

    folder: str
    kind: ClassVar[str] = "copy"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"copy:{self.folder}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "folder": self.folder}


@dataclass(frozen=True, slots=True)
class AddFlag:
    """Set an IMAP flag (``\\Seen``, ``\\Flagged``) or keyword on the letter."""

    flag: str
    kind: ClassVar[str] = "add_flag"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"add_flag:{self.flag}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "flag": self.flag}


@dataclass(frozen=True, slots=True)
class RemoveFlag:
    """Clear an IMAP flag or keyword on the letter."""

    flag: str
    kind: ClassVar[str] = "remove_flag"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"remove_flag:{self.flag}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "flag": self.flag}


@dataclass(frozen=True, slots=True)
class SetResponsible:
    """Make a CRM user (by login) responsible for the letter."""

    login: str
    kind: ClassVar[str] = "set_responsible"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return f"set_responsible:{self.login}"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "login": self.login}


@dataclass(frozen=True, slots=True)
class MarkLead:
    """Count the letter as a lead even where its folder is not a lead source."""

    kind: ClassVar[str] = "mark_lead"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return self.kind

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind}


@dataclass(frozen=True, slots=True)
class NotLead:
    """Never count the letter as a lead, even in a lead-source folder."""

    kind: ClassVar[str] = "not_lead"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return self.kind

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind}


@dataclass(frozen=True, slots=True)
class Autoreply:
    """A rule's say on the auto-reply: none for this letter (``text`` None), or another text."""

    text: str | None = None
    kind: ClassVar[str] = "autoreply"

    def key(self) -> str:
        """Name this effect stably, for the outbox idempotency key."""
        return "autoreply:off" if self.text is None else "autoreply:text"

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {"kind": self.kind, "off": self.text is None, "text": self.text}


Effect = (
    Forward | Move | Copy | AddFlag | RemoveFlag | SetResponsible | MarkLead | NotLead | Autoreply
)


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule tried on one letter: matched with its effects, or missed with the condition that failed."""

    rule: str
    matched: bool
    failed: str | None = None
    effects: tuple[Effect, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        return {
            "rule": self.rule,
            "matched": self.matched,
            "failed": self.failed,
            "effects": [effect.as_dict() for effect in self.effects],
        }


RuleHit = RuleResult


@dataclass(frozen=True, slots=True)
class Decision:
    """Every rule tried on a letter, in order, and the effects they add up to.

    ``implicit_keep`` is true when no rule matched: the letter stays where it is.
    ``stopped_by`` names the rule that ended evaluation, if one did; later rules are not tried.
    """

    results: tuple[RuleResult, ...]
    effects: tuple[Effect, ...]
    stopped_by: str | None
    implicit_keep: bool
    ruleset_version: str
    autoreply: str = ""

    @property
    def hits(self) -> tuple[RuleResult, ...]:
        """Give the results of the rules that matched (none when the letter was kept as it is)."""
        if self.implicit_keep:
            return ()
        return tuple(result for result in self.results if result.matched)

    @property
    def marks_deleted(self) -> bool:
        """Tell whether an effect moves the letter into its account's deleted folder."""
        return any(isinstance(effect, Move) and effect.marks_deleted for effect in self.effects)

    @property
    def lead_override(self) -> tuple[bool, str] | None:
        """Give the last rule's say on whether the letter is a lead, and that rule's name."""
        for result in reversed(self.hits):
            for effect in reversed(result.effects):
                if isinstance(effect, MarkLead | NotLead):
                    return isinstance(effect, MarkLead), result.rule
        return None

    @property
    def autoreply_override(self) -> tuple[Autoreply, str] | None:
        """Give the last rule's say on the auto-reply, and that rule's name."""
        for result in reversed(self.hits):
            for effect in reversed(result.effects):
                if isinstance(effect, Autoreply):
                    return effect, result.rule
        return None

    def as_dict(self) -> dict[str, Any]:
        """Give the JSON shape recorded in the audit trail."""
        out: dict[str, Any] = {
            "ruleset_version": self.ruleset_version,
            "implicit_keep": self.implicit_keep,
            "stopped_by": self.stopped_by,
            "effects": [effect.as_dict() for effect in self.effects],
            "results": [result.as_dict() for result in self.results],
        }
        if self.autoreply:
            out["autoreply"] = self.autoreply
        return out


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What the rules need to know of an account: its folders, and its address for loop checks."""

    watched: tuple[str, ...] = ("INBOX",)
    deleted: str = "Trash"
    address: str = ""


class LetterFacts:
    """A parsed letter with where it was found and its size: what rule conditions look at.

    ``headers`` maps lower-cased header names to values (repeats joined by a line break).
    ``memo`` is a per-letter cache the rules engine fills with derived views (lower-cased
    subject, recipient domains, ...), so each is computed at most once per letter.
    """

    __slots__ = ("account", "folder", "headers", "letter", "memo", "size")

    def __init__(
        self,
        letter: ParsedLetter,
        *,
        account: str,
        folder: str,
        size: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.letter = letter
        self.account = account
        self.folder = folder
        self.size = size
        source = letter.headers if headers is None else headers
        self.headers: dict[str, str] = {name.lower(): value for name, value in source.items()}
        self.memo: dict[object, Any] = {}

    def __repr__(self) -> str:
        return (
            f"LetterFacts(account={self.account!r}, folder={self.folder!r}, size={self.size}, "
            f"message_id={self.letter.message_id!r})"
        )
