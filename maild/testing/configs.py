"""Config entries for tests and benchmarks that use the database but never reach a server."""

from __future__ import annotations

from typing import Any


def unreached_account(
    name: str = "sales",
    *,
    address: str | None = None,
    watch: list[str] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Give an account entry whose IMAP server is never contacted (its password is never read)."""
    entry: dict[str, Any] = {
        "name": name,
        "address": address or f"{name}@corp.example",
        "imap": {
            "host": "127.0.0.1",
            "security": "none",
            "username": name,
            "password_env": "UNUSED",
        },
        **more,
    }
    if watch is not None:
        entry["folders"] = {"watch": watch, **entry.get("folders", {})}
    return entry
