"""SIGTERM while the IMAP server hangs: maild stops at once, exits 0, and the next run loses nothing.

A SIGTERM under load with a healthy server (in-flight letters finished, exit 0, the restart
storing the rest once) is tests/e2e/test_faults_and_cli.py
``test_sigterm_finishes_in_flight_and_exits``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from maild.runtime import Daemon
from maild.settings import load_config
from maild.testing.dovecot import DovecotServer
from maild.testing.faultproxy import FaultProxy
from tests.e2e.helpers import numbered, unique_folder, wait_until
from tests.reliability.helpers import assert_exactly_once

GRACE_SECONDS = 10


def _config_file(
    server: DovecotServer, tmp_path: Path, db_url: str, folder: str, port: int
) -> Path:
    """Write the config an admin would, with long IMAP timeouts so only the stop can end a wait."""
    secret = tmp_path / "sales.password"
    secret.write_text(server.users["sales"], encoding="utf-8")
    path = tmp_path / f"maild-{port}.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[daemon]
health_listen = ""
parse_workers = 1
imap_timeout_seconds = 60
shutdown_grace_seconds = {GRACE_SECONDS}
[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  port = {port}
  security = "none"
  username = "sales"
  password_file = "{secret}"
  [accounts.folders]
  watch = ["{folder}"]
""",
        encoding="utf-8",
    )
    return path


async def _maild(*args: str) -> asyncio.subprocess.Process:
    """Start the maild command as a service manager would, stdin closed, logs not on a TTY."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maild",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
async def test_sigterm_while_the_server_hangs(
    dovecot: DovecotServer,
    tmp_path: Path,
    sqlite_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    """The server stops answering mid-FETCH; SIGTERM abandons the wait at once and exits 0."""
    folder = unique_folder("Hang")
    dovecot.create_folder("sales", folder)
    dovecot.append_many("sales", folder, numbered(30, "hang", padding=20_000))
    async with FaultProxy(dovecot.port, record=True) as proxy:
        proxy.slow(200_000, "down")
        config = _config_file(dovecot, tmp_path, sqlite_url, folder, proxy.port)
        process = await _maild("run", "-c", str(config))
        try:
            await wait_until(lambda: _fetching(proxy), what="the body FETCH")
            proxy.stall()
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 3 * GRACE_SECONDS)
            record_property("exit_after_seconds", round(time.monotonic() - signalled, 2))
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = stderr.decode()
    assert process.returncode == 0, log[-2000:]
    assert "signal_stopping" in log and "daemon_stopped" in log
    assert "cancelled_after_grace" not in log, "a hung FETCH held the stop for the grace period"
    direct = load_config(_config_file(dovecot, tmp_path, sqlite_url, folder, dovecot.port))
    assert (await Daemon(direct).run(once=True)).ok  # the restart
    await assert_exactly_once(sqlite_url, dovecot, "sales", folder)


async def _fetching(proxy: FaultProxy) -> bool:
    """Tell whether maild has asked for letter bodies."""
    assert proxy.sent_up is not None
    return b"BODY.PEEK[]" in proxy.sent_up
