"""Parsing: hostile letters become clean values or a ParseError, never a crash or a poisoned string."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from maild.errors import ParseError
from maild.ingest.parse import clean_text, parse_letter
from maild.testing.samples import MALFORMED, demo_mailboxes, letter


def test_addresses_keep_display_names() -> None:
    """From/To/Cc keep display names (the Responsible lookup needs them), addresses lower-cased."""
    raw = (
        b"From: =?utf-8?b?0JDQvdC90LAg0J/QtdGC0YDQvtCy0LA=?= <Anna@Client.example>\r\n"
        b'To: "Anna Petrova" <sales@corp.example>, b@y.example\r\nCc: c@z.example\r\n'
        b"Subject: hi\r\nMessage-ID: <m1@client.example>\r\n"
        b"In-Reply-To: <p0@corp.example>\r\nReferences: <p-1@corp.example>\r\n <p0@corp.example>\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0300\r\n\r\nbody\r\n"
    )
    parsed = parse_letter(raw)
    assert parsed.sender is not None
    assert (parsed.sender.name, parsed.sender.address) == ("Анна Петрова", "anna@client.example")
    assert [(a.name, a.address) for a in parsed.to] == [
        ("Anna Petrova", "sales@corp.example"),
        ("", "b@y.example"),
    ]
    assert parsed.cc[0].address == "c@z.example"
    assert parsed.message_id == "<m1@client.example>"
    assert parsed.in_reply_to == "<p0@corp.example>"
    assert parsed.references == ("<p-1@corp.example>", "<p0@corp.example>")
    assert parsed.sent_at == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def test_attachments_listed_with_sizes() -> None:
    """Attachments are listed by name, type, decoded size and hash."""
    raw = letter(
        sender=("A", "a@x.example"),
        to="s@corp.example",
        subject="s",
        body="b",
        attachments=[("q.pdf", "application/pdf", b"%PDF" + bytes(1000))],
    )
    parsed = parse_letter(raw)
    [item] = parsed.attachments
    assert (item.filename, item.content_type, item.size) == ("q.pdf", "application/pdf", 1004)
    assert len(item.sha256) == 64


def test_missing_header_block_is_a_defect() -> None:
    """A letter without headers is reported as defective, so the CRM can flag it."""
    assert parse_letter(MALFORMED["no headers"]).defects


def test_nul_and_surrogates_are_cleaned() -> None:
    """NUL bytes (PostgreSQL refuses them) and lone surrogates never reach the database."""
    cleaned = clean_text("a\x00b\udcff")
    assert cleaned.startswith("a\ufffdb\ufffd")
    cleaned.encode("utf-8")  # would raise on a lone surrogate
    parsed = parse_letter(b"From: a@b.example\r\nSubject: x\r\n\r\nbo\x00dy\r\n")
    assert "\x00" not in parsed.text


def test_deep_nesting_is_a_parse_error() -> None:
    """A letter nested thousands of levels deep fails as ParseError, not a crash."""
    with pytest.raises(ParseError, match="nesting too deep"):
        parse_letter(MALFORMED["nested too deep"])


@pytest.mark.parametrize("kind", sorted(set(MALFORMED) - {"nested too deep"}))
def test_other_malformed_letters_parse(kind: str) -> None:
    """Every other hostile sample parses to values, so only true parser bombs are flagged failed."""
    assert isinstance(parse_letter(MALFORMED[kind]).text, str)


def test_parsed_letter_pickles() -> None:
    """A parsed letter crosses the process boundary intact."""
    for raws in demo_mailboxes().values():
        for raw in raws:
            if raw == MALFORMED["nested too deep"]:
                continue
            parsed = parse_letter(raw)
            assert pickle.loads(pickle.dumps(parsed)) == parsed
