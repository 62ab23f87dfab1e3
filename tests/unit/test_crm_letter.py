"""Composing the CRM's letters: personal name, autotexts, signature, font, limits, no header injection."""

from __future__ import annotations

import email
import email.policy

import pytest

from maild.outbox.letter import Draft, DraftError, FileAttachment, compose, part_named

ORIGINAL = b"From: Ivan <ivan@x.example>\r\nSubject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\n\r\nbody\r\n"


def draft(**changes: object) -> Draft:
    base = {
        "account_address": "sales@corp.example",
        "account_name": "sales",
        "sender_name": "Анна Петрова",
        "author_full_name": "Anna Petrova",
        "to": "Иван <ivan@x.example>",
        "subject": "Offer",
        "text": "Hello",
    }
    return Draft(**{**base, **changes})  # type: ignore[arg-type]


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_personal_name_and_encoded_headers() -> None:
    """From carries the personal sender name, RFC 2047-encoded; Bcc is in the envelope only."""
    out = compose(draft(bcc="boss@corp.example"))
    msg = parse(out.raw)
    assert str(msg["From"]) == "Анна Петрова <sales@corp.example>"
    assert b"=?utf-8?" in out.raw.split(b"\r\n\r\n")[0]
    assert msg["Bcc"] is None and out.recipients == ("ivan@x.example", "boss@corp.example")


def test_autotexts_and_signature() -> None:
    """Autotexts fill subject, body and signature; the signature follows the standard separator."""
    out = compose(
        draft(
            subject="Re: {request_number_reply} offer",
            text="Request {request_number}",
            signature="{current_user}\nCorp",
            request_number=42,
        )
    )
    msg = parse(out.raw)
    assert str(msg["Subject"]) == "Re: [#42] offer"
    assert msg.get_content() == "Request 42\r\n\r\n-- \r\nAnna Petrova\r\nCorp\r\n"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"text": "Dear {first_name}"}, r"text_body: unknown autotext \{first_name\}"),
        ({"subject": "{request_number}"}, "has no value: the letter has no lead"),
        ({"subject": "Hi\r\nBcc: evil@x.example"}, "subject: must be one line"),
        ({"to": "a@x.example\nBcc: evil@x.example"}, "to: must be one line"),
        ({"sender_name": "Anna\r\nX-Evil: 1"}, "sender name: must be one line"),
        ({"to": "x@localhost"}, "is not an email address"),
        ({"to": ""}, "no recipient"),
        ({"font": "Verdana; background: url(http://evil)"}, "font"),
        ({"cc": "a@x.example\r\nBcc: evil@x.example"}, "cc: must be one line"),
        ({"bcc": "not an address"}, "bcc: "),
        ({"to": '"a b"@x.example'}, "is not an email address"),
        (
            {"files": [FileAttachment("a\r\nBcc: evil@x.example.pdf", "application/pdf", b"x")]},
            r"files\[0\].filename: must be one line",
        ),
        (
            {"files": [FileAttachment("a.pdf", "application/pdf\r\nBcc: e@x.example", b"x")]},
            r"files\[0\].content_type: .* is not a MIME type",
        ),
        (
            {"files": [FileAttachment("a.pdf", 'application/pdf; name="x"', b"x")]},
            r"files\[0\].content_type: .* is not a MIME type",
        ),
    ],
)
def test_refused(changes: dict[str, object], message: str) -> None:
    """Unknown autotexts, line breaks in headers, bad addresses and odd fonts are refused, with why."""
    with pytest.raises(DraftError, match=message):
        compose(draft(**changes))


def test_font_wraps_html_only() -> None:
    """The font wraps the HTML part; the plain-text part is untouched."""
    out = compose(draft(html="<p>Hi</p>", font="Verdana, 11pt"))
    msg = parse(out.raw)
    html = msg.get_body(preferencelist=("html",))
    plain = msg.get_body(preferencelist=("plain",))
    assert html is not None and plain is not None
    assert html.get_content().startswith(
        '<div style="font-family: Verdana; font-size: 11pt"><p>Hi</p>'
    )
    assert "font" not in plain.get_content()


def test_attached_letter_is_byte_identical() -> None:
    """A stored letter is attached as message/rfc822 with its original bytes, unchanged."""
    out = compose(draft(letters=[ORIGINAL], files=[FileAttachment("a.txt", "text/plain", b"x")]))
    msg = parse(out.raw)
    parts = list(msg.iter_attachments())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/rfc822"]
    body = out.raw.split(b'filename="letter-1.eml"', 1)[1].split(b"\r\n\r\n", 1)[1]
    assert body.startswith(ORIGINAL + b"\r\n--")


def test_attachment_limit_counts_everything() -> None:
    """Files and attached letters together must fit the limit; the reason gives the sizes."""
    files = [FileAttachment("big.bin", "application/octet-stream", bytes(900_000))]
    compose(draft(files=files, max_attachments_bytes=1_000_000))
    with pytest.raises(
        DraftError,
        match=r"attachments total 1\.0 MB \(2 files\), over the account's limit of 1\.0 MB",
    ):
        compose(draft(files=files, letters=[bytes(200_000)], max_attachments_bytes=1_048_576))


def test_part_named_finds_a_file_of_a_stored_letter() -> None:
    """A file of a stored letter is found by name for attaching by reference."""
    raw = compose(draft(files=[FileAttachment("offer.pdf", "application/pdf", b"%PDF")])).raw
    assert part_named(raw, "offer.pdf") == b"%PDF"
    with pytest.raises(KeyError):
        part_named(raw, "missing.pdf")
