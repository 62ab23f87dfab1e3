"""tls_verify = false against real servers with a throwaway CA: accepted, and warned at start.

The default (certificate refused without the CA) and ca_file (accepted) are shown in
test_imap.py and test_smtp.py; here the explicit escape for a self-signed server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from maild.ingest.imap import connect
from maild.outbox.smtp import SmtpSender
from maild.runtime import endpoint_for, warn_insecure
from maild.settings import Config
from maild.testing import DovecotServer, SmtpSink

RAW = b"From: a@corp.example\r\nTo: b@corp.example\r\nSubject: t\r\n\r\nbody\r\n"


def unverified_config(dovecot: DovecotServer, sink: SmtpSink, secret: Path) -> Config:
    """Point one account and the relay at servers whose CA maild is not given."""
    return Config.model_validate(
        {
            "accounts": [
                {
                    "name": "sales",
                    "address": "sales@corp.example",
                    "imap": {
                        "host": dovecot.host,
                        "port": dovecot.tls_port,
                        "username": "sales",
                        "password_file": str(secret),
                        "tls_verify": False,
                    },
                }
            ],
            "smtp": {
                "host": "127.0.0.1",
                "port": sink.port,
                "security": "tls",
                "tls_verify": False,
            },
        }
    )


async def test_unverified_tls_connects_and_is_warned(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    """Both connections succeed without the CA, and start logs one warning per target."""
    secret = tmp_path / "sales.password"
    secret.write_text(dovecot.users["sales"], encoding="utf-8")
    with SmtpSink(tls="tls") as sink:
        config = unverified_config(dovecot, sink, secret)
        with structlog.testing.capture_logs() as logs:
            assert warn_insecure(config) == 2
        assert {(e["event"], e["log_level"], e["config_key"]) for e in logs} == {
            ("tls_unverified", "warning", "accounts[0].imap.tls_verify"),
            ("tls_unverified", "warning", "smtp.tls_verify"),
        }
        session = await asyncio.wait_for(connect(endpoint_for(config.accounts[0], 10)), 20)
        try:
            assert (await session.select("INBOX")).uidvalidity > 0
        finally:
            await session.close()
        assert config.smtp is not None
        sender = SmtpSender(config.smtp, timeout=5, local_hostname="maild.test")
        try:
            await sender.send(RAW, sender="a@corp.example", recipients=["b@corp.example"])
        finally:
            await sender.close()
        [mail] = await sink.wait_for(1)
    assert mail.content == RAW
