"""PDF printing through WeasyPrint: one page per letter, and nothing fetched from anywhere."""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from maild.errors import PrintError
from maild.printing.pdf import html_to_pdf
from maild.printing.render import render_document
from tests.unit.test_print_render import letter

needs_weasyprint = pytest.mark.skipif(
    importlib.util.find_spec("weasyprint") is None, reason="WeasyPrint (maild[pdf]) not installed"
)


def pdf_objects(pdf: bytes) -> bytes:
    """Give the PDF's text with every Flate stream inflated, so its objects can be counted."""
    parts = [pdf]
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, flags=re.S):
        try:
            parts.append(zlib.decompress(stream))
        except zlib.error:
            continue
    return b"\n".join(parts)


def page_count(pdf: bytes) -> int:
    """Count the PDF's page objects."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf_objects(pdf)))


class Hits(BaseHTTPRequestHandler):
    """Count every request a renderer makes to the local server."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    """Give the URL of a local HTTP server that records what is asked of it."""
    Hits.hits = []
    httpd = HTTPServer(("127.0.0.1", 0), Hits)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@needs_weasyprint
def test_one_page_per_letter_in_the_pdf() -> None:
    """Three short letters make a three-page PDF; a long one takes more pages but starts its own."""
    short = [letter(id=n) for n in (1, 2, 3)]
    pdf = html_to_pdf(render_document(short))
    assert pdf.startswith(b"%PDF-")
    assert page_count(pdf) == 3
    long = html_to_pdf(render_document([letter(id=1), letter(id=2, text="line\n" * 200)]))
    assert page_count(long) >= 3


@needs_weasyprint
def test_pdf_fetches_nothing(server: str) -> None:
    """Even markup that slipped past the sanitiser cannot make the PDF renderer fetch a URL or file."""
    html = (
        f'<html><head><link rel="stylesheet" href="{server}/a.css">'
        f"<style>@import url({server}/b.css); body {{ background: url({server}/c.png); }}</style>"
        f'</head><body><img src="{server}/d.png"><img src="file:///etc/hostname">'
        f'<p style="background-image: url({server}/e.png)">x</p></body></html>'
    )
    pdf = html_to_pdf(html)
    assert page_count(pdf) == 1
    assert Hits.hits == []


def test_without_weasyprint_pdf_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without WeasyPrint (or Pango), --pdf fails with a PrintError naming the extra and the HTML way."""
    monkeypatch.setitem(sys.modules, "weasyprint", None)
    with pytest.raises(
        PrintError, match=r"pip install 'maild\[pdf\]'.*print it to PDF from a browser"
    ):
        html_to_pdf("<p>x</p>")
