"""Grouping claimed mailbox effects: rounds keep each letter's order, groups share one command."""

from __future__ import annotations

from typing import Any

from maild.db.outbox import ClaimedItem
from maild.outbox import batch


def _item(
    row: int, letter: int | None, kind: str, target: str, seq: int = 0, **extra: Any
) -> ClaimedItem:
    fields: dict[str, Any] = {
        "id": row,
        "account": "sales",
        "letter_id": letter,
        "kind": kind,
        "target": target,
        "payload": {},
        "seq": seq,
        "attempts": 1,
        "folder": "INBOX",
        "uidvalidity": 7,
        "uid": letter,
        "message_id": "",
    }
    return ClaimedItem(**(fields | extra))


def test_rounds_hold_one_effect_per_letter_in_order() -> None:
    items = [
        _item(1, 10, "add_flag", "$A", 0),
        _item(2, 10, "move", "Done", 1),
        _item(3, 11, "move", "Done", 0),
        _item(4, 11, "forward", "x@y.example", 1),
        _item(5, 12, "add_flag", "$A", 0),
    ]
    assert [[i.id for i in r] for r in batch.rounds(items)] == [[1, 3, 5], [2]]


def test_groups_split_by_action_target_and_deletion_mark() -> None:
    items = [
        _item(1, 10, "move", "Done"),
        _item(2, 11, "move", "Done"),
        _item(3, 12, "move", "Trash", payload={"marks_deleted": True}),
        _item(4, 13, "copy", "Done"),
        _item(5, 14, "move", "INBOX"),  # already there: on its own
        _item(6, 15, "move", "Done", uid=None),  # place unknown: on its own
        _item(7, 16, "move", "Done", uidvalidity=8),
    ]
    groups, singles = batch.group(items)
    assert sorted(sorted(i.id for i in g) for g in groups.values()) == [[1, 2], [3], [4], [7]]
    assert [i.id for i in singles] == [5, 6]
    [deleted] = [key for key in groups if key.target == "Trash"]
    assert deleted.marks_deleted


def test_results_are_worded_as_one_at_a_time() -> None:
    move = batch.key_of(_item(1, 10, "move", "Done"))
    flag = batch.key_of(_item(2, 10, "add_flag", "$A"))
    assert move is not None and flag is not None
    assert batch.result_of(move, 10, True, {10: 99}) == {"folder": "Done", "uid": 99}
    assert batch.result_of(move, 10, False, {}) == {"folder": "Done", "missing": True}
    assert batch.result_of(flag, 10, True, {}) == {"flag": "$A", "missing": False}
