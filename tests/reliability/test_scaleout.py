"""Three real `maild run` processes share 30 accounts on one PostgreSQL; one is killed with -9.

Every account keeps being served, no letter is stored twice, no forward or auto-reply is sent
twice, and the killed process's folders are taken over by the other two. The figures (takeover
times, the split) are printed, not asserted: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.db.tables import Account, Folder, Letter, MaildProcess, OutboxItem
from maild.settings import load_config
from maild.testing.dovecot import DovecotServer
from maild.testing.smtp import SmtpSink
from tests.e2e.helpers import make_config, wait_until
from tests.fixtures_servers import _require_dovecot

pytestmark = pytest.mark.slow

ACCOUNTS = 30
PROCESSES = 3
LETTERS = 1  # per account and phase
LEASE_SECONDS = 3
ARCHIVE = "archive@corp.example"
USERS = {f"u{n:02d}": f"pw-{n:02d}" for n in range(ACCOUNTS)}
TAG = re.compile(rb"L-u\d\d-\d-\d")


@pytest.fixture
def mailboxes(tmp_path: Path) -> Iterator[DovecotServer]:
    """Give a Dovecot of the test's own with 30 users, one per account."""
    _require_dovecot()
    server = DovecotServer(tmp_path / "dovecot", USERS, max_connections_per_user=10)
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Maild:
    """One `maild run` subprocess, in a process group of its own (with its parser workers)."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """Give the process id, which is part of its lease owner id."""
        return self.process.pid

    def health(self) -> dict[str, Any]:
        """Read the process's /healthz (200 or 503 alike); empty while it is starting."""
        port = self._health_port()
        if port is None:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def _health_port(self) -> int | None:
        """Find the port the process logged for its health endpoint."""
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"health_listening"' in line:
                return int(json.loads(line)["port"])
        return None

    def tail(self) -> str:
        """Give the end of the process's log, for a failure message."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def start(config: Path, log: Path) -> Maild:
    """Start `python -m maild run` as an admin would, JSON logs to a file (a pipe could fill)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [sys.executable, "-m", "maild", "--log-format", "json", "run", "-c", str(config)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    return Maild(process, log)


def kill_hard(maild: Maild) -> None:
    """SIGKILL the process and its parser workers, as a crashed host would lose them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(maild.pid, signal.SIGKILL)
    maild.process.wait(timeout=10)


def letters(phase: int) -> dict[str, list[bytes]]:
    """Make each account's letters of a phase, each from its own sender (so each gets a reply)."""
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    out: dict[str, list[bytes]] = {}
    for user in USERS:
        out[user] = []
        for n in range(LETTERS):
            tag = f"L-{user}-{phase}-{n}"
            sender = f"{tag.lower()}@client.example"
            head = (
                f"Return-Path: <{sender}>\r\nFrom: Client <{sender}>\r\n"
                f"To: {user}@corp.example\r\nSubject: order {tag}\r\nDate: {now}\r\n"
                f"Message-ID: <{tag}@client.example>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
            )
            out[user].append(f"{head}\r\nPlease quote {tag}.\r\n".encode())
    return out


def write_config(server: DovecotServer, tmp_path: Path, db_url: str, smtp_port: int) -> Path:
    """Write the TOML all three processes share: 30 accounts, a forward rule, auto-replies."""
    config = make_config(
        server,
        tmp_path,
        db_url,
        {user: ["INBOX"] for user in USERS},
        smtp_port=smtp_port,
        rules=[
            {
                "name": "orders to the archive",
                "match": {"header": "subject", "contains": "order"},
                "actions": [{"forward": {"to": ARCHIVE}}],
            }
        ],
        first_sync="process",
        parse_workers=1,
        lease_seconds=LEASE_SECONDS,
        health_listen="127.0.0.1:0",
        shutdown_grace_seconds=5,
    )
    data = config.model_dump(mode="json", exclude_none=True)
    data["database"].update(pool_size=3, max_overflow=5)
    now = datetime.now(UTC)
    for account in data["accounts"]:
        account["autoreply"] = {
            "enabled": True,
            "start": (now - timedelta(days=1)).isoformat(),
            "end": (now + timedelta(days=1)).isoformat(),
            "text": "We are away; your order is in good hands.",
        }
    path = tmp_path / "maild.toml"
    path.write_text(_toml(data), encoding="utf-8")
    load_config(path)  # the file the processes read is valid
    return path


async def test_three_processes_share_and_survive_a_kill(
    mailboxes: DovecotServer, tmp_path: Path, pg_url: str, smtp_sink: SmtpSink
) -> None:
    """Kill -9 one of three processes: its folders move, and nothing is lost, stored or sent twice."""
    config = write_config(mailboxes, tmp_path, pg_url, smtp_sink.port)
    engine = create_engine(pg_url)
    procs: list[Maild] = []
    try:
        await migrate.upgrade(engine)
        for user, raws in letters(1).items():
            mailboxes.append_many(user, "INBOX", raws)
        began = time.monotonic()
        procs = [start(config, tmp_path / f"maild-{n}.log") for n in range(PROCESSES)]
        await _settle(engine, procs, phase=1, alive=PROCESSES)
        split = [p.health()["leases"]["here"] for p in procs]
        assert sorted(split) == [10, 10, 10], split
        settled = time.monotonic() - began

        victim = max(procs, key=lambda p: p.health()["leases"]["here"])
        victim_owner = (await _owners(engine))[victim.pid]
        victim_folders = await _folders_of(engine, victim_owner)
        kill_hard(victim)
        killed_at = time.monotonic()
        for user, raws in letters(2).items():
            mailboxes.append_many(user, "INBOX", raws)
        await wait_until(lambda: _taken_over(engine, victim_owner), timeout=40, what="the takeover")
        takeover = time.monotonic() - killed_at
        survivors = [p for p in procs if p is not victim]
        await _settle(engine, survivors, phase=2, alive=PROCESSES - 1)
        served = time.monotonic() - killed_at

        await _check_exactly_once(engine, smtp_sink)
        split = [p.health()["leases"] for p in survivors]
        assert sorted(h["here"] for h in split) == [15, 15], split
        assert all(h["processes"] == PROCESSES - 1 for h in split), split
        new_owners = await _owners_of(engine, victim_folders)
        assert victim_owner not in new_owners and len(new_owners) >= 1

        stopping, last = survivors
        stopping.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        await wait_until(lambda: _holds_all(engine, last.pid), timeout=20, what="a handover")
        handover = time.monotonic() - stopped_at
        assert await asyncio.to_thread(stopping.process.wait, 30) == 0, stopping.tail()
        last.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(last.process.wait, 30) == 0, last.tail()
        assert await _free_and_gone(engine)
        print(
            f"\nscaleout: {ACCOUNTS} accounts, {PROCESSES} processes, lease {LEASE_SECONDS} s: "
            f"settled in {settled:.1f} s; after kill -9: folders taken over in {takeover:.1f} s, "
            f"every account's new letters stored and sent in {served:.1f} s; "
            f"after SIGTERM: handed over in {handover:.1f} s"
        )
    finally:
        for maild in procs:
            if maild.process.poll() is None:
                kill_hard(maild)
        await engine.dispose()


async def _settle(engine: AsyncEngine, procs: list[Maild], *, phase: int, alive: int) -> None:
    """Wait until every letter so far is stored, its effects done and the split even."""
    expected = ACCOUNTS * LETTERS * phase

    async def done() -> bool:
        for maild in procs:
            assert maild.process.poll() is None, maild.tail()
        async with session_factory(engine)() as session:
            stored = await session.scalar(
                select(func.count()).select_from(Letter).where(Letter.direction == "in")
            )
            effects = dict(
                (
                    await session.execute(
                        select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
                    )
                ).all()
            )
            owners = await session.scalar(
                select(func.count(func.distinct(Folder.lease_owner))).where(
                    Folder.lease_owner.is_not(None)
                )
            )
            processes = await session.scalar(select(func.count()).select_from(MaildProcess))
        return (
            stored == expected
            and effects.get("done", 0) == 2 * expected
            and set(effects) == {"done"}
            and owners == alive
            and processes == alive
            and all(_health_here(p) == ACCOUNTS // alive for p in procs)
        )

    await wait_until(done, timeout=60, what=f"phase {phase} to be stored, sent and split")


def _health_here(maild: Maild) -> int:
    """Give how many folders a process says it holds."""
    leases = maild.health().get("leases") or {}
    return int(leases.get("here", -1))


async def _owners(engine: AsyncEngine) -> dict[int, str]:
    """Map each live process's pid to its lease owner id."""
    async with session_factory(engine)() as session:
        rows = (await session.execute(select(MaildProcess.pid, MaildProcess.owner))).all()
    return {int(pid): owner for pid, owner in rows}


async def _folders_of(engine: AsyncEngine, owner: str) -> list[int]:
    """List the folders an owner holds."""
    async with session_factory(engine)() as session:
        return list(await session.scalars(select(Folder.id).where(Folder.lease_owner == owner)))


async def _owners_of(engine: AsyncEngine, folder_ids: list[int]) -> set[str | None]:
    """Give who holds these folders now."""
    async with session_factory(engine)() as session:
        found = await session.scalars(select(Folder.lease_owner).where(Folder.id.in_(folder_ids)))
        return set(found)


async def _taken_over(engine: AsyncEngine, gone: str) -> bool:
    """Tell whether every folder is held by a process other than the killed one."""
    async with session_factory(engine)() as session:
        owners = list(
            await session.scalars(select(Folder.lease_owner).where(Folder.name == "INBOX"))
        )
    return len(owners) == ACCOUNTS and all(o is not None and o != gone for o in owners)


async def _holds_all(engine: AsyncEngine, pid: int) -> bool:
    """Tell whether one process holds every folder."""
    owner = (await _owners(engine)).get(pid)
    return owner is not None and len(await _folders_of(engine, owner)) == ACCOUNTS


async def _free_and_gone(engine: AsyncEngine) -> bool:
    """Tell whether every lease was given back and every process row deleted."""
    async with session_factory(engine)() as session:
        held = await session.scalar(
            select(func.count()).select_from(Folder).where(Folder.lease_owner.is_not(None))
        )
        rows = await session.scalar(select(func.count()).select_from(MaildProcess))
    return held == 0 and rows == 0


async def _check_exactly_once(engine: AsyncEngine, sink: SmtpSink) -> None:
    """Every letter is one row; every letter got one forward and one auto-reply, no more."""
    async with session_factory(engine)() as session:
        rows = (
            await session.execute(
                select(Account.name, Letter.message_id)
                .join(Account, Account.id == Letter.account_id)
                .where(Letter.direction == "in")
            )
        ).all()
    per_letter = Counter((account, message_id) for account, message_id in rows)
    tags = {f"L-{user}-{phase}-{n}" for user in USERS for phase in (1, 2) for n in range(LETTERS)}
    assert {m.strip("<>").split("@")[0] for _, m in per_letter} == tags
    assert set(per_letter.values()) == {1}, [k for k, v in per_letter.items() if v > 1]

    messages = list(sink.messages)
    forwards = Counter(
        tag.decode()
        for m in messages
        if m.rcpt_tos == (ARCHIVE,)
        for tag in set(TAG.findall(m.content))
    )
    replies = Counter(r for m in messages if m.mail_from == "" for r in m.rcpt_tos)
    assert set(forwards) == tags and set(forwards.values()) == {1}, forwards.most_common(3)
    assert set(replies) == {f"{tag.lower()}@client.example" for tag in tags}
    assert set(replies.values()) == {1}, replies.most_common(3)
    assert len(messages) == 2 * len(tags)


def _toml(data: dict[str, Any]) -> str:
    """Write a config as TOML: tables, arrays of tables, and inline values inside them."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return str(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(x) for x in item) + "]"
        if isinstance(item, dict):
            return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in item.items()) + " }"
        return json.dumps(str(item))

    lines: list[str] = []
    for key, section in data.items():
        blocks = section if isinstance(section, list) else [section]
        for block in blocks:
            lines.append(f"[[{key}]]" if isinstance(section, list) else f"[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in block.items()]
    return "\n".join(lines) + "\n"
