"""Parsing: hostile letters become clean values or a ParseError, never a crash or a poisoned string."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from maild.errors import ParseError
from maild.ingest.parse import (
    MAX_DEFECTS,
    MAX_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_REFERENCES,
    bounded_header,
    clean_text,
    parse_letter,
)
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


def test_header_bomb_is_cut_but_keeps_sender_and_subject() -> None:
    """20,000 fields before From and Subject: parsed in bounded time, sender kept, the cut recorded."""
    bomb = b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
    raw = bomb + b"From: Anna <anna@client.example>\r\nSubject: real subject\r\n\r\nbody\r\n"
    parsed = parse_letter(raw)
    assert parsed.sender is not None and parsed.sender.address == "anna@client.example"
    assert parsed.subject == "real subject"
    assert parsed.defects[0].startswith("HeaderLimitDefect: the header has 20002 fields")
    assert len(parsed.headers) <= MAX_HEADER_FIELDS + 2


def test_megabyte_field_is_cut() -> None:
    """A subject of a megabyte of encoded words (quadratic to decode) is cut before parsing."""
    raw = b"From: a@b.example\r\nSubject: " + b"=?utf-8?q?a?= " * 75000 + b"\r\n\r\nx\r\n"
    text, defect = bounded_header(raw)
    assert defect is not None and len(text) < MAX_FIELD_BYTES + 100
    assert parse_letter(raw).subject.startswith("aaaa")


def test_ordinary_letter_is_parsed_as_it_is() -> None:
    """A letter within the limits is handed to the parser unchanged, with no extra defect."""
    raw = letter(sender=("A", "a@x.example"), to="s@corp.example", subject="s", body="b")
    assert bounded_header(raw) == (raw, None)


def test_defects_and_references_are_capped() -> None:
    """Thousands of defects or cited ids are kept to a bounded list (first and newest ids)."""
    refs = b"References: " + b" ".join(b"<r%d@x.example>" % i for i in range(3000))
    dates = b"".join(b"Date: garbage %d\r\n" % i for i in range(500))
    parsed = parse_letter(b"From: a@b.example\r\n" + refs + b"\r\n" + dates + b"\r\n")
    assert len(parsed.references) == MAX_REFERENCES
    assert parsed.references[0] == "<r0@x.example>"
    assert parsed.references[-1] == "<r2999@x.example>"
    assert len(parsed.defects) == MAX_DEFECTS + 1
    assert parsed.defects[-1].endswith("more defects")


def test_attached_letter_with_an_8bit_charset_name_parses() -> None:
    """An attached letter whose charset name is not ASCII no longer fails the whole letter."""
    inner = b"From: a@b.example\r\nContent-Type: text/plain; charset=\x80x\r\n\r\n\xcf\xf0\r\n"
    raw = (
        b"From: c@d.example\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        + inner
        + b"\r\n--p--\r\n"
    )
    parsed = parse_letter(raw)
    assert parsed.defects[0].startswith("AttachedLetterDefect: CharsetError")
    assert parsed.sender is not None and parsed.sender.address == "c@d.example"


def test_attached_letter_with_a_vertical_tab_in_a_header_parses() -> None:
    """An attached letter the email package cannot write back is listed as a file instead."""
    inner = b"From: a@b.example\r\nFrom:\x0bundisclosed-recipients:;\r\n\r\nhi\r\n"
    raw = (
        b"From: c@d.example\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        + inner
        + b"\r\n--p--\r\n"
    )
    parsed = parse_letter(raw)
    assert parsed.defects[0].startswith("AttachedLetterDefect: HeaderParseError")
    assert [item.content_type for item in parsed.attachments] == ["application/octet-stream"]
