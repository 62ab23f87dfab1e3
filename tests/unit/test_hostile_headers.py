"""Header values built to exhaust the stack or the clock, read on the daemon's own event loop."""

from __future__ import annotations

from maild.autoreply.compose import compose_reply
from maild.core import robots
from maild.core.rawmail import MAX_DECODED, address_pairs, decode_words, mailboxes, split_letter
from maild.ingest.parse import parse_letter
from maild.outbox.compose import MAX_COPIED, MAX_REPLY_TO, Identity, forward
from maild.outbox.letter import Draft, compose


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


# Decodes to "=?utf-8?Q?a=0D=0ABcc:_x@evil?=": once more, and it would be a line break and a Bcc.
NESTED = "=?utf-8?Q?=3D=3Futf-8=3FQ=3Fa=3D0D=3D0ABcc=3A=5Fx=40evil=3F=3D?="
CRLF_WORD = "=?utf-8?Q?Eve=0D=0ABcc=3A_x=40evil.example?="


def _header_names(raw: bytes) -> list[str]:
    """Name the header fields of a composed letter, as a receiving server would read them."""
    return [field.key for field in split_letter(raw).fields]


def test_forwards_keep_encoded_line_breaks_out_of_their_headers() -> None:
    """A subject or name that decodes to an encoded line break adds no header to a forward."""
    raw = (f"From: {NESTED} <eve@hostile.example>\r\nSubject: {NESTED}\r\n\r\nbody\r\n").encode()
    account = Identity("sales@corp.example", "Corp Sales")
    for mode in ("attach", "resend"):
        out = forward(mode, raw, account=account, to="desk@corp.example")
        own = split_letter(out.raw).fields[:6]
        assert "bcc" not in [field.key for field in own], (mode, out.raw[:400])


def test_auto_reply_keeps_an_encoded_line_break_out_of_to() -> None:
    """The answered sender's name, still encoded, cannot smuggle a Bcc into the auto-reply."""
    payload = {"to": "eve@hostile.example", "to_name": CRLF_WORD, "subject": f"Auto: {NESTED}"}
    reply = compose_reply(payload, account_address="sales@corp.example", account_name="Sales")
    assert "bcc" not in _header_names(reply.raw)


def test_crm_subject_cannot_use_an_encoded_word_to_break_the_line() -> None:
    """An encoded line break in the CRM's subject stays text."""
    out = compose(
        Draft(
            account_address="sales@corp.example",
            account_name="sales",
            sender_name="Anna",
            author_full_name="Anna",
            to="ivan@x.example",
            subject=CRLF_WORD,
            text="Hello",
        )
    )
    assert "bcc" not in _header_names(out.raw)


def test_forwards_take_a_bounded_part_of_huge_headers() -> None:
    """A megabyte subject or sender list yields short headers (the email package folds slowly)."""
    senders = ", ".join(f"s{i}@x.example" for i in range(50000))
    raw = f"From: {senders}\r\nSubject: {'word ' * 200000}\r\n\r\nbody\r\n".encode()
    account = Identity("sales@corp.example", "Corp Sales")
    attach = split_letter(forward("attach", raw, account=account, to="d@corp.example").raw)
    subject = attach.values("Subject")[0]
    assert subject.startswith("Fwd: word") and len(subject) <= MAX_COPIED + 5
    resend = split_letter(forward("resend", raw, account=account, to="d@corp.example").raw)
    assert len(resend.values("Reply-To")[0].split(",")) == MAX_REPLY_TO
    assert len(resend.values("X-Original-From")[0]) <= MAX_COPIED


def test_resend_keeps_the_body_out_of_the_header_with_a_bare_cr() -> None:
    """A kept field ending in a bare CR, a dropped field, then LF: the body stays the body."""
    raw = b"Subject: first\rBcc: evil@x.example\n\nX-From-Body: injected\r\n\r\nhello\r\n"
    account = Identity("sales@corp.example", "Corp Sales")
    out = forward("resend", raw, account=account, to="d@corp.example")
    names = _header_names(out.raw)
    assert "subject" in names and "x-from-body" not in names and "bcc" not in names


def test_resend_leaves_out_a_sender_the_email_package_cannot_write() -> None:
    """A From whose domain ends in a dot is no Reply-To, and the resend still goes out."""
    raw = b"From: Sender <sender@hostile.>\r\nSubject: s\r\n\r\nbody\r\n"
    out = forward("resend", raw, account=Identity("sales@corp.example"), to="d@corp.example")
    assert "reply-to" not in _header_names(out.raw)


def test_ids_with_control_characters_are_no_ids() -> None:
    """A cited id holding a control character is dropped, so no auto-reply header carries it."""
    parsed = parse_letter(b"From: a@b.example\r\nReferences: <a@b> <\x01c@d>\r\n\r\nx\r\n")
    assert parsed.references == ("<a@b>",)
    payload = {"to": "a@b.example", "references": ["<a@b>", "<\x01c@d>"], "in_reply_to": "<\x02>"}
    reply = compose_reply(payload, account_address="sales@corp.example", account_name="Sales")
    assert b"\x01" not in reply.raw and b"\x02" not in reply.raw
