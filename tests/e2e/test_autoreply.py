"""The autoresponder end to end: real Dovecot, the aiosmtpd sink, SQLite and PostgreSQL, real processes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.db import migrate
from maild.db.engine import create_engine, session_factory
from maild.db.tables import AutoreplyLog, Folder, Letter, OutboxItem
from maild.runtime import Daemon
from maild.settings import Config
from maild.testing.dovecot import DovecotServer
from maild.testing.smtp import SmtpSink
from tests.e2e.helpers import make_config, unique_folder

NOW = datetime.now(UTC).replace(microsecond=0)
SUPPORT = "support@corp.example"


def _config(
    dovecot: DovecotServer,
    tmp_path: Path,
    db_url: str,
    smtp_port: int,
    *,
    start: datetime = NOW - timedelta(days=10),
    end: datetime = NOW + timedelta(days=10),
    outbox: dict[str, Any] | None = None,
) -> tuple[Config, str, str]:
    """Support watches its own inbox folder; its Sent folder is unique to the test."""
    inbox, sent = unique_folder("In"), unique_folder("Sent")
    dovecot.create_folder("support", inbox)
    base = make_config(
        dovecot,
        tmp_path,
        db_url,
        {"support": [inbox]},
        smtp_port=smtp_port,
        outbox=outbox,
        first_sync="process",
    )
    data = base.model_dump(mode="json")
    account = data["accounts"][0]
    account["display_name"] = "Corp Support"
    account["folders"]["sent"] = sent
    account["autoreply"] = {
        "enabled": True,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "text": "Мы в отпуске до 9 января.",
    }
    return Config.model_validate(data), inbox, sent


def _letter(sender: str, subject: str, n: int, **extra: str) -> bytes:
    """A letter as delivered: Return-Path first, addressed to support@."""
    head = {
        "Return-Path": f"<{sender}>",
        "From": f"Иван Петров <{sender}>",
        "To": SUPPORT,
        "Subject": subject,
        "Message-ID": f"<m{n}-{os.getpid()}@client.example>",
        "References": "<root@client.example>",
        "Date": "Fri, 01 Jan 2027 10:00:00 +0000",
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        **extra,
    }
    text = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return (text + "\r\nHello\r\n").encode("utf-8")


async def _rows(db_url: str, stmt: Any) -> list[Any]:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(stmt)).all())
    finally:
        await engine.dispose()


def _subject_header(raw: bytes) -> str:
    """Give the raw, folded Subject header of a letter."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    start = head.index("\r\nSubject:") + 2
    end = head.index("\r\n", start)
    while head[end + 2 : end + 3] in (" ", "\t"):
        end = head.index("\r\n", end + 2)
    return head[start:end]


async def test_reply_headers_on_the_wire(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """The sink receives MAIL FROM:<>, one RCPT, Auto-Submitted, threading, an encoded short-lined
    Subject from a 500-character Cyrillic one; the reply is stored as outgoing and filed in Sent."""
    config, inbox, sent = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    subject = ("Где мой заказ " * 40)[:500]
    raw = _letter("Ivan@Client.example", subject, 1, **{"Reply-To": "other@x.example"})
    dovecot.append("support", inbox, raw)
    result = await Daemon(config).run(once=True)
    assert result.ok and result.outbox is not None and result.outbox.kinds == {"autoreply": 1}

    [mail] = smtp_sink.messages
    assert mail.mail_from == "" and list(mail.rcpt_tos) == ["Ivan@Client.example"]
    assert all(len(line) <= 998 for line in mail.content.split(b"\r\n"))
    assert "=?utf-8?" in _subject_header(mail.content)
    msg = email.message_from_bytes(mail.content, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    [(message_id,)] = await _rows(db_url, select(Letter.message_id).where(Letter.direction == "in"))
    assert msg["In-Reply-To"] == message_id
    assert msg["References"] == f"<root@client.example> {message_id}"
    assert str(msg["Subject"]).startswith("Auto: Где мой заказ")
    assert str(msg["From"]) == f"Corp Support <{SUPPORT}>"
    assert str(msg["To"]) == "Иван Петров <Ivan@Client.example>"

    outgoing = await _rows(
        db_url,
        select(Letter.direction, Letter.uid, Letter.in_reply_to)
        .join(Folder, Folder.id == Letter.folder_id)
        .where(Folder.name == sent),
    )
    assert [(d, i) for d, _, i in outgoing] == [("out", message_id)] and outgoing[0][1] > 0
    assert len(dovecot.uids("support", sent)) == 1
    [(window, sent_at)] = await _rows(
        db_url, select(AutoreplyLog.window_start, AutoreplyLog.sent_at)
    )
    assert sent_at is not None and abs(window - NOW) < timedelta(minutes=5)


async def test_period_by_arrival_and_restart(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """Letters that arrived before start or after end get no reply; a restart between two letters
    of one sender keeps the throttle; a second sender is answered."""
    start, end = NOW - timedelta(days=3), NOW - timedelta(days=1)
    inside = NOW - timedelta(days=2)
    config, inbox, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port, start=start, end=end)
    dovecot.append(
        "support", inbox, _letter("early@client.example", "early", 1), start - timedelta(hours=1)
    )
    dovecot.append("support", inbox, _letter("late@client.example", "late", 2))  # arrives now
    dovecot.append("support", inbox, _letter("ivan@client.example", "first", 3), inside)
    assert (await Daemon(config).run(once=True)).ok
    assert [list(m.rcpt_tos) for m in smtp_sink.messages] == [["ivan@client.example"]]

    later = inside + timedelta(hours=1)
    dovecot.append("support", inbox, _letter("IVAN@client.example", "second", 4), later)
    dovecot.append("support", inbox, _letter("olga@client.example", "other", 5), later)
    assert (await Daemon(config).run(once=True)).ok  # a new process: the throttle is in the DB
    assert [list(m.rcpt_tos) for m in smtp_sink.messages] == [
        ["ivan@client.example"],
        ["olga@client.example"],
    ]
    outcomes = dict(await _rows(db_url, select(Letter.subject, Letter.autoreply_outcome)))
    assert "outside the period" in outcomes["early"] and "outside the period" in outcomes["late"]
    assert "within 3 days" in outcomes["second"]


async def test_smtp_4xx_retried_5xx_releases(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_sink: SmtpSink
) -> None:
    """A 4xx reply is retried until sent; a 5xx makes the reply dead and releases the throttle,
    so the sender's next letter is answered."""
    config, inbox, _ = _config(dovecot, tmp_path, db_url, smtp_sink.port)
    smtp_sink.fail_next(1, "451 4.3.0 try later")
    dovecot.append("support", inbox, _letter("ivan@client.example", "retry me", 1))
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and (result.outbox.retried, result.outbox.done) == (1, 1)
    assert len(smtp_sink.messages) == 1

    smtp_sink.fail_next(1, "550 5.7.1 no thanks")
    dovecot.append("support", inbox, _letter("olga@client.example", "refused", 2))
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.dead == 1
    assert (
        await _rows(
            db_url, select(AutoreplyLog.sender).where(AutoreplyLog.sender == "olga@client.example")
        )
        == []
    )
    dovecot.append("support", inbox, _letter("olga@client.example", "again", 3))
    result = await Daemon(config).run(once=True)
    assert result.outbox is not None and result.outbox.done == 1
    assert [list(m.rcpt_tos) for m in smtp_sink.messages][-1] == ["olga@client.example"]


async def test_two_processes_burst(
    dovecot: DovecotServer, tmp_path: Path, pg_url: str, smtp_sink: SmtpSink
) -> None:
    """Two maild processes on one PostgreSQL, 100 letters from 10 senders: exactly 10 replies."""
    config, inbox, _ = _config(dovecot, tmp_path, pg_url, smtp_sink.port)
    engine = create_engine(pg_url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    dovecot.append_many(
        "support",
        inbox,
        [_letter(f"sender{n % 10}@client.example", f"burst {n}", n) for n in range(100)],
    )
    path = tmp_path / "maild.toml"
    path.write_text(_toml(config), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [
        sys.executable,
        "-m",
        "maild",
        "--log-format",
        "json",
        "run",
        "--once",
        "-c",
        str(path),
    ]
    # Logs go to files, not pipes: a full pipe would stop a process inside its transaction.
    logs = [tmp_path / f"maild-{n}.log" for n in range(2)]
    procs = []
    for log_path in logs:
        with log_path.open("wb") as log_file:
            procs.append(
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
            )
    for proc, log_path in zip(procs, logs, strict=True):
        try:
            await asyncio.to_thread(proc.wait, timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        assert proc.returncode == 0, tail
    assert sorted(next(iter(m.rcpt_tos)) for m in smtp_sink.messages) == [
        f"sender{n}@client.example" for n in range(10)
    ]
    rows = await _rows(pg_url, select(OutboxItem.status).where(OutboxItem.kind == "autoreply"))
    assert [status for (status,) in rows] == ["done"] * 10


def _toml(config: Config) -> str:
    """Write a config as TOML (the few shapes this test uses)."""
    data = config.model_dump(mode="json", exclude_defaults=True)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = []
    for key, section in data.items():
        if key == "accounts":
            for account in section:
                lines.append("[[accounts]]")
                lines += [f"{k} = {value(v)}" for k, v in account.items()]
        else:
            lines.append(f"[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"
