"""The CRM letter writer gives the very bytes the email package gave for the same draft."""

from __future__ import annotations

import base64
import email.utils
import io
import random
import re
import secrets
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import pytest

from maild.core.robots import LOOP_HEADER
from maild.outbox import letter as letter_module
from maild.outbox import mime
from maild.outbox.letter import Draft, FileAttachment, compose

NOW = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
_BOUNDARY = re.compile(rb"maild-[0-9a-f]{24}")

NAMES = [
    "Anna",
    "Анна Петрова",
    "Corp Sales, Moscow",
    'Anna "the seller" P.',
    "A" * 90,
    "Очень длинное имя отправителя, которое не поместится в одну строку заголовка",
    "",
]
ADDRESSES = [
    "Client 1 <client1@client.example>",
    "client2@client.example",
    "Иван <ivan@x.example>, Пётр Петров <petr@y.example>",
    '"Dr. Who" <who@tardis.example>',
    ", ".join(f"Client number {n} <client{n}@client.example>" for n in range(6)),
    'Client 10 <client10@client.example>, "Smith, John 2" <john2@x.example>',
    "Клиент 5 <client5@client.example>",
]
SUBJECTS = [
    "Offer 7: pallets and delivery",
    "Коммерческое предложение на поставку паллет и доставку до склада клиента",
    "Re: [#42] " + "long subject words " * 8,
    "",
    "tabs\tand  double  spaces",
    "Счёт 123 от 24.11.2026",
    "Offer 12345678901234567890 " * 4,
    "Re: [#1234567] " + "x" * 70,
]
TEXTS = [
    "Dear client,\n\nplease find our offer attached.\n\n{current_user}",
    "",
    "short",
    "Уважаемый клиент!\nВо вложении наше предложение.",
    "Уважаемый клиент, во вложении наше коммерческое предложение на поставку паллет.",
    "a line well over seventy-eight characters long, so that the email package picks qp for it",
    "trailing spaces   \nand a form\x0cfeed\r\nand CRLF\rand CR",
    "x" * 200,
    "y" * 78 + "\n" + "z" * 77,
    "y" * 79,
    "ж" * 39 + "\nok",
    "=?utf-8?q?not_a_word?= and 100% = sign\n.leading dot\nFrom the start",
]
HTMLS = ["", "<p>Dear client,</p><p>our offer <b>7</b>.</p>", "<p>" + "Привет " * 30 + "</p>"]
TYPES = [
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "text/plain",
    "",
    "image/png",
]
FILENAMES = [
    "offer-7.pdf",
    "prices.xlsx",
    "Прайс-лист 2026.xlsx",
    "a file with spaces and (brackets).pdf",
    "n" * 100 + ".pdf",
    'quote"and;semicolon.txt',
    "",
]


def reference(draft: Draft) -> bytes:
    """Compose as maild did with the email package before the writer (kept here verbatim)."""
    m = letter_module
    values = m._autotexts(draft)
    to, cc = m._addresses(draft.to, "to"), m._addresses(draft.cc, "cc")
    subject = m._one_line(m._fill(draft.subject, values, "subject"), "subject")
    text = m._fill(draft.text, values, "text_body")
    body_html = m._fill(draft.html, values, "html_body")
    signature = m._fill(draft.signature, values, "signature")
    signature_html = m._fill(draft.signature_html, values, "signature_html")
    sender = Address(
        display_name=m._one_line(draft.sender_name, "sender name"), addr_spec=draft.account_address
    )
    msg = EmailMessage(policy=m._POLICY)
    msg["From"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(draft.now or datetime.now(UTC))
    msg["Message-ID"] = draft.message_id
    msg[LOOP_HEADER] = draft.account_address
    plain = m._with_text_signature(text, signature) if text or not body_html else ""
    msg.set_content(plain or m._text_of(body_html, signature))
    if body_html:
        msg.add_alternative(
            m._html(body_html, signature, signature_html, draft.font), subtype="html"
        )
    bodies = []
    for position, item in enumerate(draft.files):
        maintype, subtype = m._content_type(item.content_type, "x")
        token = secrets.token_hex(16).encode("ascii") if item.content else b""
        msg.add_attachment(
            token,
            maintype=maintype,
            subtype=subtype,
            filename=m._one_line(item.filename, f"files[{position}].filename"),
            cte="base64",
        )
        if token:
            bodies.append((base64.b64encode(token), item.content))
    m._name_boundaries(msg)
    return m._with_letters(msg, bodies, draft.letters)


def same_boundaries(raw: bytes) -> bytes:
    """Name the random boundaries by their order of first appearance, so two letters compare."""
    names: dict[bytes, bytes] = {}

    def one(match: re.Match[bytes]) -> bytes:
        return names.setdefault(match.group(0), b"maild-boundary-%02d-xxxxxxxxxxxxxx" % len(names))

    return _BOUNDARY.sub(one, raw)


def random_draft(rng: random.Random) -> Draft:
    """A draft drawn from names, addresses, subjects, bodies and files that fold and encode."""
    simple = "abcXYZ019._-"
    names = [*FILENAMES, "".join(rng.choice(simple) for _ in range(rng.randint(1, 90)))]
    files = [
        FileAttachment(
            rng.choice(names),
            rng.choice(TYPES),
            rng.randbytes(rng.choice([0, 1, 56, 57, 58, 1000, 30_000, 57 * 1024 + 1, 150_000])),
        )
        for n in range(rng.choice([0, 0, 1, 2, 3]))
    ]
    return Draft(
        account_address="sales@corp.example",
        account_name="sales",
        sender_name=rng.choice(NAMES),
        author_full_name=rng.choice(["Anna Petrova", "Анна Петрова"]),
        to=rng.choice(ADDRESSES),
        cc=rng.choice(["", "", "boss@corp.example", ADDRESSES[2]]),
        bcc=rng.choice(["", "audit@corp.example"]),
        subject=rng.choice(SUBJECTS),
        text=rng.choice(TEXTS),
        html=rng.choice(HTMLS),
        signature=rng.choice(["", "{current_user}\nCorp Sales, +7 495 000-00-00", "Корп"]),
        signature_html=rng.choice(["", "<i>Corp</i>"]),
        font=rng.choice(["", "Verdana, 11pt"]),
        files=files,
        letters=[b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"] if rng.random() < 0.1 else [],
        now=NOW,
        message_id=rng.choice(
            [
                f"<{rng.randrange(10**12)}.{rng.randrange(10**6)}@corp.example>",
                f"<{rng.randrange(10**40)}.{rng.randrange(10**30)}@corp.example>",
                f"<{rng.randrange(10**6)}@a-very-long-domain-name-{rng.randrange(99)}.example>",
            ]
        ),
    )


@pytest.mark.parametrize("seed", range(10))
def test_same_bytes_as_the_email_package(seed: int) -> None:
    """Many drafts, each composed both ways: byte for byte the same once boundaries are named."""
    rng = random.Random(seed)
    for _ in range(60):
        draft = random_draft(rng)
        assert same_boundaries(compose(draft).raw) == same_boundaries(reference(draft)), draft


def test_every_shape() -> None:
    """Text only, text and HTML, with and without files, HTML only: each matches the package."""
    base = random_draft(random.Random(1))
    files = [FileAttachment("offer.pdf", "application/pdf", b"%PDF-1.4 " * 50)]
    for text, html, attached in [
        ("Hello", "", []),
        ("Hello", "<p>Hi</p>", []),
        ("Hello", "", files),
        ("Hello", "<p>Hi</p>", files),
        ("", "<p>Hi</p>", files),
    ]:
        draft = Draft(
            **{
                **{k: getattr(base, k) for k in Draft.__slots__},
                "text": text,
                "html": html,
                "files": attached,
                "letters": [],
            }
        )
        assert same_boundaries(compose(draft).raw) == same_boundaries(reference(draft))


def test_stored_view_matches_the_headers() -> None:
    """The stored Message-ID and date are the values the letter's headers carry."""
    draft = random_draft(random.Random(3))
    out = compose(draft)
    parsed = email.message_from_bytes(out.raw)
    assert out.parsed.message_id == parsed["Message-ID"]
    assert out.parsed.sent_at == NOW


@pytest.mark.parametrize("size", [0, 1, 57, 58, 57 * 1024 - 1, 57 * 1024, 57 * 1024 + 1, 200_003])
def test_base64_is_written_in_blocks_as_whole_lines(size: int) -> None:
    """Block by block, the base64 is the same 76-column CRLF lines as one encoding of it all."""
    data = random.Random(size).randbytes(size)
    out = io.BytesIO()
    mime.write_base64(out, data)
    assert out.getvalue() == base64.encodebytes(data).replace(b"\n", b"\r\n")
