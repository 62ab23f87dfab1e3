"""Forward composition: each mode's headers, the original kept intact, no header injection."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import cast

import pytest

from maild.core.rawmail import split_letter
from maild.core.robots import LOOP_HEADER, has_loop_marker, is_auto_submitted
from maild.outbox.compose import (
    Identity,
    Outgoing,
    forward,
    forward_attach,
    forward_message_id,
    forward_redirect,
    forward_resend,
)

ACCOUNT = Identity("sales@corp.example", "Example Продажи")
TO = "boss@corp.example"
NOW = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)

ORIGINAL = (
    "Return-Path: <anna@client.example>\r\n"
    "Received: from mx.client.example by mx.corp.example; Mon, 12 Jan 2026 09:30:01 +0100\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; d=client.example;\r\n"
    " b=c2lnbmF0dXJl\r\n"
    "Sender: relay@client.example\r\n"
    "From: =?utf-8?b?0JDQvdC90LAg0J/QtdGC0YDQvtCy0LA=?= <anna@client.example>\r\n"
    "To: sales@corp.example\r\n"
    "Subject: =?utf-8?q?=D0=A1=D1=87=D1=91=D1=82_=E2=84=96_42?=\r\n"
    "Date: Mon, 12 Jan 2026 09:30:00 +0100\r\n"
    "Message-ID: <original-1@client.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Здравствуйте,\r\n"
    ".\r\n"
    "From the invoice: 100 €\r\n"
).encode()

INJECTING = (
    b"From: =?utf-8?q?Eve=0D=0ABcc:_victim@x.example?= <eve@evil.example>\r\n"
    b"To: sales@corp.example\r\n"
    b"Subject: =?utf-8?q?hello=0D=0ABcc:_victim@x.example?=\r\n"
    b"\r\n"
    b"body\r\n"
)

ODD = (
    b"From: Jos\xe9 <jose@client.example>\n"
    b"Subject: caf\xe9 \xff\xfe\r"
    b"To: sales@corp.example\r\n"
    b"\n"
    b"8-bit \x80\x81 body\rwith a lone CR\nand LF\r\n"
)


def parse(raw: bytes) -> EmailMessage:
    """Parse a composed letter the way a recipient's mail program would."""
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def mailboxes(raw: bytes, name: str) -> list[tuple[str, str]]:
    """Give a header's (display name, address) pairs, words decoded as RFC 2047 says.

    The stdlib's address parser puts a space between two adjacent encoded words of a
    display name, which RFC 2047 says to drop; folding may split a long name that way.
    """
    value = BytesParser(policy=email.policy.compat32).parsebytes(raw)[name]
    return [
        (str(make_header(decode_header(shown))), address)
        for shown, address in getaddresses([str(value)])
    ]


def header_block(raw: bytes) -> bytes:
    """Give the bytes before the first blank line."""
    return raw.split(b"\r\n\r\n", 1)[0]


def body_of(raw: bytes) -> bytes:
    """Give the bytes after the first blank line."""
    return raw.split(b"\r\n\r\n", 1)[1]


def parts(raw: bytes) -> list[EmailMessage]:
    """Give the parts of a composed multipart letter."""
    return cast(list[EmailMessage], parse(raw).get_payload())


def attached_bytes(out: Outgoing) -> bytes:
    """Cut the message/rfc822 part's content out of an attach forward, byte for byte."""
    boundary = parse(out.raw).get_boundary()
    assert boundary is not None
    parts = out.raw.split(b"\r\n--" + boundary.encode())
    assert len(parts) == 4  # head+note, rfc822 part, closing delimiter
    return parts[2].split(b"\r\n\r\n", 1)[1]


# --------------------------------------------------------------------------------------------
# attach
# --------------------------------------------------------------------------------------------


def test_attach_headers() -> None:
    """A new letter from the account to the target, Fwd: subject, new id, marker, RFC 3834."""
    out = forward_attach(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    assert out.sender == "sales@corp.example"
    assert out.recipients == (TO,)
    letter = parse(out.raw)
    assert mailboxes(out.raw, "From") == [("Example Продажи", "sales@corp.example")]
    assert str(letter["To"]) == TO
    assert str(letter["Subject"]) == "Fwd: Счёт № 42"
    assert str(letter["Auto-Submitted"]) == "auto-generated"
    assert str(letter[LOOP_HEADER]) == "sales@corp.example"
    assert letter["Date"].datetime == NOW
    assert str(letter["Message-ID"]).endswith("@corp.example>")
    assert str(letter["Message-ID"]) != "<original-1@client.example>"
    assert header_block(out.raw).isascii()  # non-ASCII is RFC 2047 encoded


def test_attach_keeps_the_original_byte_for_byte() -> None:
    """The message/rfc822 part is the original, unchanged, and parses as the original."""
    out = forward_attach(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    assert attached_bytes(out) == ORIGINAL
    note, attached = parts(out.raw)
    assert note.get_content_type() == "text/plain"
    text = note.get_content()
    assert "From: Анна Петрова <anna@client.example>" in text
    assert "Subject: Счёт № 42" in text
    assert "Date: Mon, 12 Jan 2026 09:30:00 +0100" in text
    assert attached.get_content_type() == "message/rfc822"
    assert attached["Content-Transfer-Encoding"] == "8bit"
    inner = cast(list[EmailMessage], attached.get_payload())[0]
    assert inner["Message-ID"] == "<original-1@client.example>"
    assert str(inner["Subject"]) == "Счёт № 42"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Fwd: hello", "Fwd: hello"),
        ("FW: hello", "FW: hello"),
        ("fwd:hello", "fwd:hello"),
        ("Re: hello", "Fwd: Re: hello"),
        ("Forward planning", "Fwd: Forward planning"),
        ("", "Fwd: (no subject)"),
    ],
)
def test_attach_subject_is_prefixed_once(subject: str, expected: str) -> None:
    """A subject already forwarded keeps its one prefix; others get Fwd:."""
    raw = f"From: a@client.example\r\nSubject: {subject}\r\n\r\nx\r\n".encode()
    out = forward_attach(raw, account=ACCOUNT, to=TO, now=NOW)
    assert str(parse(out.raw)["Subject"]) == expected


def test_attach_labels_7bit_and_binary_originals() -> None:
    """The attached part says what it holds: 7bit for ASCII, binary for NUL or long lines."""
    ascii_raw = b"From: a@client.example\r\nSubject: hi\r\n\r\nhello\r\n"
    out = forward_attach(ascii_raw, account=ACCOUNT, to=TO, now=NOW)
    assert parts(out.raw)[1]["Content-Transfer-Encoding"] == "7bit"
    assert "Content-Transfer-Encoding" not in parse(out.raw)
    long_raw = ascii_raw + b"x" * 2000 + b"\r\n"
    out = forward_attach(long_raw, account=ACCOUNT, to=TO, now=NOW)
    assert str(parse(out.raw)["Content-Transfer-Encoding"]) == "binary"
    assert attached_bytes(out) == long_raw


def test_attach_boundary_never_in_the_original() -> None:
    """The MIME boundary is chosen so the attached bytes cannot end the part early."""
    out = forward_attach(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    boundary = parse(out.raw).get_boundary()
    assert boundary is not None
    assert boundary.encode() not in ORIGINAL


# --------------------------------------------------------------------------------------------
# resend
# --------------------------------------------------------------------------------------------


def test_resend_rewrites_the_sender() -> None:
    """From is the account, named after the sender; replies go to the sender."""
    out = forward_resend(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    assert (out.sender, out.recipients) == ("sales@corp.example", (TO,))
    letter = parse(out.raw)
    assert mailboxes(out.raw, "From") == [
        ("Анна Петрова via Example Продажи", "sales@corp.example")
    ]
    assert mailboxes(out.raw, "Reply-To") == [("Анна Петрова", "anna@client.example")]
    assert str(letter["X-Original-From"]) == "Анна Петрова <anna@client.example>"
    assert str(letter["Auto-Submitted"]) == "auto-generated"
    assert str(letter[LOOP_HEADER]) == "sales@corp.example"


def test_resend_drops_what_would_break_or_mislead() -> None:
    """Signatures, Return-Path and Sender go; the rest of the headers stay byte for byte."""
    out = forward_resend(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    letter = parse(out.raw)
    for gone in ("DKIM-Signature", "Return-Path", "Sender"):
        assert gone not in letter
    assert len(letter.get_all("From") or []) == 1
    for kept in (
        b"Received: from mx.client.example by mx.corp.example; Mon, 12 Jan 2026 09:30:01 +0100\r\n",
        b"Subject: =?utf-8?q?=D0=A1=D1=87=D1=91=D1=82_=E2=84=96_42?=\r\n",
        b"Message-ID: <original-1@client.example>\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
    ):
        assert kept in header_block(out.raw) + b"\r\n"


def test_resend_keeps_the_body_intact() -> None:
    """The body bytes after the header block are the original's."""
    out = forward_resend(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    assert body_of(out.raw) == body_of(ORIGINAL)


def test_resend_keeps_an_existing_reply_to() -> None:
    """A letter that named where replies go keeps that, and gets no second Reply-To."""
    raw = ORIGINAL.replace(b"To: sales", b"Reply-To: desk@client.example\r\nTo: sales")
    letter = parse(forward_resend(raw, account=ACCOUNT, to=TO, now=NOW).raw)
    assert letter.get_all("Reply-To") == ["desk@client.example"]


def test_resend_plain_sender_and_plain_account() -> None:
    """Without display names, the sender's address and the account's address are shown."""
    raw = b"From: anna@client.example\r\nSubject: hi\r\n\r\nhello\r\n"
    out = forward_resend(raw, account=Identity("sales@corp.example"), to=TO)
    assert mailboxes(out.raw, "From") == [
        ("anna@client.example via sales@corp.example", "sales@corp.example")
    ]


# --------------------------------------------------------------------------------------------
# redirect
# --------------------------------------------------------------------------------------------


def test_redirect_prepends_a_resent_block_only() -> None:
    """The original bytes follow the Resent- block and the marker, unchanged."""
    out = forward_redirect(ORIGINAL, account=ACCOUNT, to=TO, now=NOW)
    assert (out.sender, out.recipients) == ("sales@corp.example", (TO,))
    assert out.raw.endswith(ORIGINAL)
    added = parse(out.raw[: -len(ORIGINAL)] + b"\r\n")
    assert [name for name, _ in added.items()] == [
        "Resent-Date",
        "Resent-From",
        "Resent-To",
        "Resent-Message-ID",
        LOOP_HEADER,
    ]
    assert added["Resent-Date"].datetime == NOW
    assert added["Resent-From"].addresses[0].addr_spec == "sales@corp.example"
    assert str(added["Resent-To"]) == TO
    assert str(added["Resent-Message-ID"]).endswith("@corp.example>")
    assert "Auto-Submitted" not in added
    assert str(parse(out.raw)["From"]) == "Анна Петрова <anna@client.example>"


def test_forward_dispatches_on_mode() -> None:
    """forward() is the three composers behind one name."""
    assert forward("redirect", ORIGINAL, account=ACCOUNT, to=TO).raw.endswith(ORIGINAL)
    assert b"multipart/mixed" in forward("attach", ORIGINAL, account=ACCOUNT, to=TO).raw
    assert b"X-Original-From" in forward("resend", ORIGINAL, account=ACCOUNT, to=TO).raw


def test_every_attempt_at_a_forward_carries_the_same_message_id() -> None:
    """A forward sent twice (a crash before its row was marked) reaches its recipient as one letter."""
    first = forward_message_id("7:41:boss@corp.example:attach:<original-1@client.example>", ACCOUNT)
    again = forward_message_id("7:41:boss@corp.example:attach:<original-1@client.example>", ACCOUNT)
    other = forward_message_id("8:41:boss@corp.example:attach:<original-1@client.example>", ACCOUNT)
    assert first == again != other
    assert first.startswith("<") and first.endswith(".forward@corp.example>")
    headers = {
        mode: BytesParser(policy=email.policy.compat32).parsebytes(
            forward(mode, ORIGINAL, account=ACCOUNT, to=TO, message_id=first).raw
        )
        for mode in ("attach", "redirect", "resend")
    }
    assert headers["attach"]["Message-ID"] == first
    assert headers["redirect"]["Resent-Message-ID"] == first
    assert headers["resend"]["Message-ID"] == "<original-1@client.example>"
    unnamed = forward("attach", ORIGINAL, account=ACCOUNT, to=TO).raw
    assert first.encode() not in unnamed


# --------------------------------------------------------------------------------------------
# safety: injection, odd bytes, bad addresses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compose", [forward_attach, forward_resend, forward_redirect])
def test_no_header_injection(compose: object) -> None:
    """A line break hidden in an encoded subject or name never becomes a header."""
    out = compose(INJECTING, account=ACCOUNT, to=TO, now=NOW)  # type: ignore[operator]
    letter = parse(out.raw)
    assert "Bcc" not in letter
    assert b"\nBcc:" not in out.raw
    assert b"\rBcc:" not in out.raw
    assert all(" Bcc" not in name for name in letter)


def test_injected_subject_is_one_line_in_attach() -> None:
    """The decoded line break becomes a space inside the new subject."""
    letter = parse(forward_attach(INJECTING, account=ACCOUNT, to=TO, now=NOW).raw)
    assert str(letter["Subject"]) == "Fwd: hello Bcc: victim@x.example"


@pytest.mark.parametrize(
    "to", ["a@b.example\r\nBcc: c@d.example", "x <a@b.example>", "a b@c.d", ""]
)
@pytest.mark.parametrize("compose", [forward_attach, forward_resend, forward_redirect])
def test_unsafe_target_is_refused(compose: object, to: str) -> None:
    """A target address that could carry a header or an SMTP parameter is refused."""
    with pytest.raises(ValueError, match="not a plain address"):
        compose(ORIGINAL, account=ACCOUNT, to=to)  # type: ignore[operator]


def test_local_addresses_are_fine() -> None:
    """An account or target without a dot in its domain (a local relay) is allowed."""
    out = forward_redirect(ORIGINAL, account=Identity("sales@localhost"), to="ops@mailhost")
    assert (out.sender, out.recipients) == ("sales@localhost", ("ops@mailhost",))


def test_odd_bytes_do_not_stop_composition() -> None:
    """8-bit headers, bare LF and lone CR compose in every mode; the original survives."""
    attach = forward_attach(ODD, account=ACCOUNT, to=TO, now=NOW)
    assert attached_bytes(attach) == ODD
    assert "José" in parts(attach.raw)[0].get_content()
    resend = forward_resend(ODD, account=ACCOUNT, to=TO, now=NOW)
    assert resend.raw.endswith(b"\n8-bit \x80\x81 body\rwith a lone CR\nand LF\r\n")
    assert mailboxes(resend.raw, "From")[0][0] == "José via Example Продажи"
    redirect = forward_redirect(ODD, account=ACCOUNT, to=TO, now=NOW)
    assert redirect.raw.endswith(ODD)
    assert b"\r\n" not in redirect.raw[: -len(ODD)]  # added lines follow the letter's LF


@pytest.mark.parametrize(
    "raw",
    [b"", b"no header at all\r\n", b"Subject: cut off", b"\r\n\r\nbody only", b"\x00\xff" * 10],
)
@pytest.mark.parametrize("mode", ["attach", "resend", "redirect"])
def test_garbage_composes(raw: bytes, mode: str) -> None:
    """Whatever the stored bytes are, composing gives a letter with the marker."""
    out = forward(mode, raw, account=ACCOUNT, to=TO, now=NOW)  # type: ignore[arg-type]
    assert has_loop_marker(out.raw, "sales@corp.example")


# --------------------------------------------------------------------------------------------
# rawmail
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [ORIGINAL, ODD, INJECTING, b"", b"x", b"A: 1\r\n b\rC: 2\n\nbody"])
def test_split_letter_loses_no_byte(raw: bytes) -> None:
    """The fields and the rest put back together are the letter, byte for byte."""
    letter = split_letter(raw)
    assert b"".join(field.raw for field in letter.fields) + letter.body == raw


def test_split_letter_reads_folded_and_encoded_values() -> None:
    """Values are unfolded and decoded for reading."""
    letter = split_letter(ORIGINAL)
    assert letter.values("subject") == ["Счёт № 42"]
    assert letter.values("DKIM-Signature") == [
        "v=1; a=rsa-sha256; d=client.example; b=c2lnbmF0dXJl"
    ]
    assert letter.first("x-missing") is None


# --------------------------------------------------------------------------------------------
# loop marker and robots
# --------------------------------------------------------------------------------------------


def test_composed_letters_carry_the_marker() -> None:
    """Every mode marks its letter; attach and resend also say they were auto-generated."""
    for mode in ("attach", "resend", "redirect"):
        out = forward(mode, ORIGINAL, account=ACCOUNT, to=TO)
        assert has_loop_marker(out.raw)
        assert has_loop_marker(out.raw, "SALES@corp.example")
        assert not has_loop_marker(out.raw, "support@corp.example")
        assert is_auto_submitted(out.raw) == (mode != "redirect")


@pytest.mark.parametrize(
    ("headers", "address", "expected"),
    [
        ({}, None, False),
        ({"X-Maild-Loop": "sales@corp.example"}, None, True),
        ({"x-maild-loop": "sales@corp.example"}, "sales@corp.example", True),
        ({"x-maild-loop": " <Sales@Corp.Example> "}, "sales@corp.example", True),
        ({"x-maild-loop": "sales@corp.example"}, "support@corp.example", False),
        ({"x-maild-loop": "a@corp.example\nsales@corp.example"}, "sales@corp.example", True),
        ({"subject": "X-Maild-Loop: sales@corp.example"}, None, False),
    ],
)
def test_loop_marker_in_headers(
    headers: dict[str, str], address: str | None, expected: bool
) -> None:
    """The marker is found in a header mapping (any case, repeats joined by line breaks)."""
    assert has_loop_marker(headers, address) is expected


def test_loop_marker_in_raw_bytes() -> None:
    """The marker is found in raw bytes, also folded, but never in the body."""
    raw = b"From: a@b.example\r\nX-Maild-Loop:\r\n sales@corp.example\r\n\r\nbody\r\n"
    assert has_loop_marker(raw, "sales@corp.example")
    in_body = b"From: a@b.example\r\n\r\nX-Maild-Loop: sales@corp.example\r\n"
    assert not has_loop_marker(in_body)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"From": "anna@client.example", "Subject": "hello"}, False),
        ({"Auto-Submitted": "no"}, False),
        ({"Auto-Submitted": "No (a person wrote this)"}, False),
        ({"Auto-Submitted": "auto-replied"}, True),
        ({"auto-submitted": "auto-generated; owner-email=x@y.example"}, True),
        ({"Precedence": "bulk"}, True),
        ({"Precedence": "List"}, True),
        ({"Precedence": "junk"}, True),
        ({"Precedence": "first-class"}, False),
        ({"List-Id": "<news.client.example>"}, True),
        ({"List-Id": ""}, True),
        ({"Return-Path": "<>"}, True),
        ({"Return-Path": "< >"}, True),
        ({"Return-Path": "<anna@client.example>"}, False),
        ({"X-Autoreply": "yes"}, True),
        ({"X-Autorespond": "Out of office"}, True),
        ({"X-Auto-Response-Suppress": "All"}, True),
        ({"X-Auto-Response-Suppress": "DR, OOF"}, True),
        ({"X-Auto-Response-Suppress": "autoreply"}, True),
        ({"X-Auto-Response-Suppress": "DR, RN, NRN"}, False),
        ({"From": "Mail Delivery System <MAILER-DAEMON@mx.example>"}, True),
        ({"From": "postmaster@client.example"}, True),
        ({"From": "MAILER-DAEMON"}, True),
        ({"From": "Postmaster Anna <anna@client.example>"}, False),
        ({"From": "postmaster-team@client.example"}, False),
    ],
)
def test_auto_submitted_table(headers: dict[str, str], expected: bool) -> None:
    """RFC 3834 and the de-facto robot headers are recognised; people's mail is not."""
    assert is_auto_submitted(headers) is expected
    raw = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\nbody\r\n"
    assert is_auto_submitted(raw.encode()) is expected


def test_robot_headers_in_the_body_do_not_count() -> None:
    """Only the header block is read."""
    raw = b"From: anna@client.example\r\n\r\nPrecedence: bulk\r\nAuto-Submitted: auto-replied\r\n"
    assert not is_auto_submitted(raw)


def test_message_type_is_not_needed() -> None:
    """The helpers take plain mappings: a stdlib Message works as one too."""
    message = Message()
    message["Precedence"] = "bulk"
    assert is_auto_submitted(dict(message.items()))


def test_attach_carries_earlier_loop_markers() -> None:
    """A letter forwarded before keeps its markers in an attach forward, so a loop is seen."""
    from maild.core.robots import has_loop_marker
    from maild.outbox.compose import Identity, forward_attach

    raw = (
        b"From: a@client.example\r\nTo: support@corp.example\r\nSubject: hi\r\n"
        b"X-Maild-Loop: sales@corp.example\r\nX-Maild-Loop: bad value\r\nBcc: x\r\n\r\nbody\r\n"
    )
    out = forward_attach(raw, account=Identity("support@corp.example"), to="sales@corp.example")
    head = out.raw.split(b"\r\n\r\n", 1)[0]
    assert has_loop_marker(head, "sales@corp.example")
    assert has_loop_marker(head, "support@corp.example")
    assert b"bad value" not in head
