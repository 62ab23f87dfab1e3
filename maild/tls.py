"""One way to build a client TLS context, so IMAP and SMTP verify certificates the same way."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path


def client_context(ca_file: str | Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """Build a verifying context: system CAs plus ``ca_file``; raise OSError or SSLError if unloadable.

    Certificates and host names are checked unless ``verify`` is false, which only an explicit
    ``tls_verify = false`` in the config asks for (and which maild logs as a warning at start).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=str(ca_file))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_ca_file(ca_file: str | Path) -> str | None:
    """Tell why a CA file cannot be used (missing, unreadable, not PEM certificates), or None."""
    try:
        client_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load CA file {str(ca_file)!r}: {getattr(exc, 'strerror', None) or exc}"
    return None


def is_loopback(host: str) -> bool:
    """Tell whether a host is this machine, the only place plaintext is allowed by default."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
