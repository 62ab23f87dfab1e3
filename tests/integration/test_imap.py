"""maild.ingest.imap against a real Dovecot, plus a scripted server for faults Dovecot won't make."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import pytest

from maild.errors import ImapAuthError, ImapCommandError, ImapConnectionError
from maild.ingest.imap import MAX_HEADER_FETCH, ImapEndpoint, ImapSession, connect
from maild.testing import DovecotServer

USER = "sales"
# a generous bound: a hang fails the test instead of blocking the suite
NO_HANG = 20.0


def endpoint(
    server: DovecotServer,
    *,
    tls: bool = False,
    user: str = USER,
    password: str | None = None,
    ca: bool = True,
    timeout: float = 10.0,
) -> ImapEndpoint:
    """Describe a login to the given Dovecot, plaintext or TLS."""
    return ImapEndpoint(
        host=server.host,
        port=server.tls_port if tls else server.port,
        security="tls" if tls else "none",
        username=user,
        password=server.users[user] if password is None else password,
        ca_file=str(server.ca_file) if tls and ca else None,
        timeout=timeout,
    )


@asynccontextmanager
async def session_for(ep: ImapEndpoint) -> AsyncIterator[ImapSession]:
    """Connect and always close, so no test leaks a socket."""
    session = await asyncio.wait_for(connect(ep), NO_HANG)
    try:
        yield session
    finally:
        await session.close()


def letter(n: int, body_size: int = 0) -> bytes:
    """Build a small, distinct raw letter with CRLF line ends, as Dovecot serves them."""
    body = b"Body of letter %d.\r\n" % n + (b"z" * 76 + b"\r\n") * (body_size // 78)
    return (
        b"From: Client %d <client%d@example.com>\r\n"
        b"To: sales@corp.example\r\n"
        b"Subject: Request %d\r\n"
        b"Message-ID: <m%d@example.com>\r\n"
        b"\r\n" % (n, n, n, n)
    ) + body


@pytest.fixture
def folder(dovecot: DovecotServer) -> str:
    """Create a folder of the test's own in the session Dovecot."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    dovecot.create_folder(USER, name)
    return name


# ---------------------------------------------------------------------------------------------
# connect and login
# ---------------------------------------------------------------------------------------------


async def test_plaintext_login_on_loopback(dovecot: DovecotServer) -> None:
    """A plaintext login works on loopback and reports the server's capabilities, IDLE included."""
    async with session_for(endpoint(dovecot)) as session:
        assert {"IMAP4REV1", "IDLE", "UIDPLUS"} <= session.capabilities
        assert session.has_idle
        assert not session.broken
    assert session.broken  # closed sessions refuse further use


async def test_tls_login_with_the_throwaway_ca(dovecot: DovecotServer) -> None:
    """Implicit TLS verifies the server against the extra CA file and logs in."""
    async with session_for(endpoint(dovecot, tls=True)) as session:
        status = await session.select("INBOX")
        assert status.uidvalidity > 0


async def test_tls_with_system_cas_only_is_refused(dovecot: DovecotServer) -> None:
    """A certificate the system CAs do not vouch for is refused, with no plaintext fallback."""
    with pytest.raises(ImapConnectionError, match="certificate verification failed"):
        await asyncio.wait_for(connect(endpoint(dovecot, tls=True, ca=False)), NO_HANG)


async def test_plaintext_to_a_remote_host_is_refused() -> None:
    """Security "none" is refused before any network traffic unless the host is loopback."""
    ep = ImapEndpoint("imap.example.com", 143, "none", "u", "p")
    with pytest.raises(ImapConnectionError, match="only allowed for loopback"):
        await connect(ep)


async def test_password_is_not_in_the_endpoint_repr() -> None:
    """The endpoint's repr, which may end up in logs, never shows the password."""
    ep = ImapEndpoint("imap.example.com", 993, "tls", "u", "hunter2-secret")
    assert "hunter2-secret" not in repr(ep)


async def test_wrong_password_is_an_auth_error(dovecot: DovecotServer) -> None:
    """A refused LOGIN raises ImapAuthError (an admin must act), not a connection error."""
    with pytest.raises(ImapAuthError, match="login refused"):
        await asyncio.wait_for(connect(endpoint(dovecot, password="wrong")), NO_HANG)


async def test_refused_connection_is_a_connection_error() -> None:
    """Nothing listening on the port gives ImapConnectionError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ep = ImapEndpoint("127.0.0.1", port, "none", "u", "p", timeout=5)
    with pytest.raises(ImapConnectionError, match="connect"):
        await asyncio.wait_for(connect(ep), NO_HANG)


# ---------------------------------------------------------------------------------------------
# select, search, fetch
# ---------------------------------------------------------------------------------------------


async def test_select_reports_uidvalidity_uidnext_and_exists(
    dovecot: DovecotServer, folder: str
) -> None:
    """SELECT gives the folder's UIDVALIDITY, UIDNEXT and message count."""
    dovecot.append_many(USER, folder, [letter(n) for n in range(3)])
    async with session_for(endpoint(dovecot)) as session:
        status = await session.select(folder)
    assert status.uidvalidity == dovecot.uidvalidity(USER, folder)
    assert (status.uidnext, status.exists) == (4, 3)


async def test_missing_folder_is_a_command_error_and_the_session_survives(
    dovecot: DovecotServer,
) -> None:
    """SELECT of a missing folder raises ImapCommandError, leaves nothing selected, stays usable."""
    async with session_for(endpoint(dovecot)) as session:
        await session.select("INBOX")
        with pytest.raises(ImapCommandError, match="NO"):
            await session.select("no-such-folder")
        assert session.selected is None
        with pytest.raises(ImapCommandError, match="no folder selected"):
            await session.uids_after(0)
        assert (await session.select("INBOX")).uidvalidity > 0


async def test_line_breaks_in_a_folder_name_cannot_inject(dovecot: DovecotServer) -> None:
    """A folder name with CR/LF cannot inject a command: it is encoded, so the server says NO."""
    async with session_for(endpoint(dovecot)) as session:
        with pytest.raises(ImapCommandError, match="answered NO"):
            await session.select("INBOX\r\nA1 DELETE INBOX")
        assert not session.broken
        assert (await session.select("INBOX")).uidvalidity > 0


async def test_recreated_folder_has_a_new_uidvalidity(dovecot: DovecotServer, folder: str) -> None:
    """Deleting and recreating a folder changes its UIDVALIDITY, which SELECT reports."""
    async with session_for(endpoint(dovecot)) as session:
        before = (await session.select(folder)).uidvalidity
        await session.select("INBOX")
        after = dovecot.recreate_folder(USER, folder)
        assert (await session.select(folder)).uidvalidity == after != before


async def test_uids_after_filters_the_cursor(dovecot: DovecotServer, folder: str) -> None:
    """UIDs above the cursor come back sorted, and "n:*" past the end does not echo the last UID."""
    uids = dovecot.append_many(USER, folder, [letter(n) for n in range(5)])
    assert uids == [1, 2, 3, 4, 5]
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        assert await session.uids_after(0) == [1, 2, 3, 4, 5]
        assert await session.uids_after(3) == [4, 5]
        assert await session.uids_after(5) == []
        assert await session.uids_after(100) == []


async def test_sizes_after_gives_the_same_as_uids_after_then_sizes(
    dovecot: DovecotServer, folder: str
) -> None:
    """One FETCH ``n:*`` stands for SEARCH then FETCH: same UIDs, same sizes, no echo of the last."""
    uids = dovecot.append_many(USER, folder, [letter(n, body_size=n * 100) for n in range(5)])
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        for cursor in (0, 3, 5, 100):
            expected = await session.sizes(await session.uids_after(cursor))
            assert await session.sizes_after(cursor) == expected
            assert sorted(expected) == [uid for uid in uids if uid > cursor]


@pytest.mark.slow
async def test_thousands_of_letters_are_fetched_in_chunks(
    dovecot: DovecotServer, folder: str
) -> None:
    """3,200 letters (far past aioimaplib's ~1,000-line crash) come back whole, sized and sorted."""
    raws = [letter(n, body_size=n % 700) for n in range(3200)]
    uids = dovecot.append_many(USER, folder, raws)
    async with session_for(endpoint(dovecot, timeout=30)) as session:
        await session.select(folder)
        found = await session.uids_after(0)
        assert found == uids
        assert sorted(await session.sizes_after(0)) == uids  # one response of 3,200 lines
        sizes = await session.sizes(found)
        messages = await session.fetch(list(reversed(found)))
    assert sizes == {uid: len(raw) for uid, raw in zip(uids, raws, strict=True)}
    assert [m.uid for m in messages] == uids
    assert [m.raw for m in messages] == raws
    assert all(m.size == len(m.raw) and not m.headers_only for m in messages)


async def test_fetch_skips_unknown_and_expunged_uids(dovecot: DovecotServer, folder: str) -> None:
    """Letters expunged meanwhile, or never there, are simply absent from the result."""
    dovecot.append_many(USER, folder, [letter(n) for n in range(3)])
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        with dovecot.imap(USER) as other:
            other.select(f'"{folder}"')
            other.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
            other.expunge()
        messages = await session.fetch([1, 2, 3, 999])
        assert [m.uid for m in messages] == [1, 3]
        assert await session.sizes([2, 999]) == {}


async def test_headers_only(dovecot: DovecotServer, folder: str) -> None:
    """headers_only brings the header block but reports the full size of the letter."""
    raw = letter(1, body_size=5000)
    uid = dovecot.append(USER, folder, raw)
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        (message,) = await session.fetch([uid], headers_only=True)
    header_end = raw.index(b"\r\n\r\n") + 4
    assert message.raw == raw[:header_end]
    assert message.size == len(raw)
    assert message.headers_only


async def test_headers_only_is_capped(dovecot: DovecotServer, folder: str) -> None:
    """A letter with no blank line is all header to the server: only its first MiB comes down."""
    raw = b"X-Long: " + b"x" * (3 * MAX_HEADER_FETCH)
    uid = dovecot.append(USER, folder, raw)
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        (message,) = await session.fetch([uid], headers_only=True)
    assert message.raw == raw[:MAX_HEADER_FETCH]
    assert message.size == len(raw)


async def test_fetch_leaves_flags_alone(dovecot: DovecotServer, folder: str) -> None:
    """Fetching bodies never sets \\Seen and reports the flags the letters already had."""
    unseen = dovecot.append(USER, folder, letter(1))
    flagged = dovecot.append(USER, folder, letter(2), flags=["\\Flagged"])
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        messages = await session.fetch([unseen, flagged])
        await session.fetch([unseen, flagged], headers_only=True)
    assert "\\Seen" not in messages[0].flags
    assert "\\Flagged" in messages[1].flags
    assert "\\Seen" not in dovecot.flags(USER, folder, unseen)
    assert "\\Seen" not in dovecot.flags(USER, folder, flagged)


async def test_internaldate_is_the_appended_one(dovecot: DovecotServer, folder: str) -> None:
    """INTERNALDATE comes back as an aware datetime equal to the one given at APPEND."""
    when = datetime(2024, 3, 9, 17, 45, 1, tzinfo=timezone(timedelta(hours=3)))
    uid = dovecot.append(USER, folder, letter(1), internaldate=when)
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        (message,) = await session.fetch([uid])
    assert message.internaldate == when


async def test_non_ascii_folder_names(dovecot: DovecotServer) -> None:
    """Non-ASCII names reach Dovecot as valid modified UTF-7: it lists them back in UTF-8."""
    name = f"Входящие/Заявки & Co 📧 {uuid.uuid4().hex[:6]}"
    dovecot.create_folder(USER, name)
    uid = dovecot.append(USER, name, letter(7))
    assert name in dovecot.doveadm("mailbox", "list", "-u", USER).splitlines()
    async with session_for(endpoint(dovecot)) as session:
        status = await session.select(name)
        assert status.exists == 1
        (message,) = await session.fetch([uid])
    assert message.raw == letter(7)


# ---------------------------------------------------------------------------------------------
# IDLE
# ---------------------------------------------------------------------------------------------


async def test_idle_wakes_on_an_append(dovecot: DovecotServer, folder: str) -> None:
    """IDLE returns True when another connection appends, and the new UID is then found."""
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        assert await session.uids_after(0) == []
        waiting = asyncio.ensure_future(session.idle_wait(NO_HANG))
        await asyncio.sleep(0.2)
        uid = await asyncio.to_thread(dovecot.append, USER, folder, letter(1))
        assert await asyncio.wait_for(waiting, NO_HANG + 5) is True
        assert await session.uids_after(0) == [uid]


async def test_idle_times_out_quietly(dovecot: DovecotServer, folder: str) -> None:
    """With nothing happening IDLE returns False after its timeout and the session stays usable."""
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        assert await session.idle_wait(0.3) is False
        assert await session.uids_after(0) == []
        assert not session.broken


async def test_idle_reports_news_seen_during_an_earlier_command(
    dovecot: DovecotServer, folder: str
) -> None:
    """An EXISTS the server sent with another command's answer still makes idle_wait say True."""
    first = dovecot.append(USER, folder, letter(1))
    async with session_for(endpoint(dovecot)) as session:
        await session.select(folder)
        dovecot.append(USER, folder, letter(2))
        await session.sizes([first])  # Dovecot answers with "* 2 EXISTS" before the tagged OK
        assert await asyncio.wait_for(session.idle_wait(5.0), NO_HANG) is True
        assert await session.uids_after(first) == [first + 1]


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------


async def test_server_killed_mid_fetch(private_dovecot: DovecotServer) -> None:
    """Killing the server during a FETCH raises ImapConnectionError promptly, never hangs."""
    uids = private_dovecot.append_many(USER, "INBOX", [letter(n, 50_000) for n in range(600)])
    session = await connect(endpoint(private_dovecot, timeout=30))
    try:
        await session.select("INBOX")
        before = session.bytes_received
        fetching = asyncio.ensure_future(session.fetch(uids))
        while session.bytes_received == before and not fetching.done():
            await asyncio.sleep(0)
        private_dovecot.kill()
        with pytest.raises(ImapConnectionError, match="connection lost"):
            await asyncio.wait_for(fetching, NO_HANG)
        assert session.broken
        with pytest.raises(ImapConnectionError, match="broken"):
            await session.uids_after(0)
    finally:
        await session.close()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[int]:
    """Serve one scripted IMAP conversation on loopback and give its port."""
    writers: list[asyncio.StreamWriter] = []
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            finished.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()  # ends a script still reading
        if writers:
            await asyncio.wait_for(finished.wait(), NO_HANG)
        await server.wait_closed()


async def command(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one client command line and give its tag and the rest."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("client went away")
    tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
    return tag, rest


async def greet_login_select(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Play the server's part up to a selected INBOX."""
    writer.write(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted server ready\r\n")
    tag, _ = await command(reader)  # CAPABILITY, sent by aioimaplib after the greeting
    writer.write(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
    tag, _ = await command(reader)  # LOGIN
    writer.write(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
    tag, _ = await command(reader)  # SELECT
    writer.write(
        b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n"
        + tag
        + b" OK [READ-WRITE] selected\r\n"
    )
    await writer.drain()


def scripted_endpoint(port: int, timeout: float = 1.0) -> ImapEndpoint:
    """Describe a login to a scripted server."""
    return ImapEndpoint("127.0.0.1", port, "none", "user", "pw", timeout=timeout)


async def test_bye_instead_of_idle_continuation_does_not_hang() -> None:
    """A BYE in answer to IDLE on a connection left open (aioimaplib #110) ends in an error."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet_login_select(reader, writer)
        await command(reader)  # IDLE
        writer.write(b"* BYE going away\r\n")
        await writer.drain()
        await reader.read()  # keep the socket open until the client drops it

    async with scripted_server(script) as port:
        session = await connect(scripted_endpoint(port))
        try:
            await session.select("INBOX")
            with pytest.raises(ImapConnectionError):
                await asyncio.wait_for(session.idle_wait(30.0), NO_HANG)
            assert session.broken
        finally:
            await session.close()


async def test_bye_during_idle_is_a_connection_error() -> None:
    """A BYE pushed while idling, then a close, raises ImapConnectionError quoting the BYE."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet_login_select(reader, writer)
        await command(reader)  # IDLE
        writer.write(b"+ idling\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"* BYE Disconnected for inactivity.\r\n")
        await writer.drain()

    async with scripted_server(script) as port:
        session = await connect(scripted_endpoint(port, timeout=30))
        try:
            await session.select("INBOX")
            with pytest.raises(ImapConnectionError, match="inactivity"):
                await asyncio.wait_for(session.idle_wait(30.0), NO_HANG)
        finally:
            await session.close()


async def test_silent_server_times_out() -> None:
    """A server that never answers LOGIN makes connect fail after the endpoint's timeout."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        tag, _ = await command(reader)
        writer.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        await reader.read()  # swallow LOGIN, never answer

    async with scripted_server(script) as port:
        with pytest.raises(ImapConnectionError, match="timed out"):
            await asyncio.wait_for(connect(scripted_endpoint(port, timeout=0.3)), NO_HANG)


async def test_drop_in_the_middle_of_a_literal() -> None:
    """A connection dropped halfway through a letter raises ImapConnectionError."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet_login_select(reader, writer)
        await command(reader)  # UID FETCH
        writer.write(b"* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[] {100}\r\nonly ten b")
        await writer.drain()

    async with scripted_server(script) as port:
        session = await connect(scripted_endpoint(port, timeout=30))
        try:
            await session.select("INBOX")
            with pytest.raises(ImapConnectionError, match="connection lost"):
                await asyncio.wait_for(session.fetch([1]), NO_HANG)
        finally:
            await session.close()


async def test_bye_greeting_is_a_connection_error() -> None:
    """A server that greets with BYE (e.g. too many connections) gives ImapConnectionError."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* BYE Too many connections\r\n")
        await writer.drain()

    async with scripted_server(script) as port:
        with pytest.raises(ImapConnectionError, match="Too many connections"):
            await asyncio.wait_for(connect(scripted_endpoint(port, timeout=5)), NO_HANG)


@pytest.mark.parametrize("reply", [b"X999 OK wrong tag", b"{tag} NO you said {password}"])
async def test_login_errors_never_carry_the_password(reply: bytes) -> None:
    """A protocol error during LOGIN (aioimaplib quotes the pending command) or a server echoing
    the password gives an error without it, and without a library exception chained to it."""
    password = "Pw-imap-9f3c-never-shown"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        tag, _ = await command(reader)
        writer.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        tag, _ = await command(reader)  # LOGIN
        line = reply.replace(b"{tag}", tag).replace(b"{password}", password.encode())
        writer.write(line + b"\r\n")
        await writer.drain()
        tag, _ = await command(reader)  # LOGOUT, after a refusal
        writer.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
        await writer.drain()

    async with scripted_server(script) as port:
        ep = ImapEndpoint("127.0.0.1", port, "none", "user", password, timeout=5)
        with pytest.raises((ImapConnectionError, ImapAuthError)) as info:
            await asyncio.wait_for(connect(ep), NO_HANG)
    error = info.value
    assert password not in f"{error} {error!r}"
    assert error.__cause__ is None and error.__suppress_context__
