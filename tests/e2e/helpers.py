"""Helpers for whole-daemon tests: configs pointing at the test Dovecot, waiting, counting rows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import Folder, Letter
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import SALES, letter


def unique_folder(prefix: str = "T") -> str:
    """Give a folder name no other test uses, since the Dovecot server is shared."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_config(
    server: DovecotServer,
    tmp_path: Path,
    db_url: str,
    accounts: dict[str, list[str]],
    *,
    passwords: dict[str, str] | None = None,
    port: int | None = None,
    rules: list[dict[str, Any]] | None = None,
    smtp_port: int | None = None,
    outbox: dict[str, Any] | None = None,
    deleted: str = "Trash",
    **daemon: Any,
) -> Config:
    """Build a config with one account per Dovecot user, passwords in files as admins keep them."""
    entries = []
    for user, folders in accounts.items():
        secret = tmp_path / f"{user}-{uuid.uuid4().hex[:6]}.password"
        secret.write_text((passwords or server.users)[user] + "\n", encoding="utf-8")
        entries.append(
            {
                "name": user,
                "address": f"{user}@corp.example",
                "imap": {
                    "host": server.host,
                    "port": port or server.port,
                    "security": "none",
                    "username": user,
                    "password_file": str(secret),
                },
                "folders": {"watch": folders, "deleted": deleted},
            }
        )
    settings = {"health_listen": "", "parse_workers": 2, "reconnect_max_seconds": 2, **daemon}
    data: dict[str, Any] = {"database": {"url": db_url}, "daemon": settings, "accounts": entries}
    if rules is not None:
        data["rules"] = rules
    if smtp_port is not None:
        data["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}
    data["outbox"] = {"retry_base_seconds": 0.2, "once_drain_seconds": 20, **(outbox or {})}
    return Config.model_validate(data)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll an async predicate until it holds; fail with a message after a generous timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def letter_rows(db_url: str, folder: str | None = None) -> list[tuple[Any, ...]]:
    """Read (folder, uidvalidity, uid, status, sha256, message_id, subject) of stored letters."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            stmt = select(
                Folder.name,
                Letter.uidvalidity,
                Letter.uid,
                Letter.status,
                Letter.sha256,
                Letter.message_id,
                Letter.subject,
                Letter.error,
            ).join(Folder, Folder.id == Letter.folder_id)
            if folder is not None:
                stmt = stmt.where(Folder.name == folder)
            return [tuple(row) for row in (await session.execute(stmt.order_by(Letter.id))).all()]
    finally:
        await engine.dispose()


async def letter_count(db_url: str) -> int:
    """Count letter rows."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return int(
                (await session.execute(select(func.count()).select_from(Letter))).scalar_one()
            )
    except Exception:
        return 0  # the schema may not exist yet while the daemon starts
    finally:
        await engine.dispose()


def numbered(count: int, tag: str, padding: int = 0) -> list[bytes]:
    """Make distinct letters ("TAG #i"), optionally padded so a fetch takes a while."""
    pad = ("x" * 76 + "\n") * (padding // 77)
    return [
        letter(
            sender=("Client", f"c{i}@client.example"),
            to=SALES,
            index=i,
            subject=f"{tag} #{i}",
            body=f"letter {i} of {count}\n{pad}",
        )
        for i in range(count)
    ]


async def at_least(db_url: str, n: int) -> bool:
    """Tell whether the database holds n letters or more."""
    return await letter_count(db_url) >= n


async def folder_has_error(daemon: Daemon, account: str, folder: str) -> bool:
    """Tell whether the daemon reports an error for a folder."""
    state = daemon.status.folders.get((account, folder))
    return state is not None and state.last_error is not None


async def folder_synced(daemon: Daemon, account: str, folder: str) -> bool:
    """Tell whether the daemon has finished a pass over a folder."""
    state = daemon.status.folders.get((account, folder))
    return state is not None and state.last_sync is not None


def write_config(
    server: DovecotServer, tmp_path: Path, db_url: str, folder: str, *, more: str = ""
) -> Path:
    """Write a TOML config file the way an admin would, with the password in a file.

    ``more`` is TOML appended as it is (rules, say).
    """
    secret = tmp_path / "sales.password"
    secret.write_text(f"  {server.users['sales']}  \n", encoding="utf-8")
    path = tmp_path / "maild.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[daemon]
health_listen = ""
parse_workers = 1
[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  port = {server.port}
  security = "none"
  username = "sales"
  password_file = "{secret}"
  [accounts.folders]
  watch = ["{folder}"]
{more}""",
        encoding="utf-8",
    )
    return path
