"""Grouping claimed mailbox effects so that one IMAP command performs many of them.

A letter's mailbox effects must run in their order (a flag before the move that takes the
letter away), so the claimed rows are split into rounds: round n holds the n-th mailbox
effect of each letter. Within a round, rows that act alike on the same folder form a group,
which the dispatcher performs with one ``UID MOVE``/``COPY``/``STORE`` per chunk of UIDs.
Rows that cannot be grouped (their letter's place is unknown, or a move into the folder the
letter is already in) go one at a time as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from maild.db.outbox import IMAP_KINDS, ClaimedItem

FLAG_KINDS = ("add_flag", "remove_flag")


@dataclass(frozen=True, slots=True)
class GroupKey:
    """What the rows of one group share: one folder, one action, one target."""

    account: str
    folder: str
    uidvalidity: int
    kind: str
    target: str
    marks_deleted: bool


def rounds(items: Iterable[ClaimedItem]) -> list[list[ClaimedItem]]:
    """Split mailbox rows (ordered by letter and seq) so each round holds one effect per letter."""
    position: dict[int | None, int] = {}
    out: list[list[ClaimedItem]] = []
    for item in items:
        if item.kind not in IMAP_KINDS:
            continue
        n = position.get(item.letter_id, 0) if item.letter_id is not None else 0
        position[item.letter_id] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(item)
    return out


def key_of(item: ClaimedItem) -> GroupKey | None:
    """Give the group a row belongs to, or None when it must be performed on its own."""
    if item.folder is None or item.uid is None or item.uidvalidity is None:
        return None
    if item.kind == "move" and item.folder == item.target:
        return None
    return GroupKey(
        account=item.account,
        folder=item.folder,
        uidvalidity=item.uidvalidity,
        kind=item.kind,
        target=item.target,
        marks_deleted=item.kind == "move" and bool(item.payload.get("marks_deleted")),
    )


def group(
    items: Iterable[ClaimedItem],
) -> tuple[dict[GroupKey, list[ClaimedItem]], list[ClaimedItem]]:
    """Sort one round's rows into groups and the rows that go one at a time."""
    groups: dict[GroupKey, list[ClaimedItem]] = {}
    singles: list[ClaimedItem] = []
    for item in items:
        key = key_of(item)
        if key is None:
            singles.append(item)
        else:
            groups.setdefault(key, []).append(item)
    return groups, singles


def result_of(key: GroupKey, uid: int, present: bool, new_uids: dict[int, int]) -> dict[str, Any]:
    """Give one row's result, worded as the one-at-a-time handlers word it."""
    if key.kind in FLAG_KINDS:
        return {"flag": key.target, "missing": not present}
    if not present:
        return {"folder": key.target, "missing": True}
    return {"folder": key.target, "uid": new_uids.get(uid)}


def uids_of(items: Sequence[ClaimedItem]) -> list[int]:
    """Give the rows' UIDs, sorted and without repeats."""
    return sorted({item.uid for item in items if item.uid is not None})
