"""Letters as plain values → one printable HTML document, one letter per page; no I/O.

Every value taken from a letter is escaped, and header values also lose control and
formatting characters (shown as ``\\xNN`` escapes), so a hostile letter can neither inject
markup nor scramble the page. HTML bodies go through the sanitiser; a Content-Security-Policy
forbids scripts and remote loads as a second line of defence.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from html import escape

from maild.core.letter import Address
from maild.core.printout import PrintAttachment, PrintLetter
from maild.printing.sanitize import clean_html

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

STYLE = """
@page { size: A4; margin: 15mm; }
html { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 11pt; }
body { margin: 0; color: #000; background: #fff; }
.letter { break-after: page; page-break-after: always; overflow-wrap: anywhere; }
.letter:last-child { break-after: auto; page-break-after: auto; }
.headers { border-collapse: collapse; width: 100%; margin-bottom: 4mm; }
.headers th { text-align: left; vertical-align: top; width: 6em; padding: 1mm 3mm 1mm 0;
  color: #444; font-weight: normal; white-space: nowrap; }
.headers td { padding: 1mm 0; }
.headers tr.subject td { font-weight: bold; font-size: 13pt; }
.headers tr.place td { color: #444; font-size: 9pt; }
.headers { border-bottom: 0.5mm solid #000; }
.notice { border: 0.3mm solid #a00; color: #a00; padding: 2mm; margin-bottom: 4mm; }
.body { margin-bottom: 6mm; }
.body img, .body table { max-width: 100%; }
pre.text { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 10pt;
  white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.empty { color: #666; font-style: italic; }
.attachments { break-inside: avoid; page-break-inside: avoid; border-top: 0.3mm solid #888;
  padding-top: 2mm; }
.attachments h2 { font-size: 11pt; margin: 0 0 2mm; }
.attachments table { border-collapse: collapse; width: 100%; font-size: 10pt; }
.attachments th, .attachments td { text-align: left; padding: 0.5mm 3mm 0.5mm 0;
  vertical-align: top; }
.attachments td.size, .attachments th.size { text-align: right; white-space: nowrap; }
@media screen {
  body { background: #ddd; padding: 8mm 0; }
  .letter { background: #fff; max-width: 180mm; margin: 0 auto 8mm; padding: 12mm 15mm;
    box-shadow: 0 0.5mm 2mm #888; }
}
"""

_SPACES = {"Zs", "Zl", "Zp"}
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn"}


def _visible(ch: str) -> str:
    """Spell out a character that would not show, the way Python writes it."""
    return ch.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def header_text(value: str) -> str:
    """Escape a header value for HTML after showing its control and formatting characters."""
    parts = []
    for ch in value:
        category = unicodedata.category(ch)
        if ch in "\t\r\n" or category in _SPACES:
            parts.append(" ")
        elif category in _HIDDEN:
            parts.append(_visible(ch))
        else:
            parts.append(ch)
    return escape("".join(parts), quote=True)


def body_text(value: str) -> str:
    """Make body text safe to parse: control characters and lone surrogates become U+FFFD."""
    value = value.replace("\r\n", "\n")
    return "".join(
        "\ufffd" if ch not in "\t\n" and unicodedata.category(ch) in {"Cc", "Cs"} else ch
        for ch in value
    )


def _address(item: Address) -> str:
    """Show a mailbox as ``Name <address>``, or the bare address."""
    if item.name and item.address:
        return f"{header_text(item.name)} &lt;{header_text(item.address)}&gt;"
    return header_text(item.name or item.address)


def _addresses(items: Sequence[Address]) -> str:
    """Show a list of mailboxes, comma separated."""
    return ", ".join(_address(item) for item in items)


def _when(moment: datetime) -> str:
    """Show a stored (UTC) time the way a printout needs it: to the minute, zone named."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _date(letter: PrintLetter) -> str:
    """Give the Date header, or when the letter arrived if it had none."""
    if letter.sent_at is not None:
        return _when(letter.sent_at)
    if letter.received_at is not None:
        return f"{_when(letter.received_at)} (received; the letter has no Date)"
    return '<span class="empty">unknown</span>'


def size_text(size: int) -> str:
    """Show a byte count the way people read it."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _headers(letter: PrintLetter) -> str:
    """Render the header block: From, To, Cc, Date, Subject, and where the letter is kept."""
    subject = (
        header_text(letter.subject) if letter.subject else '<span class="empty">(no subject)</span>'
    )
    rows = [
        ("From", _address(letter.sender) if letter.sender else ""),
        ("To", _addresses(letter.to)),
    ]
    if letter.cc:
        rows.append(("Cc", _addresses(letter.cc)))
    rows.append(("Date", _date(letter)))
    lines = [f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows]
    lines.append(f'<tr class="subject"><th>Subject</th><td>{subject}</td></tr>')
    lines.append(
        f'<tr class="place"><th>Mailbox</th><td>{header_text(letter.account)} / '
        f"{header_text(letter.folder)} · letter {letter.id}</td></tr>"
    )
    return '<table class="headers">\n' + "\n".join(lines) + "\n</table>"


def _notice(letter: PrintLetter) -> str:
    """Say so when the letter could not be read in full, and why."""
    if letter.status == "stored":
        return ""
    why = {
        "failed": "could not be parsed; it is kept raw",
        "oversize": "is over the size limit; only its header was kept",
    }.get(letter.status, f"has status {header_text(letter.status)}")
    reason = f": {header_text(letter.error)}" if letter.error else ""
    return f'<p class="notice">This letter {why}{reason}.</p>'


def _body(letter: PrintLetter) -> str:
    """Render the letter's text: its HTML sanitised, else its plain text escaped and wrapped."""
    if letter.html.strip():
        cleaned = clean_html(body_text(letter.html))
        if cleaned.strip():
            return f'<div class="body html">{cleaned}</div>'
    if letter.text.strip():
        return f'<div class="body"><pre class="text">{escape(body_text(letter.text))}</pre></div>'
    return '<div class="body"><p class="empty">(no text)</p></div>'


def _attachment(item: PrintAttachment) -> str:
    """Render one attachment row: name, type, size."""
    name = header_text(item.filename) if item.filename else '<span class="empty">(no name)</span>'
    return (
        f"<tr><td>{name}</td><td>{header_text(item.content_type)}</td>"
        f'<td class="size">{size_text(item.size)}</td></tr>'
    )


def _attachments(letter: PrintLetter) -> str:
    """Render the attachment list, or say there is none."""
    if not letter.attachments:
        return '<section class="attachments"><p class="empty">No attachments.</p></section>'
    rows = "\n".join(_attachment(item) for item in letter.attachments)
    return (
        f'<section class="attachments"><h2>Attachments ({len(letter.attachments)})</h2>\n'
        '<table><thead><tr><th>Name</th><th>Type</th><th class="size">Size</th></tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody></table></section>"
    )


def render_letter(letter: PrintLetter) -> str:
    """Render one letter as the section that fills its page(s)."""
    parts = [_headers(letter), _notice(letter), _body(letter), _attachments(letter)]
    inner = "\n".join(part for part in parts if part)
    return f'<section class="letter" id="letter-{letter.id}">\n{inner}\n</section>'


def _title(letters: Sequence[PrintLetter]) -> str:
    """Name the document after the letters in it."""
    if len(letters) == 1:
        return f"Letter {letters[0].id}"
    if len(letters) <= 10:
        return "Letters " + ", ".join(str(letter.id) for letter in letters)
    return f"{len(letters)} letters"


def render_document(letters: Sequence[PrintLetter]) -> str:
    """Render the whole printable document: each letter starts on a new page."""
    sections = "\n".join(render_letter(letter) for letter in letters)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_title(letters)}</title>\n"
        f"<style>{STYLE}</style>\n"
        f"</head>\n<body>\n{sections}\n</body>\n</html>\n"
    )
