"""SmtpSender against a real aiosmtpd relay: TLS modes, reply codes, drops, and secret hygiene."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.errors import SmtpPermanentError, SmtpTemporaryError
from maild.outbox.compose import Identity, forward_attach
from maild.outbox.smtp import SmtpSender
from maild.settings import SmtpConfig
from maild.testing import SmtpSink

RAW = (
    "From: Анна <anna@client.example>\r\n"
    "To: sales@corp.example\r\n"
    "Subject: =?utf-8?q?=D0=A1=D1=87=D1=91=D1=82?=\r\n"
    "\r\n"
    "Здравствуйте!\r\n"
    ".leading dot\r\n"
).encode()
SENDER = "sales@corp.example"
TO = "boss@corp.example"
PASSWORD = "pw-Zq81-never-shown"


def config(sink: SmtpSink, **overrides: Any) -> SmtpConfig:
    """Give the relay settings pointing at a sink: plaintext unless the sink speaks TLS."""
    security = {"none": "none", "starttls": "starttls", "tls": "tls"}[sink.tls]
    values: dict[str, Any] = {"host": "127.0.0.1", "port": sink.port, "security": security}
    if sink.tls != "none":
        values["ca_file"] = sink.ca_file
    values.update(overrides)
    return SmtpConfig(**values)


def make_sender(sink: SmtpSink, timeout: float = 5.0, **overrides: Any) -> SmtpSender:
    """Give a sender for a sink with a short timeout and a fixed EHLO name (no DNS lookups)."""
    return SmtpSender(config(sink, **overrides), timeout=timeout, local_hostname="maild.test")


@pytest.fixture(autouse=True)
def _collect_connections() -> Iterator[None]:
    """Collect each test's dropped connections before the next test, so none is blamed on another."""
    yield
    gc.collect()


@pytest.fixture
async def sender(smtp_sink: SmtpSink) -> AsyncIterator[SmtpSender]:
    """Give a sender for the plain loopback sink, closed after the test."""
    sender = make_sender(smtp_sink)
    yield sender
    await sender.close()


@pytest.fixture
def starttls_sink() -> Iterator[SmtpSink]:
    """Give a sink that offers and requires STARTTLS."""
    with SmtpSink(tls="starttls") as sink:
        yield sink


@pytest.fixture
def tls_sink() -> Iterator[SmtpSink]:
    """Give a sink that speaks implicit TLS."""
    with SmtpSink(tls="tls") as sink:
        yield sink


# --------------------------------------------------------------------------------------------
# delivery
# --------------------------------------------------------------------------------------------


async def test_plain_on_loopback(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """A letter goes through unchanged (dots unstuffed), with its envelope and 8BITMIME."""
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    [mail] = await smtp_sink.wait_for(1)
    assert mail.content == RAW
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, (TO,))
    assert "BODY=8BITMIME" in mail.mail_options


async def test_a_composed_forward_arrives_intact(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """A forward from the composer goes out with its envelope, byte for byte."""
    out = forward_attach(RAW, account=Identity(SENDER, "Sales"), to=TO)
    await sender.send(out.raw, sender=out.sender, recipients=out.recipients)
    [mail] = await smtp_sink.wait_for(1)
    assert mail.content == out.raw
    assert (mail.mail_from, mail.rcpt_tos) == (SENDER, (TO,))


async def test_connection_is_reused(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """Letters in a row share one connection."""
    for _ in range(3):
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    mails = await smtp_sink.wait_for(3)
    assert len({mail.peer for mail in mails}) == 1


async def test_reconnects_after_the_relay_restarts(smtp_sink: SmtpSink) -> None:
    """A connection the relay dropped is replaced at the next letter, which is sent."""
    sender = make_sender(smtp_sink)
    try:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
        first = (await smtp_sink.wait_for(1))[0]
        smtp_sink.stop()
        with SmtpSink(port=smtp_sink.port) as again:
            await sender.send(RAW, sender=SENDER, recipients=[TO])
            [second] = await again.wait_for(1)
        assert second.peer != first.peer
    finally:
        await sender.close()


async def test_close_then_send_again(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """close() may be called twice, and a later send opens a new connection."""
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    await sender.close()
    await sender.close()
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert len(await smtp_sink.wait_for(2)) == 2


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


async def test_starttls_with_a_private_ca(starttls_sink: SmtpSink) -> None:
    """STARTTLS is used and verified against ca_file; the sink refuses mail before it."""
    sender = make_sender(starttls_sink)
    try:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    finally:
        await sender.close()
    [mail] = await starttls_sink.wait_for(1)
    assert mail.content == RAW


async def test_starttls_not_offered_is_refused(smtp_sink: SmtpSink) -> None:
    """A relay without STARTTLS gets nothing: no plaintext fallback."""
    sender = make_sender(smtp_sink, security="starttls")
    with pytest.raises(SmtpTemporaryError, match="does not offer STARTTLS") as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code is None
    await asyncio.sleep(0.05)
    assert smtp_sink.messages == []


async def test_implicit_tls_with_a_private_ca(tls_sink: SmtpSink) -> None:
    """Implicit TLS verifies the relay against ca_file and sends."""
    sender = make_sender(tls_sink)
    try:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    finally:
        await sender.close()
    [mail] = await tls_sink.wait_for(1)
    assert mail.content == RAW


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_untrusted_certificate_is_an_error(mode: str) -> None:
    """Without the private CA the certificate is not trusted, and nothing is sent."""
    with SmtpSink(tls=mode) as sink:  # type: ignore[arg-type]
        sender = make_sender(sink, ca_file=None)
        with pytest.raises(SmtpTemporaryError, match="certificate not trusted"):
            await sender.send(RAW, sender=SENDER, recipients=[TO])
        await sender.close()
        assert sink.messages == []


async def test_wrong_host_name_is_an_error(tls_sink: SmtpSink) -> None:
    """The certificate must name the host connected to: it covers 127.0.0.1, not 127.0.0.2."""
    sender = make_sender(tls_sink, host="127.0.0.2")
    with pytest.raises(SmtpTemporaryError):
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert tls_sink.messages == []


async def test_unreadable_ca_file_is_an_error(tls_sink: SmtpSink, tmp_path: Path) -> None:
    """A ca_file that cannot be loaded fails the connection; verification is never skipped."""
    sender = make_sender(tls_sink, ca_file=tmp_path / "missing.pem")
    with pytest.raises(SmtpTemporaryError, match="cannot load CA file"):
        await sender.send(RAW, sender=SENDER, recipients=[TO])


# --------------------------------------------------------------------------------------------
# reply codes
# --------------------------------------------------------------------------------------------


async def test_451_is_temporary(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """A 4xx reply to DATA is a temporary error carrying the code; the next letter goes."""
    smtp_sink.fail_next(1, "451 4.3.0 try later")
    with pytest.raises(SmtpTemporaryError) as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code == 451
    assert "try later" in info.value.reply
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert len(await smtp_sink.wait_for(1)) == 1


async def test_550_to_the_only_recipient_is_permanent(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """A 5xx refusal of the only recipient is permanent, with the code and the reply."""
    smtp_sink.refuse(TO, "550 5.1.1 No such user here")
    with pytest.raises(SmtpPermanentError) as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code == 550
    assert "No such user here" in str(info.value)
    assert smtp_sink.messages == []


async def test_554_to_data_is_permanent(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """A 5xx reply to the letter's content is permanent."""
    smtp_sink.fail_next(1, "554 5.6.0 Content rejected")
    with pytest.raises(SmtpPermanentError) as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code == 554


async def test_sender_refused_is_classified(sender: SmtpSender, smtp_sink: SmtpSink) -> None:
    """MAIL FROM refused: 4xx temporary, 5xx permanent."""
    smtp_sink.fail_next(1, "452 4.3.1 Insufficient storage", on="MAIL")
    with pytest.raises(SmtpTemporaryError) as temporary:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert temporary.value.code == 452
    smtp_sink.fail_next(1, "553 5.7.1 Sender not allowed", on="MAIL")
    with pytest.raises(SmtpPermanentError) as permanent:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert permanent.value.code == 553


async def test_some_recipients_refused_is_a_success(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """The letter goes to the recipients the relay accepted."""
    smtp_sink.refuse("gone@corp.example")
    await sender.send(RAW, sender=SENDER, recipients=["gone@corp.example", TO])
    [mail] = await smtp_sink.wait_for(1)
    assert mail.rcpt_tos == (TO,)


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        (["550 5.1.1 No such user", "551 5.1.6 Moved"], SmtpPermanentError),
        (["550 5.1.1 No such user", "450 4.2.1 Mailbox busy"], SmtpTemporaryError),
    ],
)
async def test_every_recipient_refused(
    sender: SmtpSender, smtp_sink: SmtpSink, replies: list[str], expected: type[Exception]
) -> None:
    """All refused: permanent only when every refusal was permanent."""
    recipients = ["one@corp.example", "two@corp.example"]
    for address, reply in zip(recipients, replies, strict=True):
        smtp_sink.refuse(address, reply)
    with pytest.raises(expected, match="every recipient refused"):
        await sender.send(RAW, sender=SENDER, recipients=recipients)


async def test_421_closes_and_the_next_letter_reconnects(
    sender: SmtpSender, smtp_sink: SmtpSink
) -> None:
    """A 421 (service closing) is temporary; the next letter gets a new connection."""
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    smtp_sink.fail_next(1, "421 4.3.2 Shutting down", on="MAIL")
    with pytest.raises(SmtpTemporaryError) as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code == 421
    await sender.send(RAW, sender=SENDER, recipients=[TO])
    first, second = await smtp_sink.wait_for(2)
    assert first.peer != second.peer


# --------------------------------------------------------------------------------------------
# the relay is not there
# --------------------------------------------------------------------------------------------


async def test_server_gone_is_temporary() -> None:
    """Nothing listening: a temporary error, no code."""
    sink = SmtpSink()
    sink.start()
    sink.stop()
    sender = make_sender(sink)
    with pytest.raises(SmtpTemporaryError) as info:
        await sender.send(RAW, sender=SENDER, recipients=[TO])
    assert info.value.code is None


async def _server(handle: Any) -> tuple[asyncio.AbstractServer, int]:
    """Start a bare TCP server on loopback that misbehaves as ``handle`` says."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def test_silent_server_times_out() -> None:
    """A server that accepts but never greets ends in a temporary timeout error."""
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server, port = await _server(silent)
    try:
        sender = SmtpSender(
            SmtpConfig(host="127.0.0.1", port=port, security="none"),
            timeout=0.3,
            local_hostname="maild.test",
        )
        with pytest.raises(SmtpTemporaryError, match=r"timed out after 0\.3 s"):
            await sender.send(RAW, sender=SENDER, recipients=[TO])
    finally:
        done.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("security", ["tls", "none"])
async def test_dropped_at_once_is_temporary(security: str) -> None:
    """A server that hangs up at once (TLS handshake or greeting) gives a temporary error."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, port = await _server(hang_up)
    try:
        sender = SmtpSender(
            SmtpConfig(host="127.0.0.1", port=port, security=security),  # type: ignore[arg-type]
            timeout=2,
            local_hostname="maild.test",
        )
        with pytest.raises(SmtpTemporaryError):
            await sender.send(RAW, sender=SENDER, recipients=[TO])
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------------------------
# login
# --------------------------------------------------------------------------------------------


def _leaks(text: str) -> list[str]:
    """Name the forms of the password found in a text: plain or base64 (PLAIN and LOGIN)."""
    forms = {
        "plain": PASSWORD,
        "login": base64.b64encode(PASSWORD.encode()).decode(),
        "auth-plain": base64.b64encode(f"\0maild\0{PASSWORD}".encode()).decode(),
    }
    return [name for name, form in forms.items() if form in text]


async def test_login_over_starttls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The configured user logs in after STARTTLS, and the letter is sent as that user."""
    monkeypatch.setenv("T_SMTP_PW", PASSWORD)
    with SmtpSink(tls="starttls", users={"maild": PASSWORD}) as sink:
        sender = make_sender(sink, username="maild", password_env="T_SMTP_PW")
        try:
            await sender.send(RAW, sender=SENDER, recipients=[TO])
            await sender.send(RAW, sender=SENDER, recipients=[TO])
        finally:
            await sender.close()
        mails = await sink.wait_for(2)
    assert [mail.login for mail in mails] == ["maild", "maild"]
    assert sink.auth_attempts == 1  # one login for the reused connection


async def test_login_with_a_password_file_over_implicit_tls(tmp_path: Path) -> None:
    """password_file works the same, over implicit TLS."""
    secret = tmp_path / "smtp.password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    with SmtpSink(tls="tls", users={"maild": PASSWORD}) as sink:
        sender = make_sender(sink, username="maild", password_file=secret)
        try:
            await sender.send(RAW, sender=SENDER, recipients=[TO])
        finally:
            await sender.close()
        [mail] = await sink.wait_for(1)
    assert mail.login == "maild"


async def test_refused_login_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused login is a temporary error with the code; no log or message holds the secret."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_SMTP_PW", PASSWORD)
    with SmtpSink(tls="starttls", users={"maild": "another password"}) as sink:
        sender = make_sender(sink, username="maild", password_env="T_SMTP_PW")
        with pytest.raises(SmtpTemporaryError) as info:
            await sender.send(RAW, sender=SENDER, recipients=[TO])
        await sender.close()
        assert sink.messages == []
    error = info.value
    assert error.code == 535
    assert "login as 'maild' refused" in str(error)
    texts = [str(error), repr(error), error.reply, repr(sender), str(error.__cause__ or "")]
    own_records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    texts += [record.getMessage() for record in own_records]
    texts += list(capsys.readouterr())
    assert [leak for text in texts for leak in _leaks(text)] == []


async def test_successful_login_logs_no_password(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing maild or aiosmtplib logs while logging in holds the secret."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_SMTP_PW", PASSWORD)
    with SmtpSink(tls="starttls", users={"maild": PASSWORD}) as sink:
        sender = make_sender(sink, username="maild", password_env="T_SMTP_PW")
        await sender.send(RAW, sender=SENDER, recipients=["gone@corp.example", TO])
        sink.refuse("gone@corp.example")
        await sender.send(RAW, sender=SENDER, recipients=["gone@corp.example", TO])
        await sender.close()
    own_records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    texts = [record.getMessage() for record in own_records] + list(capsys.readouterr())
    assert [leak for text in texts for leak in _leaks(text)] == []


async def test_missing_password_is_temporary(tls_sink: SmtpSink) -> None:
    """A password source that is not set fails the send, naming the source, not a value."""
    sender = make_sender(tls_sink, username="maild", password_env="T_SMTP_PW_UNSET")
    with pytest.raises(SmtpTemporaryError, match="T_SMTP_PW_UNSET is not set"):
        await sender.send(RAW, sender=SENDER, recipients=[TO])


async def test_no_recipient_is_refused(sender: SmtpSender) -> None:
    """A letter without recipients is a permanent error before anything is sent."""
    with pytest.raises(SmtpPermanentError):
        await sender.send(RAW, sender=SENDER, recipients=[])


class _ScriptedRelay:
    """A minimal SMTP relay that logs each connection's commands and hangs up on the first
    connection's second MAIL without a reply, as a relay that closed an idle connection."""

    def __init__(self) -> None:
        self.sessions: list[list[str]] = []
        self.letters = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection until QUIT, or until the scripted hang-up."""
        commands: list[str] = []
        self.sessions.append(commands)
        first = len(self.sessions) == 1
        writer.write(b"220 relay.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line.split()[0].upper().decode() if line.strip() else ""
                commands.append(verb)
                if verb == "MAIL" and first and commands.count("MAIL") == 2:
                    break
                if verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    while await reader.readline() != b".\r\n":
                        pass
                    self.letters += 1
                    writer.write(b"250 queued\r\n")
                elif verb == "EHLO":
                    writer.write(b"250-relay.test\r\n250 8BITMIME\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.close()


async def test_a_connection_closed_under_a_fresh_one_is_replaced_at_mail() -> None:
    """Right after a letter its connection is reused without a NOOP; found closed at MAIL, it is
    replaced and the next letter goes once over the new one."""
    relay = _ScriptedRelay()
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = SmtpSender(
        SmtpConfig(host="127.0.0.1", port=port, security="none"),
        timeout=5.0,
        local_hostname="maild.test",
    )
    try:
        for _ in range(3):
            await sender.send(RAW, sender=SENDER, recipients=[TO])
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert relay.letters == 3
    assert relay.sessions[0] == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL"]
    assert relay.sessions[1] == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"]


def big_letter() -> bytes:
    """A 3 MB letter, far over one write to the socket, with lines that start with a dot."""
    lines = [b"From: sales@corp.example", b"To: boss@corp.example", b"Subject: big", b""]
    lines += [b".%07d a line of the letter that goes out in pieces" % n for n in range(60_000)]
    return b"\r\n".join(lines) + b"\r\n"


@pytest.mark.parametrize("security", ["none", "tls"])
async def test_a_big_letter_goes_in_pieces_and_arrives_intact(
    security: str, smtp_sink: SmtpSink, tls_sink: SmtpSink
) -> None:
    """A letter many times one write goes out a piece at a time and arrives byte for byte."""
    sink = tls_sink if security == "tls" else smtp_sink
    sender = make_sender(sink)
    raw = big_letter()
    try:
        await sender.send(raw, sender=SENDER, recipients=[TO])
        await sender.send(RAW, sender=SENDER, recipients=[TO])  # the connection is still in step
    finally:
        await sender.close()
    first, second = await sink.wait_for(2)
    assert (first.content, second.content) == (raw, RAW)


async def test_a_relay_that_answers_before_the_end_of_a_letter_is_not_waited_for() -> None:
    """A relay that refuses a big letter halfway and stops reading gives its reply at once:
    sending stops there instead of waiting for a socket that will not drain."""
    hold = asyncio.Event()

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line.split()[0].upper() if line.strip() else b""
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readexactly(100_000)
                await asyncio.sleep(0.5)  # the client's socket fills up meanwhile
                writer.write(b"552 5.3.4 message too big for this relay\r\n")
                await writer.drain()
                await hold.wait()  # reads nothing more, hangs up only when the test ends
                break
            writer.write(
                b"250-relay.test\r\n250 8BITMIME\r\n" if verb == b"EHLO" else b"250 ok\r\n"
            )
            await writer.drain()
        writer.close()

    server, port = await _server(early)
    sender = SmtpSender(
        SmtpConfig(host="127.0.0.1", port=port, security="none"),
        timeout=30.0,
        local_hostname="maild.test",
    )
    try:
        with pytest.raises(SmtpPermanentError, match="552") as info:
            await asyncio.wait_for(
                sender.send(big_letter() * 10, sender=SENDER, recipients=[TO]), 10
            )
        assert info.value.code == 552
    finally:
        hold.set()
        await sender.close()
        server.close()
        await server.wait_closed()
