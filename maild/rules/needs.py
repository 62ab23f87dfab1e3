"""What of a stored letter a rule set reads, so rules can run on stored rows without re-parsing.

The ``letters`` row holds the first From mailbox, To, Cc, Reply-To, the subject, the text and
HTML bodies, and the ``attachments`` table the attachment list. Conditions on any other header,
and the forward action (which looks for the loop marker and Auto-Submitted), need the header
block; a condition on the subject or an address header reads the raw header only where the
parsed value is empty (``header_if_empty``). A condition this module does not know needs all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from maild.rules.models import RuleConfig

#: The parts of a letter read from its ``letters`` row (and attachments from their table).
COLUMNS = ("subject", "from", "to", "cc", "reply_to", "text", "html", "attachments")
#: What an oversize letter (header only stored) lacks.
BODY = frozenset({"text", "html", "attachments"})

_ADDRESS_PARTS = {
    "from": ("from",),
    "to": ("to",),
    "cc": ("cc",),
    "reply_to": ("reply_to",),
    "recipient": ("to", "cc"),
}
_HEADER_PARTS = {
    "subject": "subject",
    "from": "from",
    "to": "to",
    "cc": "cc",
    "reply-to": "reply_to",
}
_NOTHING = frozenset({"size_over", "size_under", "account", "folder"})


@dataclass(frozen=True, slots=True)
class Needs:
    """The columns to read, whether every letter needs its header block, and where an empty value does."""

    columns: frozenset[str]
    headers: bool
    header_if_empty: frozenset[str]

    @property
    def body(self) -> bool:
        """Tell whether the rules read what an oversize letter does not have stored."""
        return bool(self.columns & BODY)


EVERYTHING = Needs(frozenset(COLUMNS), True, frozenset())


@dataclass
class _Found:
    """What the conditions seen so far read."""

    columns: set[str]
    empty: set[str]
    headers: bool = False

    def everything(self) -> None:
        """Read all of the letter: a condition this module does not know may look anywhere."""
        self.columns.update(COLUMNS)
        self.headers = True


def needs_of(rules: Sequence[RuleConfig]) -> Needs:
    """Give what the rules read of a letter: their conditions' views and their actions' reads."""
    found = _Found(set(), set())
    for rule in rules:
        if rule.match is not None:
            _walk(rule.match, found)
        for action in rule.actions:
            if "forward" in action:
                found.headers = True  # the loop marker and Auto-Submitted
                found.columns.add("from")  # the forward fuse counts by sender
    if found.headers:
        found.empty.clear()
    return Needs(frozenset(found.columns), found.headers, frozenset(found.empty))


def _walk(node: Any, found: _Found) -> None:
    """Add what one condition table (and the tables under it) reads."""
    if not isinstance(node, Mapping):
        found.everything()
        return
    if "all" in node or "any" in node:
        children = node.get("all", node.get("any"))
        for child in children if isinstance(children, list) else [children]:
            _walk(child, found)
        return
    if "not" in node:
        _walk(node["not"], found)
        return
    _leaf(node, found)


def _leaf(node: Mapping[str, Any], found: _Found) -> None:
    """Add what one leaf condition reads."""
    if "header" in node:
        name = str(node["header"]).strip().lower()
        part = _HEADER_PARTS.get(name)
        if part is None:
            found.headers = True
        else:
            found.columns.add(part)
            found.empty.add(part)
    elif kind := next((k for k in ("address", "domain", "display_name") if k in node), None):
        _add(found, _ADDRESS_PARTS.get(str(node[kind]), COLUMNS))
    elif "body" in node:
        _add(found, ("html",) if node["body"] == "html" else ("text", "html"))
    elif "attachment" in node or "has_attachment" in node:
        found.columns.add("attachments")
    elif not _NOTHING & set(node):
        found.everything()


def _add(found: _Found, columns: Iterable[str]) -> None:
    """Add the columns an address-like condition reads."""
    found.columns.update(columns)
