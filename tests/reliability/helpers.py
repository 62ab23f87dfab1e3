"""Helpers for fault tests: a daemon run in the test's loop, /healthz read over HTTP, timings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from tests.e2e.helpers import letter_rows, make_config, wait_until

#: Short enough that a test sees a dead link within seconds, long enough for a loaded CI box.
IMAP_TIMEOUT = 1.5


def fault_config(
    server: DovecotServer,
    tmp_path: Path,
    db_url: str,
    accounts: dict[str, list[str]],
    *,
    ports: dict[str, int] | None = None,
    **options: Any,
) -> Config:
    """Build a test config with /healthz on, short timeouts, and some accounts on other ports.

    ``options`` are make_config's: daemon settings, or ``rules``, ``smtp_port``, ``outbox``.
    """
    settings: dict[str, Any] = {
        "health_listen": "127.0.0.1:0",
        "imap_timeout_seconds": IMAP_TIMEOUT,
        "idle_restart_seconds": 30,
        "poll_interval_seconds": 1,
        "reconnect_max_seconds": 1,
        "shutdown_grace_seconds": 5,
        **options,
    }
    config = make_config(server, tmp_path, db_url, accounts, **settings)
    return with_ports(config, ports or {})


def with_ports(config: Config, ports: dict[str, int]) -> Config:
    """Point the named accounts at other IMAP ports (a proxy's), leaving the others direct."""
    accounts = [
        account.model_copy(
            update={"imap": account.imap.model_copy(update={"port": ports[account.name]})}
        )
        if account.name in ports
        else account
        for account in config.accounts
    ]
    return config.model_copy(update={"accounts": accounts})


@contextlib.contextmanager
def plain_tracebacks() -> Iterator[None]:
    """Log tracebacks without local variables, as the CLI's set-up does.

    Without the CLI, structlog renders every traceback with its local variables; for a
    database driver's error that takes seconds of blocked event loop, which a fault test
    would measure as the daemon's own slowness. The renderer is swapped in place, so loggers
    already cached follow, and put back afterwards.
    """
    processors = structlog.get_config()["processors"]
    renderer = processors[-1]
    processors[-1] = structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )
    try:
        yield
    finally:
        processors[-1] = renderer


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Daemon]:
    """Run the daemon in the test's event loop until the block ends, then stop it cleanly."""
    daemon = Daemon(config)
    with plain_tracebacks():
        task = asyncio.create_task(daemon.run())
        try:
            await wait_until(
                lambda: _started(daemon, task), timeout=30, what="the health endpoint to listen"
            )
            yield daemon
        finally:
            daemon.stop.set()
            await asyncio.wait_for(task, 60)


async def _started(daemon: Daemon, task: asyncio.Task[Any]) -> bool:
    """Tell whether the daemon serves /healthz; re-raise a start that failed."""
    if task.done():
        task.result()
        raise AssertionError("the daemon ended before it started")
    return daemon.health is not None and daemon.health.port != 0


async def healthz(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    """GET /healthz from the running daemon: the status code and the JSON report."""
    assert daemon.health is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.health.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: maild\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    report: dict[str, Any] = json.loads(body)
    return int(head.split()[1]), report


def folder_report(report: dict[str, Any], account: str, folder: str) -> dict[str, Any]:
    """Give one folder's entry of a /healthz report (empty before its poller first reported)."""
    entry: dict[str, Any] = report["accounts"].get(account, {}).get("folders", {}).get(folder, {})
    return entry


async def wait_trouble(daemon: Daemon, account: str, folder: str, timeout: float = 30) -> str:
    """Wait until /healthz answers 503 with an error for the folder; give that error."""
    seen: list[str] = []

    async def troubled() -> bool:
        code, report = await healthz(daemon)
        error = folder_report(report, account, folder).get("last_error")
        if code == 503 and error and not report["accounts"][account]["ok"]:
            seen.append(str(error))
            return True
        return False

    await wait_until(troubled, timeout=timeout, what=f"/healthz to show trouble in {folder}")
    return seen[-1]


async def wait_healthy(daemon: Daemon, timeout: float = 60) -> None:
    """Wait until /healthz answers 200: every folder connected, no error outstanding."""

    async def healthy() -> bool:
        code, _ = await healthz(daemon)
        return code == 200

    await wait_until(healthy, timeout=timeout, what="/healthz to be healthy again")


async def stored(db_url: str, folder: str, count: int) -> bool:
    """Tell whether a folder has at least ``count`` letter rows."""
    return len(await letter_rows(db_url, folder)) >= count


async def timed(step: Callable[[], Awaitable[None]]) -> float:
    """Run a step and give the seconds it took, for the recovery figures in docs/reliability.md."""
    start = time.monotonic()
    await step()
    return round(time.monotonic() - start, 2)


async def assert_exactly_once(db_url: str, server: DovecotServer, user: str, folder: str) -> None:
    """Every letter of the folder is stored once, with status stored, under today's UIDs."""
    rows = await letter_rows(db_url, folder)
    uids = [row[2] for row in rows]
    assert sorted(uids) == server.uids(user, folder), "a letter was lost or stored twice"
    assert len({(row[1], row[2]) for row in rows}) == len(rows)
    assert {row[3] for row in rows} == {"stored"}, [row[7] for row in rows if row[3] != "stored"]
