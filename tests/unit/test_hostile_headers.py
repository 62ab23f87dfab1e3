"""Header values built to exhaust the stack or the clock, read on the daemon's own event loop."""

from __future__ import annotations

from maild.core import robots
from maild.core.rawmail import MAX_DECODED, address_pairs, decode_words, mailboxes


def test_nested_comments_keep_the_address() -> None:
    """Thousands of nested comments (recursive in the standard library) are dropped, not followed."""
    value = "(" * 3000 + "x" + ")" * 3000 + " Anna <anna@client.example>"
    assert address_pairs([value]) == [("Anna", "anna@client.example")]
    assert mailboxes("((((((((((" * 300 + "a@b.example") == []  # never closed: all comment


def test_nested_groups_give_no_address_instead_of_an_error() -> None:
    """Groups nested thousands deep cannot be parsed: no address, and no RecursionError."""
    assert address_pairs(["g:" * 3000 + "a@b.example"]) == []
    assert address_pairs(["g:" * 3000, "c@d.example"]) == [("", "c@d.example")]


def test_robot_checks_survive_a_hostile_from() -> None:
    """The machine-sender check reads a From of deep comments without failing the letter."""
    headers = {"from": "(" * 2000 + ")" * 2000 + "mailer-daemon@x.example", "subject": "s"}
    assert robots.is_auto_submitted(headers)
    assert robots.return_path({"return-path": "g:" * 3000}) == ""


def test_megabyte_of_encoded_words_is_cut_before_decoding() -> None:
    """Encoded words decode in quadratic time: only the first 16 KiB of a value is decoded."""
    decoded = decode_words("=?utf-8?q?a?= " * 75000)
    assert decoded.startswith("aaaa") and len(decoded) <= MAX_DECODED
