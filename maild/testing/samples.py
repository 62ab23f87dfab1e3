"""Sample letters for the demo, the tests and the benchmark: realistic, varied, some deliberately broken."""

from __future__ import annotations

import email.policy
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid

SALES = "sales@corp.example"
SUPPORT = "support@corp.example"

_NAMES = [
    ("Anna Petrova", "anna.petrova@client-one.example"),
    ("Иван Сидоров", "ivan@stroy-torg.example"),
    ("John Miller", "j.miller@acme.example"),
    ("Zoë Łukasiewicz", "zoe@poznan-parts.example"),
    ("Mei Chen", "mei.chen@shenzhen-supply.example"),
]

_WORDS = [
    "order",
    "quote",
    "delivery",
    "invoice",
    "pallet",
    "price",
    "discount",
    "contract",
    "warehouse",
    "schedule",
    "payment",
    "shipment",
    "sample",
    "catalogue",
    "partnership",
    "volume",
    "request",
    "urgent",
    "thanks",
    "regards",
    "заказ",
    "поставка",
    "счёт",
    "скидка",
    "договор",
    "оплата",
    "склад",
    "образец",
]


def _when(index: int) -> datetime:
    """Spread dates over the last weeks, deterministically."""
    return datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + timedelta(hours=7 * index)


def letter(
    *,
    sender: tuple[str, str],
    to: str,
    subject: str,
    body: str,
    index: int = 0,
    to_name: str = "",
    attachments: list[tuple[str, str, bytes]] | None = None,
    in_reply_to: str | None = None,
    html: str | None = None,
    return_path: str | None = None,
) -> bytes:
    """Compose one well-formed letter with the stdlib, as a real mail client would.

    ``return_path`` adds the ``Return-Path`` the delivering server writes (the envelope sender).
    """
    msg = EmailMessage()
    if return_path is not None:
        msg["Return-Path"] = f"<{return_path}>"
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = f"{to_name} <{to}>" if to_name else to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(_when(index))
    msg["Message-ID"] = make_msgid(idstring=f"s{index}", domain=sender[1].split("@")[1])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments or ():
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def nested_too_deep(depth: int = 2500) -> bytes:
    """Compose a multipart nested thousands of levels deep: a parser bomb that must not stop maild."""
    parts = [b"From: Bomb <bomb@hostile.example>\r\nTo: sales@corp.example\r\nSubject: nested\r\n"]
    for level in range(depth):
        parts.append(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
        )
    return b"".join(parts) + b"Content-Type: text/plain\r\n\r\nx\r\n"


MALFORMED = {
    "no headers": b"this letter has no header block at all, only some text\r\n",
    "broken MIME": (
        b"From: Broken Mailer <broken@old-mailer.example>\r\n"
        b"To: sales@corp.example\r\nSubject: broken multipart\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="NEVER"\r\n\r\n'
        b"--WRONG\r\nContent-Type: text/plain\r\n\r\nboundary never matches\r\n"
    ),
    "unknown charset": (
        b"From: Legacy <legacy@cp-mailer.example>\r\nTo: sales@corp.example\r\n"
        b"Subject: =?x-unknown-cs?q?hello?=\r\nContent-Type: text/plain; charset=x-unknown-cs\r\n\r\n"
        b"\xc7\xe4\xf0\xe0\xe2\xf1\xf2\xe2\xf3\xe9\xf2\xe5\r\n"
    ),
    "nested too deep": nested_too_deep(),
    "8-bit headers": (
        "From: Пётр Иванов <petr@mail-ru.example>\r\nTo: Отдел продаж <sales@corp.example>\r\n"
        "Subject: Заявка на поставку\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Добрый день! Нужна поставка 20 паллет.\r\n"
    ).encode(),
}


def demo_mailboxes() -> dict[tuple[str, str], list[bytes]]:
    """Give the demo's mailboxes: (user, folder) -> letters, with a thread and broken letters."""
    first = letter(
        sender=_NAMES[0],
        to=SALES,
        to_name="Corp Sales",
        index=1,
        subject="Quote for 200 units of model X-42",
        body="Hello,\n\nplease send a quote for 200 units of X-42, delivery to Berlin.\n\nAnna",
    )
    first_id = message_id(first)
    pdf = b"%PDF-1.4\n" + bytes(random.Random(7).randbytes(30_000)) + b"\n%%EOF\n"
    return {
        ("sales", "INBOX"): [
            first,
            letter(
                sender=("Corp Sales", SALES),
                to=_NAMES[0][1],
                index=2,
                subject="Re: Quote for 200 units of model X-42",
                in_reply_to=first_id,
                body="Dear Anna,\n\nthe quote is attached.\n",
                attachments=[("quote-X42.pdf", "application/pdf", pdf)],
            ),
            letter(
                sender=_NAMES[1],
                to=SALES,
                index=3,
                subject="Счёт на оплату",
                body="Здравствуйте! Пришлите, пожалуйста, счёт на 15 поддонов.",
                html="<p>Здравствуйте! Пришлите, пожалуйста, <b>счёт</b> на 15 поддонов.</p>",
            ),
            MALFORMED["no headers"],
            MALFORMED["broken MIME"],
            MALFORMED["unknown charset"],
            MALFORMED["nested too deep"],
        ],
        ("sales", "Leads/Web"): [
            letter(
                sender=("Website form", "noreply@corp.example"),
                to=SALES,
                index=4,
                subject="Web form: John Miller, Acme",
                body="Name: John Miller\nCompany: Acme\n"
                "Phone: +1 555 0100\nMessage: We need 3 forklifts by March.",
            ),
            MALFORMED["8-bit headers"],
        ],
        ("support", "INBOX"): [
            letter(
                sender=_NAMES[3],
                to=SUPPORT,
                return_path=_NAMES[3][1],
                index=5,
                subject="Delivery damaged",
                body="Two boxes arrived damaged, photos attached.",
                attachments=[
                    ("box-1.jpg", "image/jpeg", b"\xff\xd8\xff" + bytes(5000)),
                    ("box-2.jpg", "image/jpeg", b"\xff\xd8\xff" + bytes(7000)),
                ],
            ),
            letter(
                sender=_NAMES[4],
                to=SUPPORT,
                return_path=_NAMES[4][1],
                index=6,
                subject="Tracking number?",
                body="Could you send the tracking number for order 5531?",
            ),
        ],
    }


def message_id(raw: bytes) -> str:
    """Read the Message-ID back from a composed letter (the header may be folded)."""
    header = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    return str(header.get("Message-ID", "")).strip()


def random_letter(rng: random.Random, index: int, size: int) -> bytes:
    """Compose a realistic letter of about ``size`` bytes: text, sometimes HTML, attachments past 20 KB."""
    sender = rng.choice(_NAMES)
    words = " ".join(rng.choice(_WORDS) for _ in range(max(20, min(size, 20_000) // 7)))
    body = "\n".join(words[i : i + 72] for i in range(0, len(words), 72))
    html = f"<html><body><p>{words[:4000]}</p></body></html>" if index % 3 == 0 else None
    attachments = []
    remaining = size - len(body) - (len(html) if html else 0)
    if remaining > 20_000:
        parts = 1 + index % 3
        for n in range(parts):
            # base64 grows by 4/3: shrink the payload so the letter lands near the size asked.
            attachments.append(
                (
                    f"document-{index}-{n}.pdf",
                    "application/pdf",
                    rng.randbytes(int(remaining * 0.74) // parts),
                )
            )
    return letter(
        sender=sender,
        to=SALES,
        index=index,
        subject=f"Request {index}: {rng.choice(_WORDS)}",
        body=body,
        html=html,
        attachments=attachments,
    )
