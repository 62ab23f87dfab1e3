"""`maild autoreply status/off/on`, and the scheduler switching accounts on and off by their period."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from maild.autoreply.policy import Period
from maild.autoreply.scheduler import AutoreplyScheduler
from maild.cli import main
from maild.core.status import StatusBoard
from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.pipeline import prepare_folders
from maild.settings import load_config

NOW = datetime.now(UTC).replace(microsecond=0)

CONFIG = """
[database]
url = "sqlite+aiosqlite:///{db}"

[smtp]
host = "127.0.0.1"
security = "none"

[[accounts]]
name = "support"
address = "support@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "u"
  password_env = "UNUSED"
  [accounts.autoreply]
  enabled = true
  start = {start}
  end = {end}
  text = "On holiday."

[[accounts]]
name = "sales"
address = "sales@corp.example"
  [accounts.imap]
  host = "127.0.0.1"
  security = "none"
  username = "u"
  password_env = "UNUSED"
"""


def _setup(tmp_path: Path) -> Path:
    """Write the config and a database that knows its accounts, as after a first run."""
    db = tmp_path / "maild.db"
    path = tmp_path / "maild.toml"
    path.write_text(
        CONFIG.format(
            db=db,
            start=(NOW - timedelta(days=1)).isoformat(),
            end=(NOW + timedelta(days=1)).isoformat(),
        ),
        encoding="utf-8",
    )

    async def prepare() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await migrate.upgrade(engine)
            await prepare_folders(session_factory(engine), load_config(path, check_secrets=False))
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    return path


def test_status_off_survives_and_on(tmp_path: Path) -> None:
    """Status lists the account with its period as on; off is stored (seen by a new command); on undoes it."""
    path = _setup(tmp_path)
    runner = CliRunner()
    status = runner.invoke(main, ["autoreply", "status", "-c", str(path)])
    assert status.exit_code == 0, status.output
    assert status.output.startswith("support          on ")
    assert "once per 3 day(s) per sender" in status.output and "sales" not in status.output

    off = runner.invoke(main, ["autoreply", "off", "support", "--by", "admin", "-c", str(path)])
    assert off.exit_code == 0 and "switched off from" in off.output
    status = runner.invoke(main, ["autoreply", "status", "-c", str(path)])
    assert "off by hand" in status.output and "switched off by hand at" in status.output

    wrong = runner.invoke(main, ["autoreply", "off", "sales", "-c", str(path)])
    assert wrong.exit_code == 1 and "has no enabled auto-reply" in wrong.output

    on = runner.invoke(main, ["autoreply", "on", "support", "-c", str(path)])
    assert on.exit_code == 0 and "switched back on" in on.output
    assert " on " in runner.invoke(main, ["autoreply", "status", "-c", str(path)]).output


async def test_scheduler_switches_at_start_and_after_end() -> None:
    """The scheduler shows "scheduled", switches on at start and off after end, and reads hand switches."""
    now = datetime.now(UTC)
    soon = Period(True, now + timedelta(seconds=0.3), now + timedelta(seconds=0.6), "x")
    running = Period(True, now - timedelta(days=1), now + timedelta(days=1), "x")
    switches: dict[str, datetime] = {}

    async def read() -> Mapping[str, datetime]:
        return switches

    status = StatusBoard()
    scheduler = AutoreplyScheduler(
        {"soon": soon, "running": running}, status, read, refresh_seconds=0.2
    )
    await scheduler.start()
    try:
        assert status.autoreply["soon"].state == "scheduled"
        assert status.autoreply["running"].state == "on"
        assert len(scheduler.jobs()) == 3  # soon's start and end, running's end
        await asyncio.sleep(0.45)
        assert status.autoreply["soon"].state == "on"
        switches["running"] = now
        await asyncio.sleep(1.3)
        assert status.autoreply["soon"].state == "ended"
        assert status.autoreply["running"].state == "off by hand"
        assert status.as_dict()["autoreply"]["soon"]["state"] == "ended"  # type: ignore[index]
    finally:
        scheduler.stop()
