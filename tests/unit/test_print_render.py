"""The printable document: escaping, sanitising, one page per letter, the attachment list."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from maild.core.letter import Address
from maild.core.printout import PrintAttachment, PrintLetter
from maild.printing.render import body_text, header_text, render_document, size_text
from maild.printing.sanitize import clean_html

BASE = PrintLetter(
    id=7,
    account="sales",
    folder="INBOX",
    status="stored",
    error=None,
    sender=Address("ivan@client.example", "Иван Петров"),
    to=(Address("sales@corp.example", "Отдел продаж"),),
    cc=(Address("boss@corp.example"),),
    sent_at=datetime(2026, 1, 12, 9, 30, tzinfo=UTC),
    received_at=datetime(2026, 1, 12, 9, 31, tzinfo=UTC),
    subject="Счёт на поддоны",
    text="Добрый день!\nПришлите счёт.\n",
    html="",
    attachments=(
        PrintAttachment("счёт.pdf", "application/pdf", 48_213),
        PrintAttachment("photo.jpg", "image/jpeg", 2_500_000),
    ),
)


def letter(**changes: object) -> PrintLetter:
    return replace(BASE, **changes)  # type: ignore[arg-type]


def body_of(document: str) -> str:
    """Cut out what the letters contributed, leaving the document's own head and style aside."""
    return document.split("<body>", 1)[1]


def test_headers_and_place_are_shown() -> None:
    """Each page shows From, To, Cc, Date, Subject and the mailbox/folder, Cyrillic kept as is."""
    page = render_document([BASE])
    for label in ("From", "To", "Cc", "Date", "Subject", "Mailbox"):
        assert f"<th>{label}</th>" in page
    assert "Иван Петров &lt;ivan@client.example&gt;" in page
    assert "Отдел продаж &lt;sales@corp.example&gt;" in page
    assert "boss@corp.example" in page
    assert "2026-01-12 09:30 UTC" in page
    assert "Счёт на поддоны" in page
    assert "sales / INBOX · letter 7" in page
    assert '<meta charset="utf-8">' in page


def test_no_cc_row_without_cc_and_received_date_fallback() -> None:
    """Without Cc there is no Cc row; without a Date header the arrival time is shown and said so."""
    page = render_document([letter(cc=(), sent_at=None)])
    assert "<th>Cc</th>" not in page
    assert "2026-01-12 09:31 UTC (received; the letter has no Date)" in page


def test_hostile_header_values_are_escaped() -> None:
    """Markup, NUL, control and bidi characters in headers are shown escaped, never interpreted."""
    hostile = letter(
        subject='<script>alert(1)</script>\x00\x1b[31m\u202eevil "q" =?utf-8?B?junk?=',
        sender=Address('x@evil.example"><img src=x onerror=alert(1)>', "<b>Boss</b>\r\nBcc: y"),
        account="sales<i>",
        folder="In&box",
        attachments=(PrintAttachment("<svg onload=alert(1)>.pdf", "text/html\x07", 10),),
    )
    page = body_of(render_document([hostile]))
    assert "<script" not in page and "<img" not in page and "<svg" not in page
    assert "<b>Boss" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\x00\\x1b[31m\\u202eevil &quot;q&quot; =?utf-8?B?junk?=" in page
    assert "&lt;b&gt;Boss&lt;/b&gt;  Bcc: y" in page
    assert "sales&lt;i&gt; / In&amp;box" in page
    assert "&lt;svg onload=alert(1)&gt;.pdf" in page and "text/html\\x07" in page
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\u202e]", page)


def test_header_text_keeps_cyrillic_and_flattens_spaces() -> None:
    """Letters of any script stay; odd spaces and line breaks become plain spaces."""
    assert header_text("Привет,\u00a0мир\n\tи <все>") == "Привет, мир  и &lt;все&gt;"


def test_plain_text_is_escaped_and_wrapped() -> None:
    """A plain-text body is escaped into a wrapping <pre>; control characters become U+FFFD."""
    page = render_document([letter(text="a <b>bold</b> & \x00\x01 line\r\nnext " + "x" * 500)])
    assert '<pre class="text">a &lt;b&gt;bold&lt;/b&gt; &amp; \ufffd\ufffd line\nnext ' in page
    assert "white-space: pre-wrap" in page and "overflow-wrap: anywhere" in page


def test_body_text_replaces_lone_surrogates() -> None:
    """A lone surrogate (bytes read with surrogateescape) cannot break encoding the page."""
    assert body_text("ok\udcff") == "ok\ufffd"
    render_document([letter(text="ok\udcff", subject="s\udcff")]).encode("utf-8")


@pytest.mark.parametrize(
    ("html", "gone"),
    [
        ("<p>hi</p><script>alert(1)</script>", ["<script", "alert(1)"]),
        ('<img src="http://track.example/p.gif" onerror="alert(1)">', ["track.example", "onerror"]),
        ('<img src="//track.example/p.gif">', ["track.example"]),
        ('<img srcset="https://x.example/a.png 2x">', ["x.example"]),
        (
            '<iframe src="https://x.example/">fallback</iframe>',
            ["<iframe", "x.example", "fallback"],
        ),
        (
            '<form action="https://x.example/"><input name="q"><button>Go</button></form>',
            ["<form", "<input", "<button", "x.example"],
        ),
        ('<a href="javascript:alert(1)">x</a>', ["javascript"]),
        ('<p onclick="alert(1)" onmouseover="alert(2)">x</p>', ["onclick", "onmouseover"]),
        (
            '<p style="background:url(https://x.example/bg.png);color:red">x</p>',
            ["url(", "x.example"],
        ),
        (
            '<p style="background-image:image-set(&quot;a.png&quot; 1x)">x</p>',
            ["image-set", "a.png"],
        ),
        (
            '<p style="color:r\\65 d;b\\61ckground:u\\72l(https://x.example)">x</p>',
            ["x.example", "\\"],
        ),
        (
            "<style>body{background:url(https://x.example/a.png)}</style><p>x</p>",
            ["<style", "x.example"],
        ),
        ('<link rel="stylesheet" href="https://x.example/a.css"><p>x</p>', ["<link", "x.example"]),
        ('<base href="https://x.example/"><p>x</p>', ["<base", "x.example"]),
        (
            '<meta http-equiv="refresh" content="0;url=https://x.example/"><p>x</p>',
            ["<meta", "x.example"],
        ),
        ('<svg><image href="https://x.example/a.png"/></svg>', ["<svg", "x.example"]),
        (
            '<object data="https://x.example/a.swf"></object><embed src="https://x.example/b">',
            ["<object", "<embed", "x.example"],
        ),
        (
            '<video poster="https://x.example/p.png" src="https://x.example/v"></video>',
            ["<video", "x.example"],
        ),
        (
            '<table background="https://x.example/bg.png"><tr><td>c</td></tr></table>',
            ["background", "x.example"],
        ),
    ],
)
def test_sanitiser_removes_active_and_remote_content(html: str, gone: list[str]) -> None:
    """Scripts, handlers, frames, forms, style sheets and every URL that would be fetched go."""
    cleaned = clean_html(html)
    for part in gone:
        assert part not in cleaned, cleaned


def test_sanitiser_keeps_text_structure_and_safe_formatting() -> None:
    """Paragraphs, tables, links, inline data images and harmless inline styles survive."""
    html = (
        '<p style="color:red;position:fixed">Привет</p><table><tr><td>ячейка</td></tr></table>'
        '<a href="https://corp.example/">link</a><img src="data:image/png;base64,iVBORw0KGgo=" alt="logo">'
    )
    cleaned = clean_html(html)
    assert '<p style="color:red">Привет</p>' in cleaned
    assert "<td>ячейка</td>" in cleaned
    assert 'href="https://corp.example/"' in cleaned
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in cleaned


def test_html_body_is_sanitised_in_the_page_and_preferred_to_text() -> None:
    """A letter with both parts prints its sanitised HTML, not the plain text."""
    html = '<p onclick="x()">Текст <b>жирный</b></p><script>alert(1)</script><img src="https://tracker.test/p.gif">'
    page = body_of(render_document([letter(html=html, text="plain version")]))
    assert "<p>Текст <b>жирный</b></p>" in page
    assert "plain version" not in page
    assert "<script" not in page and "tracker.test" not in page and "onclick" not in page


def test_html_body_that_cleans_to_nothing_falls_back_to_text() -> None:
    """An HTML part with nothing left after sanitising yields to the plain text."""
    page = render_document([letter(html="<script>x()</script>", text="the text")])
    assert '<pre class="text">the text</pre>' in page


def test_document_forbids_scripts_and_remote_loads() -> None:
    """The page carries a Content-Security-Policy refusing scripts, remote images and forms."""
    page = render_document([BASE])
    assert "default-src 'none'" in page and "img-src data:" in page
    assert "form-action 'none'" in page


def test_one_page_per_letter() -> None:
    """Each letter is its own section breaking the page after it, the last without a blank page."""
    letters = [letter(id=n, subject=f"Letter {n}") for n in (3, 1, 2)]
    page = render_document(letters)
    assert page.count('<section class="letter"') == 3
    assert [int(n) for n in re.findall(r'id="letter-(\d+)"', page)] == [3, 1, 2]
    assert ".letter { break-after: page; page-break-after: always;" in page
    assert ".letter:last-child { break-after: auto; page-break-after: auto; }" in page
    assert "<title>Letters 3, 1, 2</title>" in page


def test_attachment_list() -> None:
    """Attachments are listed with name, type and size; a letter without any says so."""
    page = render_document([BASE, letter(id=8, attachments=())])
    assert "Attachments (2)" in page
    assert '<td>счёт.pdf</td><td>application/pdf</td><td class="size">47.1 KB</td>' in page
    assert '<td>photo.jpg</td><td>image/jpeg</td><td class="size">2.4 MB</td>' in page
    assert page.count("No attachments.") == 1


def test_sizes() -> None:
    """Sizes read as bytes, KB, MB and GB."""
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KB",
        "1.5 KB",
        "5.0 MB",
        "3.0 GB",
    ]


def test_failed_letter_says_why() -> None:
    """A letter that could not be parsed prints a notice with the reason, and no text."""
    page = render_document(
        [
            letter(
                status="failed",
                error="bad <MIME>",
                text="",
                subject="",
                sender=None,
                to=(),
                cc=(),
                attachments=(),
            )
        ]
    )
    assert "could not be parsed; it is kept raw: bad &lt;MIME&gt;" in page
    assert "(no subject)" in page and "(no text)" in page
