"""The whole daemon against a real Dovecot, on SQLite and PostgreSQL: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from maild.runtime import Daemon
from maild.testing.dovecot import DovecotServer
from maild.testing.samples import MALFORMED, SALES, demo_mailboxes, letter, random_letter
from tests.e2e.helpers import (
    at_least,
    folder_has_error,
    folder_synced,
    letter_rows,
    make_config,
    numbered,
    unique_folder,
    wait_until,
)

SAMPLES = [raw for raws in demo_mailboxes().values() for raw in raws]


async def test_three_accounts_two_folders_concurrently(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """Three accounts with two folders each are ingested in one run, every letter exactly once."""
    users = ["sales", "support", "billing"]
    layout = {user: [unique_folder(), unique_folder()] for user in users}
    expected = 0
    for user, folders in layout.items():
        for n, folder in enumerate(folders):
            dovecot.create_folder(user, folder)
            dovecot.append_many(user, folder, numbered(5 + n, f"{user}/{folder}"))
            expected += 5 + n
    config = make_config(dovecot, tmp_path, db_url, layout)
    result = await Daemon(config).run(once=True)
    assert result.ok
    rows = await letter_rows(db_url)
    assert len(rows) == expected
    assert len({(r[0], r[1], r[2]) for r in rows}) == expected
    again = await Daemon(config).run(once=True)
    assert again.ok and len(await letter_rows(db_url)) == expected
    assert all(s.duplicates == 0 and s.stored == 0 for s in again.status.folders.values())


async def test_malformed_letters_are_stored(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """No headers, broken MIME, unknown charset, 8-bit headers and a 20 MB attachment all store."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    big = letter(
        sender=("Big", "big@client.example"),
        to=SALES,
        subject="twenty megabytes",
        body="see attachment",
        attachments=[("scan.tif", "image/tiff", random.Random(3).randbytes(20 * 2**20))],
    )
    raws = [*MALFORMED.values(), big]
    dovecot.append_many("sales", folder, raws)
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]})
    assert (await Daemon(config).run(once=True)).ok
    rows = await letter_rows(db_url, folder)
    assert len(rows) == len(raws)
    assert {r[3] for r in rows} <= {"stored", "failed"}
    assert any(r[6] == "twenty megabytes" for r in rows)


async def test_oversize_letter_keeps_its_header(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """A letter over daemon.max_letter_bytes is stored with its header only, flagged oversize."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    dovecot.append_many("sales", folder, [random_letter(random.Random(1), 1, 300_000)])
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]}, max_letter_bytes=100_000)
    assert (await Daemon(config).run(once=True)).ok
    [row] = await letter_rows(db_url, folder)
    assert row[3] == "oversize" and row[6].startswith("Request 1")
    assert "max_letter_bytes" in row[7]


async def test_restart_midway_resumes(dovecot: DovecotServer, tmp_path: Path, db_url: str) -> None:
    """A daemon stopped mid-folder resumes where it stopped: no letter lost, none doubled."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    total = 400
    dovecot.append_many("sales", folder, numbered(total, "restart"))
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]})
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    await wait_until(lambda: at_least(db_url, 50), what="some letters stored")
    daemon.stop.set()
    await asyncio.wait_for(task, 60)
    partial = len(await letter_rows(db_url, folder))
    assert partial > 0
    assert (await Daemon(config).run(once=True)).ok
    rows = await letter_rows(db_url, folder)
    assert len(rows) == total
    assert sorted(r[2] for r in rows) == sorted(dovecot.uids("sales", folder))


async def test_uidvalidity_reset_loses_and_doubles_nothing(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """After the folder is recreated with a new UIDVALIDITY, old letters are re-keyed, new ones added."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    first = numbered(6, "uidvalidity")
    dovecot.append_many("sales", folder, first)
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]})
    assert (await Daemon(config).run(once=True)).ok
    old_validity = (await letter_rows(db_url, folder))[0][1]
    new_validity = dovecot.recreate_folder("sales", folder)
    assert new_validity != old_validity
    extra = numbered(8, "uidvalidity")[6:]
    dovecot.append_many("sales", folder, first + extra)
    assert (await Daemon(config).run(once=True)).ok
    rows = await letter_rows(db_url, folder)
    assert len(rows) == 8
    assert {r[1] for r in rows} == {new_validity}
    assert sorted(r[2] for r in rows) == sorted(dovecot.uids("sales", folder))


def _outbox_counted(daemon: Daemon) -> Callable[[], Awaitable[bool]]:
    """Tell when the dispatcher has counted the outbox's rows for /healthz."""

    async def counted() -> bool:
        return daemon.status.outbox is not None

    return counted


async def test_wrong_password_is_reported_while_others_work(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused login shows in the log and /healthz, and the other accounts keep ingesting."""
    good = unique_folder()
    dovecot.create_folder("sales", good)
    dovecot.append_many("sales", good, numbered(3, "good"))
    passwords = {**dovecot.users, "support": "not-the-password"}
    config = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [good], "support": ["INBOX"]},
        passwords=passwords,
        health_listen="127.0.0.1:0",
    )
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: at_least(db_url, 3), what="the good account's letters")
        await wait_until(
            lambda: folder_has_error(daemon, "support", "INBOX"), what="the bad account's error"
        )
        await wait_until(_outbox_counted(daemon), what="the outbox counted")
        assert daemon.health is not None
        code, report = await asyncio.to_thread(_get_json, daemon.health.port, "/healthz")
        assert code == 503
        assert report["accounts"]["sales"]["ok"] is True
        support = report["accounts"]["support"]
        assert support["ok"] is False
        assert "login refused" in support["folders"]["INBOX"]["last_error"]
        assert report["outbox"] == {"pending": 0, "dead": 0}
        metrics = await asyncio.to_thread(_get_text, daemon.health.port, "/metrics")
        assert 'maild_letters_ingested_total{account="sales"' in metrics
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 60)
    assert "not-the-password" not in caplog.text


def _get_json(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


async def test_idle_brings_new_letters_without_polling(
    dovecot: DovecotServer, tmp_path: Path, db_url: str
) -> None:
    """With the poll interval at an hour, IDLE still brings a new letter into the database."""
    folder = unique_folder()
    dovecot.create_folder("sales", folder)
    config = make_config(dovecot, tmp_path, db_url, {"sales": [folder]}, poll_interval_seconds=3600)
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: folder_synced(daemon, "sales", folder), what="first sync")
        await asyncio.to_thread(dovecot.append, "sales", folder, numbered(1, "pushed")[0])
        await wait_until(lambda: at_least(db_url, 1), what="the pushed letter")
    finally:
        daemon.stop.set()
        await asyncio.wait_for(task, 60)
    [row] = await letter_rows(db_url, folder)
    assert row[6] == "pushed #0"
