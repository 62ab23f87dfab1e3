"""One way to build a client TLS context, so IMAP and SMTP verify certificates the same way."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """Build a verifying context: system CAs plus ``ca_file``; raise OSError or SSLError if unloadable.

    Certificates and host names are always checked: no caller can turn verification off.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=str(ca_file))
    return context
