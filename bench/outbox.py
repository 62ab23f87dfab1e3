"""Outbox: how fast maild sends the CRM's letters and files them in Sent.

Run by hand (it is not a test)::

    .venv/bin/python bench/outbox.py [--letters 1000] [--skip-postgres] [--quick]

N letters are queued the way the CRM queues them (``maild.outbox.crm.queue_letter``: a
personal sender name, a signature with autotexts, text and HTML, two attachments: an offer
of 10-60 KB and a price list of 5-20 KB), then maild's dispatcher performs them (``Dispatcher.drain``, what
``maild run`` runs): compose, send through an aiosmtpd sink (``maild.testing.smtp``), store
the letter as outgoing and APPEND it to a fresh Sent folder on Dovecot. Only the drain is
timed; every letter must reach the sink and the Sent folder once. maild is held to at least
300 letters/s.

The reference sends the very bytes maild composed with stdlib ``smtplib`` (one connection)
and APPENDs each with ``imaplib`` (one connection): the same SMTP and IMAP work, without
composing, checking for an earlier copy in Sent, or the database.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    DB_LABEL,
    MB,
    Launcher,
    account_entry,
    add_common_options,
    database,
    databases,
    figure,
    finish,
    log,
    maild_config,
    phase_entry,
    rate,
    run_phases,
    usage,
)

ACCOUNT, PASSWORD = "sales", "bench-pw"
SEED = 20261126
TARGET = 300.0
SCRIPT = str(Path(__file__).resolve())


def crm_letter(rng: random.Random, index: int, offer_bytes: int = 0) -> Any:
    """One CRM letter: a reply to a client with an offer and a price list attached."""
    from maild.outbox.crm import NewLetter
    from maild.outbox.letter import FileAttachment

    def attachment(name: str, ctype: str, low: int, high: int) -> FileAttachment:
        return FileAttachment(name, ctype, rng.randbytes(rng.randint(low, high)))

    return NewLetter(
        account=ACCOUNT,
        to=f"Client {index} <client{index}@client.example>",
        subject=f"Offer {index}: pallets and delivery",
        text=f"Dear client,\n\nplease find our offer {index} attached.\n\n{{current_user}}",
        html=f"<p>Dear client,</p><p>please find our offer <b>{index}</b> attached.</p>",
        author_login="anna",
        files=[
            attachment(
                f"offer-{index}.pdf",
                "application/pdf",
                offer_bytes or 10_000,
                offer_bytes or 60_000,
            ),
            attachment(
                "prices.xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                5_000,
                20_000,
            ),
        ],
    )


def phase_maild(spec: dict[str, Any]) -> dict[str, Any]:
    """Queue the letters, then time maild's dispatcher performing every one of them."""
    from sqlalchemy import func, select

    from maild import logging as maild_logging
    from maild.db import migrate
    from maild.db.engine import create_engine, session_factory
    from maild.db.tables import OutboxItem
    from maild.memory import unmap_big_blocks
    from maild.metrics import Metrics
    from maild.outbox.crm import queue_letter
    from maild.outbox.dispatcher import Dispatcher
    from maild.pipeline import prepare_folders
    from maild.runtime import endpoint_for
    from maild.settings import Config

    maild_logging.configure(spec["log_level"], json=True)
    unmap_big_blocks()  # as ``maild run`` does at start
    config = Config.model_validate(spec["config"])

    async def run() -> dict[str, Any]:
        engine = create_engine(config.database_url())
        try:
            await migrate.upgrade(engine)
            sessions = session_factory(engine)
            await prepare_folders(sessions, config)
            rng = random.Random(SEED)
            began = time.perf_counter()
            async with sessions.begin() as session:
                for index in range(spec["letters"]):
                    await queue_letter(
                        session,
                        config,
                        crm_letter(rng, index, spec["offer_bytes"]),
                        key=f"b{index}",
                    )
            queued = time.perf_counter() - began
            dispatcher = Dispatcher(
                sessions,
                config,
                endpoint_for=lambda account: endpoint_for(account, 60),
                metrics=Metrics(),
            )
            before = usage()
            began = time.perf_counter()
            report = await dispatcher.drain(600)
            seconds = time.perf_counter() - began
            after = usage()
            await dispatcher.close()
            async with sessions() as session:
                rows = await session.execute(
                    select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
                )
                statuses = {str(status): int(n) for status, n in rows.all()}
        finally:
            await engine.dispose()
        return {
            "queue_seconds": queued,
            "seconds": seconds,
            "done": report.done,
            "statuses": statuses,
            "cpu": after["cpu_self"] - before["cpu_self"],
            "hwm_kb": after["hwm_self_kb"],
            "queued_hwm_kb": before["hwm_self_kb"],
        }

    return asyncio.run(run())


def phase_stdlib(spec: dict[str, Any]) -> dict[str, Any]:
    """Send the spooled letters with smtplib and APPEND each with imaplib, one connection each."""
    import imaplib
    import smtplib

    from ingest import read_spool

    letters = list(read_spool(Path(spec["spool"])))
    imap = imaplib.IMAP4(spec["host"], spec["imap_port"])
    imap.login(ACCOUNT, PASSWORD)
    smtp = smtplib.SMTP("127.0.0.1", spec["smtp_port"])
    before = usage()
    began = time.perf_counter()
    for index, raw in enumerate(letters):
        smtp.sendmail(f"{ACCOUNT}@corp.example", [f"client{index}@client.example"], raw)
        typ, data = imap.append(f'"{spec["folder"]}"', "(\\Seen)", None, raw)
        if typ != "OK":
            raise RuntimeError(f"APPEND failed: {data!r}")
    seconds = time.perf_counter() - began
    cpu = usage()["cpu_self"] - before["cpu_self"]
    smtp.quit()
    imap.logout()
    return {"done": len(letters), "seconds": seconds, "cpu": cpu}


def config_for(server: Any, url: str, smtp_port: int, sent: str, workdir: Path) -> dict[str, Any]:
    """The account with its Sent folder, the sink as relay, and the author."""
    account = account_entry(server, ACCOUNT, ["INBOX"], workdir)
    account["display_name"] = "Corp Sales"
    account["folders"]["sent"] = sent
    account["outgoing"] = {"signature": "{current_user}\nCorp Sales, +7 495 000-00-00"}
    return maild_config(
        url,
        [account],
        smtp={"host": "127.0.0.1", "port": smtp_port, "security": "none"},
        users=[
            {
                "login": "anna",
                "full_name": "Anna Petrova",
                "sender_names": {ACCOUNT: "Анна Петрова"},
            }
        ],
    )


def one_round(
    launcher: Launcher,
    server: Any,
    sink: Any,
    kind: str,
    workdir: Path,
    args: argparse.Namespace,
    tag: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """maild's drain on a fresh database and Sent folder, then stdlib on the same letters."""
    sent, peer_sent = f"Sent{tag}", f"SentPeer{tag}"
    server.create_folder(ACCOUNT, sent)
    server.create_folder(ACCOUNT, peer_sent)
    sink.clear()
    with database(kind, workdir, args.postgres_url) as url:
        spec = {
            "label": kind,
            "config": config_for(server, url, sink.port, sent, workdir),
            "letters": args.letters,
            "offer_bytes": int(args.offer_mb * MB),
            "log_level": args.log_level,
        }
        mine = run_phases(launcher, SCRIPT, "maild", [spec], workdir)[0]
    received, filed = len(sink.messages), len(server.uids(ACCOUNT, sent))
    size = sum(len(m.content) for m in sink.messages)
    log(
        f"   maild ({DB_LABEL[kind]}): queued {args.letters:,} in {mine['queue_seconds']:.1f} s; "
        f"sent and filed in {mine['seconds']:.2f} s: {rate(mine['done'], mine['seconds']):,.1f} "
        f"letters/s ({size / MB:,.1f} MB); sink got {received:,}, Sent holds {filed:,}; "
        f"outbox {mine['statuses']}; CPU {1000 * rate(mine['cpu'], mine['done']):.2f} ms/letter; "
        f"peak RSS {mine['hwm_kb'] / 1024:,.0f} MB ({mine['queued_hwm_kb'] / 1024:,.0f} MB "
        "before the drain)"
    )
    if received != args.letters or filed != args.letters:
        raise RuntimeError(f"maild sent {received} and filed {filed} of {args.letters} letters")
    spool = workdir / "sent.spool"
    with open(spool, "wb") as out:
        for message in sink.messages:
            out.write(struct.pack(">Q", len(message.content)))
            out.write(message.content)
    sink.clear()
    peer_spec = {
        "host": server.host,
        "imap_port": server.port,
        "smtp_port": sink.port,
        "folder": peer_sent,
        "spool": str(spool),
    }
    peer = run_phases(launcher, SCRIPT, "stdlib", [peer_spec], workdir)[0]
    spool.unlink()
    log(
        f"   stdlib smtplib + imaplib, same letters: {peer['seconds']:.2f} s, "
        f"{rate(peer['done'], peer['seconds']):,.1f} letters/s"
    )
    return mine, peer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, help="CRM letters (1000; --quick 100)")
    parser.add_argument("--log-level", default="INFO", help="maild's log level (INFO)")
    parser.add_argument(
        "--offer-mb",
        type=float,
        default=0.0,
        help="make every offer attachment this many MB (big letters; default 10-60 KB)",
    )
    add_common_options(parser)
    args = parser.parse_args()
    args.letters = args.letters or (100 if args.quick else 1_000)
    kinds = databases(args)
    launcher = Launcher()
    from maild.testing.dovecot import DovecotServer
    from maild.testing.smtp import SmtpSink

    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-outbox-"))
    server = DovecotServer(workdir / "dovecot", {ACCOUNT: PASSWORD})
    sink = SmtpSink()
    log(f"outbox: {args.letters:,} CRM letters with two attachments each")
    try:
        server.start()
        sink.start()
        results: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {k: [] for k in kinds}
        for round_no in range(1, args.repeat + 1):
            for kind in kinds:
                log(f"-- round {round_no}, {DB_LABEL[kind]}")
                results[kind].append(
                    one_round(launcher, server, sink, kind, workdir, args, f"{kind}{round_no}")
                )
        rows = [
            figure(
                "outbox",
                f"CRM letters sent + filed in Sent, {DB_LABEL[kind]}",
                "letters/s",
                [rate(m["done"], m["seconds"]) for m, _ in results[kind]],
                peer="stdlib smtplib + imaplib APPEND, same bytes",
                peer_values=[rate(p["done"], p["seconds"]) for _, p in results[kind]],
                target=("min", TARGET),
            )
            for kind in kinds
        ]
        finish(rows, args)
        return 0
    finally:
        sink.stop()
        server.close()
        launcher.close()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__" and not phase_entry({"maild": phase_maild, "stdlib": phase_stdlib}):
    sys.exit(main())
