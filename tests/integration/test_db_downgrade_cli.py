"""`maild db downgrade` on SQLite and PostgreSQL: shows what it drops, asks, keeps every other row."""

from __future__ import annotations

import asyncio
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from maild.core.letter import FetchedMessage
from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Account, Folder, Letter
from maild.errors import DatabaseError
from maild.ingest.parse import parse_letter
from maild.pipeline import FolderStore, prepare_folders
from maild.runtime import downgrade_database, plan_downgrade
from maild.settings import load_config
from maild.testing.samples import letter
from tests.dryrun_config import invoke, upgraded_config, write_config

pytestmark = pytest.mark.usefixtures("db_url")

LETTER = letter(
    sender=("Anna Petrova", "anna.petrova@client-one.example"),
    to="sales@corp.example",
    subject="Quote for 40 chairs",
    body="please send a quote",
    index=1,
)

Snapshot = tuple[str | None, list[str], list[tuple[int, str, str, str, str]]]


async def _store_letter(path: Path) -> None:
    """Store one letter in sales/INBOX through maild's own FolderStore, as the daemon does."""
    config = load_config(path, check_secrets=False)
    engine = create_engine(config.database_url())
    try:
        sessions = session_factory(engine)
        ids = await prepare_folders(sessions, config)
        store = FolderStore(
            sessions=sessions, account="sales", folder="INBOX", folder_id=ids[("sales", "INBOX")]
        )
        await store.set_uidvalidity(7, changed=False)
        message = FetchedMessage(uid=1, raw=LETTER, size=len(LETTER))
        assert await store.store(message, parse_letter(LETTER), None) == "stored"
    finally:
        await engine.dispose()


async def _snapshot(path: Path) -> Snapshot:
    """Give the revision, the table names and the letters with their account and folder."""
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        revision = await migrate.current_revision(engine)
        async with engine.connect() as conn:
            tables = sorted(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(Letter.id, Account.name, Folder.name, Letter.subject, Letter.sha256)
                .join(Folder, Folder.id == Letter.folder_id)
                .join(Account, Account.id == Folder.account_id)
                .order_by(Letter.id)
            )
            letters = [
                (i, account, folder, subject, sha) for i, account, folder, subject, sha in rows
            ]
    finally:
        await engine.dispose()
    return revision, tables, letters


async def _letter_count(path: Path) -> int:
    """Count the letters, readable at every revision."""
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        async with session_factory(engine)() as session:
            count = await session.execute(select(func.count()).select_from(Letter.__table__))
            return int(count.scalar_one())
    finally:
        await engine.dispose()


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    """Write a config, create the schema with `maild db upgrade`, store one letter."""
    path = upgraded_config(tmp_path, db_url)
    asyncio.run(_store_letter(path))
    return path


def test_down_to_a_middle_revision_and_up_again_keeps_the_rows(config: Path) -> None:
    """With --yes it lists the revisions undone, goes down to 0005, and an upgrade brings back
    the dropped tables with every account, folder and letter kept, ids included."""
    before = asyncio.run(_snapshot(config))
    assert before[0] == migrate.HEAD_REVISION
    assert len(before[2]) == 1

    result = invoke("db", "downgrade", "-c", str(config), "0005", "--yes")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "schema at 0008; going down to 0005" in out
    assert out.index("  0008  folders.lease_owner") < out.index("  0007  autoreply_log")
    assert out.index("  0007  autoreply_log") < out.index("  0006  letters the CRM")
    assert "  0005  " not in out
    assert "database schema: 0008 -> 0005" in out
    assert "`migrate_on_start = true` upgrades the schema again" in out

    down = asyncio.run(_snapshot(config))
    assert down[0] == "0005"
    assert {"maild_processes", "autoreply_log", "outbox_attachments"}.isdisjoint(down[1])
    assert asyncio.run(_letter_count(config)) == 1

    up = invoke("db", "upgrade", "-c", str(config))
    assert up.exit_code == 0, up.output
    assert "database schema: 0005 -> 0008" in up.stdout
    assert asyncio.run(_snapshot(config)) == before


def test_a_schema_moved_since_the_plan_is_left_alone(config: Path) -> None:
    """Another process took the schema down after the plan was shown: the downgrade, checking
    the revision inside its own transaction, refuses and changes nothing."""
    settings = load_config(config, check_secrets=False)
    plan = asyncio.run(plan_downgrade(settings, "0005"))
    assert plan.current == migrate.HEAD_REVISION

    async def elsewhere() -> None:
        engine = create_engine(settings.database_url())
        try:
            await migrate.downgrade(engine, "0007")
        finally:
            await engine.dispose()

    asyncio.run(elsewhere())
    with pytest.raises(DatabaseError, match="moved from 0008 to 0007 since it was read"):
        asyncio.run(downgrade_database(settings, plan))
    after = asyncio.run(_snapshot(config))
    assert after[0] == "0007"
    assert "autoreply_log" in after[1]
    assert len(after[2]) == 1


def test_without_yes_and_without_a_terminal_it_refuses(config: Path) -> None:
    """No terminal to ask on and no --yes: it shows the plan, exits 1 and changes nothing."""
    before = asyncio.run(_snapshot(config))
    for stdin in (None, "y\n"):
        result = invoke("db", "downgrade", "-c", str(config), "0003", stdin=stdin)
        assert result.exit_code == 1, result.output
        assert "  0004  leads, scenarios" in result.stdout
        assert "no terminal to ask on: give --yes" in result.stderr
        assert "nothing changed" in result.stderr
        assert asyncio.run(_snapshot(config)) == before


def _on_a_terminal(path: Path, answer: str) -> tuple[int, str]:
    """Run the downgrade to 0005 with a terminal as its stdin, answer, give exit code and output."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())
        done = subprocess.run(
            [sys.executable, "-m", "maild", "db", "downgrade", "-c", str(path), "0005"],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    return done.returncode, done.stdout + done.stderr


def test_on_a_terminal_it_asks(config: Path) -> None:
    """On a terminal it asks: no keeps everything (exit 1), yes goes down."""
    before = asyncio.run(_snapshot(config))
    code, out = _on_a_terminal(config, "n\n")
    assert code == 1, out
    assert "Drop them and go down to 0005? [y/N]" in out
    assert "cancelled, nothing changed" in out
    assert asyncio.run(_snapshot(config)) == before

    code, out = _on_a_terminal(config, "y\n")
    assert code == 0, out
    assert "database schema: 0008 -> 0005" in out
    assert asyncio.run(_snapshot(config))[0] == "0005"


def test_unknown_revision_lists_the_known_ones(config: Path) -> None:
    """A revision that is no migration is a usage error (exit 2) naming every revision."""
    before = asyncio.run(_snapshot(config))
    result = invoke("db", "downgrade", "-c", str(config), "0042", "--yes")
    assert result.exit_code == 2
    assert result.stderr == (
        "maild: error: unknown revision '0042': the revisions are "
        "base, 0001, 0002, 0003, 0004, 0005, 0006, 0007, 0008\n"
    )
    assert asyncio.run(_snapshot(config)) == before


def test_target_above_or_at_the_current_revision(config: Path) -> None:
    """Above the current revision is refused naming it; the current one is a no-op saying so."""
    down = invoke("db", "downgrade", "-c", str(config), "0004", "--yes")
    assert down.exit_code == 0, down.output
    before = asyncio.run(_snapshot(config))

    above = invoke("db", "downgrade", "-c", str(config), "0006", "--yes")
    assert above.exit_code == 1
    assert above.stderr.startswith("maild: error: the database schema is at 0004, below 0006")
    assert "`maild db upgrade`" in above.stderr

    same = invoke("db", "downgrade", "-c", str(config), "0004")
    assert same.exit_code == 0, same.output
    assert same.stdout == "database schema: already at 0004, nothing to do\n"
    assert asyncio.run(_snapshot(config)) == before


def test_down_to_base_drops_every_maild_table(config: Path) -> None:
    """base undoes every revision; a second run finds nothing to do."""
    result = invoke("db", "downgrade", "-c", str(config), "base", "--yes")
    assert result.exit_code == 0, result.output
    assert "  0001  accounts, folders, letters, attachments" in result.stdout
    assert "database schema: 0008 -> base" in result.stdout
    revision, tables, _ = asyncio.run(_base_snapshot(config))
    assert revision is None
    assert tables == [migrate.VERSION_TABLE]
    again = invoke("db", "downgrade", "-c", str(config), "base")
    assert again.exit_code == 0, again.output
    assert "already at base" in again.stdout


async def _base_snapshot(path: Path) -> tuple[str | None, list[str], None]:
    """Give the revision and the tables of a database with no maild table left."""
    engine = create_engine(load_config(path, check_secrets=False).database_url())
    try:
        revision = await migrate.current_revision(engine)
        async with engine.connect() as conn:
            tables = sorted(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return revision, tables, None


def test_the_password_is_never_printed(db_url: str, tmp_path: Path) -> None:
    """The database line masks the URL's password (PostgreSQL here trusts, so any one works)."""
    if make_url(db_url).get_backend_name() != "postgresql":
        pytest.skip("a SQLite URL holds no password")
    url = make_url(db_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    path = write_config(tmp_path, url)
    assert invoke("db", "upgrade", "-c", str(path)).exit_code == 0
    result = invoke("db", "downgrade", "-c", str(path), "0007", "--yes")
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert ":***@" in result.stdout


def _closed_port() -> int:
    """Give a local TCP port nothing listens on (just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_database(tmp_path: Path) -> None:
    """A server that cannot be reached is one clear line, exit 1, and no password."""
    url = f"postgresql+asyncpg://maild:s3cret-pw@127.0.0.1:{_closed_port()}/maild"
    path = write_config(tmp_path, url)
    result = invoke("db", "downgrade", "-c", str(path), "0005", "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith("maild: error: cannot read the database: ")
    assert "s3cret-pw" not in result.output


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    """A SQLite file that does not exist is reported, not created."""
    path = write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}")
    result = invoke("db", "downgrade", "-c", str(path), "0005", "--yes")
    assert result.exit_code == 1
    assert "absent.db does not exist: nothing to downgrade" in result.stderr
    assert not (tmp_path / "absent.db").exists()
