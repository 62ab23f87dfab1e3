"""SMTP faults under the running daemon's dispatcher: a forward rule sends through the relay.

Temporary refusals are retried and the letter goes once; a permanent one parks the forward
dead with the relay's reply and is never tried again; a relay that took the letter but whose
final reply was lost gets it a second time (the one duplicate maild can cause); a TLS relay
whose STARTTLS is stripped or whose handshake fails is retried, never written to in clear.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from maild.db.engine import create_engine, session_factory
from maild.db.tables import OutboxItem
from maild.settings import Config, SmtpConfig
from maild.testing.dovecot import DovecotServer
from maild.testing.faultproxy import FaultProxy
from maild.testing.samples import SALES, letter
from maild.testing.smtp import SmtpSink
from tests.e2e.helpers import unique_folder, wait_until
from tests.reliability.helpers import fault_config, running, timed

Record = Callable[[str, object], None]


def _letter(subject: str) -> bytes:
    return letter(sender=("Client", "client@client.example"), to=SALES, subject=subject, body="hi")


def _to(subject: str) -> str:
    """Give each subject its own recipient, so the sink's messages say which forward they are."""
    return f"{subject}@elsewhere.example"


def _config(
    dovecot: DovecotServer, tmp_path: Path, db_url: str, smtp_port: int, *subjects: str
) -> tuple[Config, str]:
    """A folder holding a letter with the first subject; each subject's rule forwards it."""
    folder = unique_folder("In")
    dovecot.create_folder("sales", folder)
    dovecot.append("sales", folder, _letter(subjects[0]))
    rules = [
        {
            "name": f"fwd {subject}",
            "match": {"header": "subject", "contains": subject},
            "actions": [{"forward": {"to": _to(subject)}}],
        }
        for subject in subjects
    ]
    config = fault_config(
        dovecot,
        tmp_path,
        db_url,
        {"sales": [folder]},
        rules=rules,
        smtp_port=smtp_port,
        first_sync="process",
    )
    return config, folder


async def _outbox(db_url: str) -> list[OutboxItem]:
    """Read every outbox row."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return list(
                (await session.execute(select(OutboxItem).order_by(OutboxItem.id))).scalars()
            )
    finally:
        await engine.dispose()


async def _row(db_url: str, target: str, check: Callable[[OutboxItem], bool]) -> bool:
    """Tell whether the forward to ``target`` is in the state ``check`` looks for."""
    return any(row.target == target and check(row) for row in await _outbox(db_url))


def _done(row: OutboxItem) -> bool:
    return row.status == "done"


async def test_421_then_451_then_sent_once(
    dovecot: DovecotServer,
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: SmtpSink,
    record_property: Record,
) -> None:
    """A relay closing with 421, then deferring with 451, gets the forward on the third try, once."""
    smtp_sink.fail_next(1, "421 4.3.2 Service shutting down", on="MAIL")
    smtp_sink.fail_next(1, "451 4.3.0 Try again later", on="DATA")
    config, _ = _config(dovecot, tmp_path, sqlite_url, smtp_sink.port, "contract")
    async with running(config) as daemon:
        seconds = await timed(
            lambda: wait_until(lambda: _row(sqlite_url, _to("contract"), _done), what="the forward")
        )
        exposed = daemon.metrics.render().decode()
    record_property("delivered_after_seconds", seconds)
    assert [mail.rcpt_tos for mail in smtp_sink.messages] == [(_to("contract"),)]
    [row] = await _outbox(sqlite_url)
    assert row.attempts == 3
    assert 'kind="forward",outcome="retry"} 2.0' in exposed


async def test_550_is_dead_with_the_reason_and_never_retried(
    dovecot: DovecotServer, tmp_path: Path, sqlite_url: str, smtp_sink: SmtpSink
) -> None:
    """550 to the recipient parks the forward dead with the reply; later passes leave it alone."""
    smtp_sink.refuse(_to("refused"), "550 5.1.1 No such user here")
    config, folder = _config(dovecot, tmp_path, sqlite_url, smtp_sink.port, "refused", "later")
    async with running(config):
        await wait_until(
            lambda: _row(sqlite_url, _to("refused"), lambda row: row.status == "dead"),
            what="the refused forward to be dead",
        )
        await asyncio.to_thread(dovecot.append, "sales", folder, _letter("later"))
        await wait_until(lambda: _row(sqlite_url, _to("later"), _done), what="a later forward")
    dead, later = await _outbox(sqlite_url)
    assert dead.status == "dead" and dead.attempts == 1, "a dead forward was tried again"
    assert "550 5.1.1 No such user here" in (dead.last_error or "")
    assert [mail.rcpt_tos for mail in smtp_sink.messages] == [(later.target,)]


async def test_relay_closes_after_data_before_its_reply(
    dovecot: DovecotServer,
    tmp_path: Path,
    sqlite_url: str,
    smtp_sink: SmtpSink,
    record_property: Record,
) -> None:
    """The relay takes the letter but its 250 is lost: maild retries, the relay has it twice."""
    async with FaultProxy(smtp_sink.port) as proxy:
        proxy.on_request(b"\r\n.\r\n", cut=True)
        config, _ = _config(dovecot, tmp_path, sqlite_url, proxy.port, "contract")
        async with running(config):
            await wait_until(lambda: _sent_once(smtp_sink), what="the first copy")
            seconds = await timed(
                lambda: wait_until(
                    lambda: _row(sqlite_url, _to("contract"), _done), what="the forward"
                )
            )
    record_property("second_copy_after_seconds", seconds)
    [row] = await _outbox(sqlite_url)
    assert row.attempts == 2
    copies = [_parse(mail.content) for mail in smtp_sink.messages]
    assert len(copies) == 2, "one lost reply costs exactly one duplicate"
    assert {copy["Subject"] for copy in copies} == {"Fwd: contract"}
    record_property("copies", len(copies))


async def _sent_once(sink: SmtpSink) -> bool:
    return len(sink.messages) >= 1


def _parse(raw: bytes) -> Any:
    return email.message_from_bytes(raw, policy=email.policy.default)


async def test_tls_faults_are_retried_never_sent_in_clear(
    dovecot: DovecotServer, tmp_path: Path, sqlite_url: str, record_property: Record
) -> None:
    """STARTTLS stripped by a man in the middle, then a failed handshake: retried, never in clear."""
    with SmtpSink(tls="starttls") as sink:
        async with FaultProxy(sink.port, record=True) as proxy:
            proxy.rewrite(b"STARTTLS", b"XSTARTX")  # the relay no longer seems to offer it
            config, _ = _config(dovecot, tmp_path, sqlite_url, proxy.port, "contract")
            smtp = SmtpConfig(
                host="127.0.0.1", port=proxy.port, security="starttls", ca_file=sink.ca_file
            )
            async with running(config.model_copy(update={"smtp": smtp})):
                await wait_until(
                    lambda: _row(sqlite_url, _to("contract"), _refused_in_clear),
                    what="the stripped STARTTLS to be refused",
                )
                proxy.heal()
                proxy.on_request(b"\x16\x03\x01", cut=True)  # the ClientHello; no ServerHello
                seconds = await timed(
                    lambda: wait_until(
                        lambda: _row(sqlite_url, _to("contract"), _done),
                        what="the forward over TLS",
                    )
                )
            assert proxy.sent_up is not None
            in_clear = bytes(proxy.sent_up)
        assert len(sink.messages) == 1
    assert b"MAIL FROM" not in in_clear.upper() and b"AUTH" not in in_clear.upper()
    [row] = await _outbox(sqlite_url)
    assert row.attempts >= 3
    record_property("delivered_after_heal_seconds", seconds)


def _refused_in_clear(row: OutboxItem) -> bool:
    return row.status == "pending" and "refusing to send in plaintext" in (row.last_error or "")
