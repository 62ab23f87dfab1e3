"""Faults and the command line: a killed server, thousands of letters, SIGTERM, retry-failed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from maild.runtime import Daemon
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import MALFORMED
from tests.e2e.helpers import (
    at_least,
    folder_has_error,
    letter_rows,
    make_config,
    numbered,
    unique_folder,
    wait_until,
    write_config,
)


async def test_server_killed_mid_fetch_recovers(
    private_dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Dovecot killed mid-fetch: maild reconnects with backoff when it is back; nothing lost or doubled."""
    folder = unique_folder()
    private_dovecot.create_folder("sales", folder)
    total = 600
    private_dovecot.append_many("sales", folder, numbered(total, "killed", padding=20_000))
    config = make_config(
        private_dovecot, tmp_path, db_url, {"sales": [folder]}, imap_timeout_seconds=5
    )
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: at_least(db_url, 30), what="the first letters")
        await asyncio.to_thread(private_dovecot.kill)
        await wait_until(
            lambda: folder_has_error(daemon, "sales", folder), what="the error to be seen"
        )
        await asyncio.to_thread(private_dovecot.start)
        await wait_until(lambda: at_least(db_url, total), timeout=120, what="every letter")
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 60)
    rows = await letter_rows(db_url, folder)
    assert len(rows) == total
    assert sorted(r[2] for r in rows) == private_dovecot.uids("sales", folder)
    reconnects = daemon.metrics.reconnects.labels("sales", folder)._value.get()
    assert reconnects >= 1


async def test_thousands_of_letters_in_one_folder(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """3,200 letters in one folder (past aioimaplib's crash size) are all stored, in order."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    total = 3200
    dovecot.append_many("sales", folder, numbered(total, "bulk"))
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]})
    result = await Daemon(config).run(once=True)
    assert result.ok
    rows = await letter_rows(db_url, folder)
    assert len(rows) == total
    assert [r[2] for r in rows] == sorted(dovecot.uids("sales", folder))


def maild(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the maild command as an admin or cron would, stdin closed, logs not on a TTY."""
    return subprocess.run(
        [sys.executable, "-m", "maild", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_cli_run_once_then_retry_failed(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """`maild run --once` stores all, logs JSON without the password; retry-failed reports the bomb."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    dovecot.append_many("sales", folder, [*numbered(3, "cli"), MALFORMED["nested too deep"]])
    config = write_config(dovecot, tmp_path, db_url, folder)
    run = maild("run", "--once", "-c", str(config))
    assert run.returncode == 0, run.stderr[-2000:]
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    letters = [e for e in events if e["event"] == "letter"]
    assert [e["outcome"] for e in letters] == ["stored", "stored", "stored", "failed"]
    assert dovecot.users["sales"] not in run.stderr
    retry = maild("letters", "retry-failed", "-c", str(config))
    assert retry.returncode == 1
    assert "0 fixed, 1 still failing" in retry.stdout
    assert "nesting too deep" in retry.stdout


def test_sigterm_finishes_in_flight_and_exits(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """SIGTERM stops the daemon cleanly (exit 0); the next run stores the rest, nothing doubled."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    total = 800
    dovecot.append_many("sales", folder, numbered(total, "sigterm", padding=5_000))
    config = write_config(dovecot, tmp_path, db_url, folder)
    process = subprocess.Popen(
        [sys.executable, "-m", "maild", "run", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        asyncio.run(wait_until(lambda: at_least(db_url, 1), what="the first letter"))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert "signal_stopping" in stderr and "daemon_stopped" in stderr
    again = maild("run", "--once", "-c", str(config))
    assert again.returncode == 0, again.stderr[-2000:]
    rows = asyncio.run(letter_rows(db_url, folder))
    assert len(rows) == total
    assert len({r[2] for r in rows}) == total
