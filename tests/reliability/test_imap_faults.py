"""IMAP faults under the running daemon: each one shows in /healthz, spares the other accounts,
and heals by itself with every letter stored exactly once.

The sales account reaches Dovecot through a fault proxy; the support account (or another
folder) goes direct and must keep ingesting while the fault lasts. The database is SQLite:
these faults are on the IMAP side, and the database faults have their own tests. A
UIDVALIDITY change between two runs is tests/e2e/test_daemon.py
``test_uidvalidity_reset_loses_and_doubles_nothing``; thousands of letters in one folder are
tests/e2e/test_faults_and_cli.py ``test_thousands_of_letters_in_one_folder``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.faultproxy import FaultProxy
from maild.testing.samples import SALES, letter
from tests.e2e.helpers import folder_synced, letter_rows, numbered, unique_folder, wait_until
from tests.reliability.helpers import (
    assert_exactly_once,
    fault_config,
    running,
    stored,
    timed,
    wait_healthy,
    wait_trouble,
)

Record = Callable[[str, object], None]


@pytest.fixture
async def imap_proxy(dovecot: DovecotServer) -> AsyncIterator[FaultProxy]:
    """Give a proxy in front of the shared Dovecot's plaintext port, recording what goes up."""
    async with FaultProxy(dovecot.port, record=True) as proxy:
        yield proxy


def _folders(dovecot: DovecotServer) -> tuple[str, str]:
    """Make the faulty folder (sales, through the proxy) and the bystander (support, direct)."""
    faulty, bystander = unique_folder("F"), unique_folder("B")
    dovecot.create_folder("sales", faulty)
    dovecot.create_folder("support", bystander)
    return faulty, bystander


def _config(
    dovecot: DovecotServer, proxy: FaultProxy, tmp_path: Path, db_url: str, faulty: str, other: str
) -> Config:
    return fault_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [faulty], "support": [other]},
        ports={"sales": proxy.port},
    )


async def _bystander_keeps_going(dovecot: DovecotServer, db_url: str, folder: str) -> None:
    """A new letter for the account that is not behind the proxy is stored during the fault."""
    before = len(await letter_rows(db_url, folder))
    await asyncio.to_thread(dovecot.append, "support", folder, numbered(1, "bystander")[0])
    await wait_until(lambda: stored(db_url, folder, before + 1), what="the bystander's letter")


async def _recovers(
    daemon: Daemon, dovecot: DovecotServer, db_url: str, folder: str, record: Record
) -> None:
    """Every letter of the folder is stored and /healthz is 200 again; record how long it took."""
    total = len(dovecot.uids("sales", folder))

    async def healed() -> None:
        await wait_until(lambda: stored(db_url, folder, total), what="every letter")
        await wait_healthy(daemon)

    record("recovery_seconds", await timed(healed))
    await assert_exactly_once(db_url, dovecot, "sales", folder)


async def test_drop_in_the_middle_of_a_large_literal(
    dovecot: DovecotServer,
    imap_proxy: FaultProxy,
    tmp_path: Path,
    sqlite_url: str,
    record_property: Record,
) -> None:
    """Every connection dropping 1 MB into a 4 MB letter: error shown, retried, stored once after."""
    faulty, other = _folders(dovecot)
    scan = random.Random(7).randbytes(3 * 2**20)
    big = letter(
        sender=("Big", "big@client.example"),
        to=SALES,
        subject="four megabytes",
        body="scan attached",
        attachments=[("scan.bin", "application/octet-stream", scan)],
    )
    dovecot.append_many("sales", faulty, [*numbered(3, "before"), big, *numbered(2, "after")])
    imap_proxy.cut_after(2**20)
    config = _config(dovecot, imap_proxy, tmp_path, sqlite_url, faulty, other)
    async with running(config) as daemon:
        error = await wait_trouble(daemon, "sales", faulty)
        assert "connection lost during UID FETCH" in error
        await _bystander_keeps_going(dovecot, sqlite_url, other)
        imap_proxy.heal()
        await _recovers(daemon, dovecot, sqlite_url, faulty, record_property)
    assert daemon.metrics.reconnects.labels("sales", faulty)._value.get() >= 1


async def test_bye_during_idle(
    dovecot: DovecotServer,
    imap_proxy: FaultProxy,
    tmp_path: Path,
    sqlite_url: str,
    record_property: Record,
) -> None:
    """`* BYE` pushed into IDLE, the server then down a moment: shown, reconnected, nothing lost."""
    faulty, other = _folders(dovecot)
    dovecot.append_many("sales", faulty, numbered(2, "idle"))
    config = _config(dovecot, imap_proxy, tmp_path, sqlite_url, faulty, other)
    async with running(config) as daemon:
        await wait_until(lambda: folder_synced(daemon, "sales", faulty), what="the first pass")
        await wait_until(lambda: _idling(imap_proxy), what="IDLE")
        imap_proxy.refuse()
        assert imap_proxy.inject(b"* BYE Server shutting down.\r\n") >= 1
        error = await wait_trouble(daemon, "sales", faulty)
        assert "Server shutting down" in error
        await asyncio.to_thread(dovecot.append, "sales", faulty, numbered(1, "while down")[0])
        await _bystander_keeps_going(dovecot, sqlite_url, other)
        imap_proxy.heal()
        await _recovers(daemon, dovecot, sqlite_url, faulty, record_property)


async def _idling(proxy: FaultProxy) -> bool:
    """Tell whether the last command maild sent through the proxy is IDLE."""
    assert proxy.sent_up is not None
    return proxy.sent_up.endswith(b" IDLE\r\n")


@pytest.mark.slow
async def test_server_that_stops_answering(
    dovecot: DovecotServer,
    imap_proxy: FaultProxy,
    tmp_path: Path,
    sqlite_url: str,
    record_property: Record,
) -> None:
    """A slow link is not taken for a dead one; a stalled one is, within the IMAP timeout."""
    faulty, other = _folders(dovecot)
    pad = random.Random(5).randbytes(2**20).hex()  # 2 MB of text: ten seconds at 200 kB/s
    slow = letter(sender=("Slow", "s@client.example"), to=SALES, subject="slow", body=pad)
    dovecot.append_many("sales", faulty, [slow, *numbered(2, "stall")])
    imap_proxy.slow(200_000, "down")
    config = _config(dovecot, imap_proxy, tmp_path, sqlite_url, faulty, other)
    async with running(config) as daemon:
        await wait_until(lambda: _fetching_bodies(imap_proxy), what="the body FETCH")
        await asyncio.sleep(2 * daemon.config.daemon.imap_timeout_seconds)
        state = daemon.status.folders[("sales", faulty)]
        assert state.last_error is None and state.stored == 0, "a slow FETCH was cut off"
        stalled = time.monotonic()
        imap_proxy.stall()
        error = await wait_trouble(daemon, "sales", faulty)
        record_property("shown_after_seconds", round(time.monotonic() - stalled, 2))
        assert "timed out" in error
        await _bystander_keeps_going(dovecot, sqlite_url, other)
        imap_proxy.heal()
        await _recovers(daemon, dovecot, sqlite_url, faulty, record_property)


async def _fetching_bodies(proxy: FaultProxy) -> bool:
    """Tell whether maild has asked the server for letter bodies."""
    assert proxy.sent_up is not None
    return b"BODY.PEEK[]" in proxy.sent_up


def _flag_updates(count: int) -> bytes:
    """Unsolicited FETCH lines, as a server sends when another client flags ``count`` letters."""
    return b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n) for n in range(1, count + 1))


async def test_three_thousand_line_responses(
    dovecot: DovecotServer,
    imap_proxy: FaultProxy,
    tmp_path: Path,
    sqlite_url: str,
    record_property: Record,
) -> None:
    """3,000 untagged lines in IDLE and in front of a FETCH answer: read in stride, no reconnect."""
    faulty, other = _folders(dovecot)
    dovecot.append_many("sales", faulty, numbered(3, "many lines"))
    config = _config(dovecot, imap_proxy, tmp_path, sqlite_url, faulty, other)
    async with running(config) as daemon:
        await wait_until(lambda: stored(sqlite_url, faulty, 3), what="the first letters")
        await wait_until(lambda: _idling(imap_proxy), what="IDLE")
        assert imap_proxy.inject(_flag_updates(3000)) >= 1
        imap_proxy.on_request(b"UID FETCH", prepend=_flag_updates(3000))
        await asyncio.to_thread(dovecot.append, "sales", faulty, numbered(1, "after")[0])
        record_property("store_seconds", await timed(lambda: _stored_soon(sqlite_url, faulty, 4)))
        await wait_healthy(daemon)
    await assert_exactly_once(sqlite_url, dovecot, "sales", faulty)
    assert daemon.metrics.reconnects.labels("sales", faulty)._value.get() == 0


async def _stored_soon(db_url: str, folder: str, count: int) -> None:
    await wait_until(lambda: stored(db_url, folder, count), what=f"{count} letters")


async def test_folder_deleted_and_recreated(
    dovecot: DovecotServer, tmp_path: Path, sqlite_url: str, record_property: Record
) -> None:
    """A watched folder deleted under the daemon shows as an error; recreated, it is read again:
    old letters re-keyed, not doubled, new ones stored; the account's other folder never stops."""
    faulty, steady = unique_folder("F"), unique_folder("S")
    for folder in (faulty, steady):
        dovecot.create_folder("sales", folder)
    old = numbered(3, "old")
    dovecot.append_many("sales", faulty, old)
    config = fault_config(dovecot, tmp_path, sqlite_url, {"sales": [faulty, steady]})
    async with running(config) as daemon:
        await wait_until(lambda: stored(sqlite_url, faulty, 3), what="the old letters")
        old_validity = (await letter_rows(sqlite_url, faulty))[0][1]
        await asyncio.to_thread(dovecot.delete_folder, "sales", faulty)
        error = await wait_trouble(daemon, "sales", faulty)
        await asyncio.to_thread(dovecot.append, "sales", steady, numbered(1, "steady")[0])
        await wait_until(lambda: stored(sqlite_url, steady, 1), what="the other folder's letter")
        await asyncio.to_thread(dovecot.create_folder, "sales", faulty)
        await asyncio.to_thread(dovecot.append_many, "sales", faulty, [*old, *numbered(2, "new")])
        await _recovers(daemon, dovecot, sqlite_url, faulty, record_property)
    record_property("error", error)
    rows = await letter_rows(sqlite_url, faulty)  # by letter id: the old rows kept theirs
    assert [row[6] for row in rows[:3]] == ["old #0", "old #1", "old #2"]
    assert old_validity not in {row[1] for row in rows}


async def test_a_big_append_cut_halfway_fails_at_once(
    dovecot: DovecotServer, imap_proxy: FaultProxy
) -> None:
    """A connection cut while a big letter is being APPENDed, the socket full and the letter
    waiting for it, ends the command with a connection error: the writing stops, nothing hangs."""
    from dataclasses import replace

    from maild.errors import ImapConnectionError
    from tests.integration.test_imap import endpoint, session_for
    from tests.integration.test_imap import letter as small_letter

    folder = unique_folder("A")
    dovecot.create_folder("sales", folder)
    raw = small_letter(9, body_size=12_000_000)
    async with session_for(replace(endpoint(dovecot), port=imap_proxy.port)) as session:
        imap_proxy.slow(500_000, "up")
        appending = asyncio.ensure_future(session.append(folder, raw))
        await asyncio.sleep(1.0)  # the letter is on its way; the socket is full
        assert not appending.done()
        imap_proxy.cut()
        with pytest.raises(ImapConnectionError, match="connection lost"):
            await asyncio.wait_for(appending, 10)
        writing = session._proto._literal  # the letter's writer: woken by the loss, it ended
        assert writing is not None
        await asyncio.wait_for(writing, 5)
    imap_proxy.slow(None, "up")
    assert dovecot.uids("sales", folder) == []
