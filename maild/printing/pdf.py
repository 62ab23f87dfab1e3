"""The only WeasyPrint importer: the printable HTML rendered to PDF, fetching nothing.

WeasyPrint needs Pango (Debian: libpango-1.0-0, libpangoft2-1.0-0) and is an optional extra,
``maild[pdf]``; without it, ``--pdf`` says so and the HTML can be printed from a browser.
"""

from __future__ import annotations

from typing import Any

from maild.errors import PrintError

MISSING = (
    "PDF output needs WeasyPrint and Pango: pip install 'maild[pdf]' "
    "(Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0); "
    "or write HTML and print it to PDF from a browser"
)


def _weasyprint() -> Any:
    """Import WeasyPrint on first use, so maild runs without it and its system libraries."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:
        raise PrintError(f"{MISSING} ({exc})") from exc
    return weasyprint


def html_to_pdf(html: str) -> bytes:
    """Render the document to PDF; only ``data:`` URLs are read, nothing from disk or network."""
    weasyprint = _weasyprint()
    fetcher = weasyprint.URLFetcher(allowed_protocols={"data"}, allow_redirects=False)
    document = weasyprint.HTML(string=html, url_fetcher=fetcher, base_url=None)
    pdf = document.write_pdf()
    if not isinstance(pdf, bytes):
        raise PrintError("WeasyPrint gave no PDF")
    return pdf
