"""The only aiosmtplib importer: hand composed letters to the relay, TLS and errors done right.

One :class:`SmtpSender` keeps one connection to the relay and reuses it; a connection that
dropped is noticed (a NOOP before reuse, or, within ``FRESH_SECONDS`` of its last letter,
at MAIL before anything of the letter went) and replaced. DATA goes in one pass over the
letter (:func:`wire_data`). TLS is implicit (``tls``) or required
through STARTTLS (``starttls``): a relay that does not offer STARTTLS gets nothing, never a
plaintext letter or password. Certificates and host names are verified unless the config
says ``tls_verify = false`` (logged as a warning at start). Every
failure becomes :class:`~maild.errors.SmtpTemporaryError` (try later) or
:class:`~maild.errors.SmtpPermanentError` (this letter will never go), with the reply code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

import aiosmtplib
from aiosmtplib.email import parse_address
from aiosmtplib.protocol import SMTPProtocol, normalize_message_line_endings

from maild.errors import SmtpError, SmtpPermanentError, SmtpTemporaryError
from maild.logging import get_logger
from maild.settings import SmtpConfig
from maild.tls import client_context, is_loopback

__all__ = ["SmtpSender"]

log = get_logger(__name__)

#: Seconds after a letter during which its connection is reused without a NOOP first.
FRESH_SECONDS = 5.0

#: Bytes of a letter handed to the socket at a time: the transport copies what waits.
WRITE_CHUNK = 256 * 1024

_END_OF_DATA = b".\r\n"

#: What aiosmtplib and the socket layer raise on a failed connection, TLS or timeout.
_CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)


class SmtpSender:
    """Send raw letters through the configured relay over one reused connection."""

    def __init__(
        self, config: SmtpConfig, *, timeout: float = 60.0, local_hostname: str | None = None
    ) -> None:
        if (
            config.security == "none"
            and not is_loopback(config.host)
            and not config.allow_plaintext
        ):
            raise ValueError('security = "none" is only allowed for a loopback host')
        self._config = config
        self._timeout = timeout
        self._local_hostname = local_hostname
        self._where = f"SMTP {config.host}:{config.port}"
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._password: str | None = None
        self._used = -FRESH_SECONDS  # loop time the last letter went

    def __repr__(self) -> str:
        """Name the relay and its security, never the credentials."""
        return f"SmtpSender({self._where}, security={self._config.security!r})"

    async def send(self, raw: bytes, *, sender: str, recipients: Sequence[str]) -> None:
        """Send one letter; return when the relay took it for at least one recipient.

        Recipients the relay refuses while others are accepted are logged, not raised: the
        letter went. When every recipient is refused, the error follows their reply codes.
        """
        if not recipients:
            raise SmtpPermanentError(f"{self._where}: a letter needs at least one recipient")
        async with self._lock:
            try:
                refused = await self._send_on_live(raw, sender, list(recipients))
            except SmtpError:
                raise
            except BaseException:  # cancelled mid-transaction: the session state is unknown
                self._drop()
                raise
            self._used = asyncio.get_running_loop().time()
        if refused:
            log.warning("smtp_recipients_refused", relay=self._where, refused=refused)

    async def _send_on_live(self, raw: bytes, sender: str, recipients: list[str]) -> dict[str, str]:
        """Run the transaction on a live connection; give the refused recipients.

        A connection that sent a letter moments ago is used without a NOOP first. Should it
        turn out closed at MAIL (nothing of the letter sent yet), it is replaced and the letter
        sent on the new one: what the NOOP would have done, one round trip fewer per letter.
        """
        loop = asyncio.get_running_loop()
        fresh = self._client is not None and loop.time() - self._used < FRESH_SECONDS
        client = await self._ready(check=not fresh)
        try:
            return await self._transaction(client, raw, sender, recipients)
        except _Stale as stale:
            await self._discard()
            if not fresh:
                raise self._session_error(stale.error) from stale.error
        client = await self._ready()
        try:
            return await self._transaction(client, raw, sender, recipients)
        except _Stale as stale:
            await self._discard()
            raise self._session_error(stale.error) from stale.error

    async def close(self) -> None:
        """Say QUIT and close the connection, if one is open; errors on the way out are ignored."""
        async with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            protocol = client.protocol  # quit() drops it, though TLS is still saying goodbye
            if client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await client.quit(timeout=min(self._timeout, 5.0))
            await _closed(client, protocol)

    # ----------------------------------------------------------------------------------------
    # connection
    # ----------------------------------------------------------------------------------------

    async def _ready(self, *, check: bool = True) -> aiosmtplib.SMTP:
        """Give a live, logged-in connection: the open one if it answers NOOP, else a new one.

        Unless ``check``: the open one is then taken as it is, if it is not known to be closed.
        """
        if self._client is not None and self._client.is_connected:
            if not check:
                return self._client
            try:
                await self._client.noop()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                await self._discard()
            else:
                return self._client
        await self._discard()
        self._client = await self._connect()
        return self._client

    def _drop(self) -> None:
        """Throw the current connection away at once, without a word to the relay."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _discard(self) -> None:
        """Throw the current connection away, and let its socket finish closing."""
        client, self._client = self._client, None
        if client is not None:
            await _closed(client)

    async def _connect(self) -> aiosmtplib.SMTP:
        """Open a connection with the configured TLS, then EHLO and log in when configured."""
        security = self._config.security
        client = aiosmtplib.SMTP(
            hostname=self._config.host,
            port=self._config.port,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
            use_tls=security == "tls",
            start_tls=False,  # done below, so a relay without STARTTLS is refused, not used
            validate_certs=self._config.tls_verify,
            tls_context=self._tls_context() if security != "none" else None,
        )
        plain: asyncio.BaseTransport | None = None
        try:
            await client.connect()
            plain = client.transport
            await client.ehlo()
            if security == "starttls":
                if not client.supports_extension("starttls"):
                    raise SmtpTemporaryError(
                        f"{self._where}: the relay does not offer STARTTLS; "
                        "refusing to send in plaintext"
                    )
                await client.starttls()
                await client.ehlo()
            if security != "none" and client.get_transport_info("sslcontext") is None:
                raise SmtpTemporaryError(f"{self._where}: the connection is not encrypted")
            if self._config.username is not None:
                await self._login(client, self._config.username)
        except Exception as exc:
            await _closed(client)
            await _close_transport(plain)  # a failed STARTTLS leaves the plaintext one open
            if isinstance(exc, SmtpError):
                raise
            raise self._session_error(exc) from exc
        except BaseException:
            client.close()
            raise
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Build the context: verifying (system CAs plus ``ca_file``) unless tls_verify is off."""
        try:
            return client_context(self._config.ca_file, verify=self._config.tls_verify)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpTemporaryError(
                f"{self._where}: cannot load CA file {str(self._config.ca_file)!r}: {exc}"
            ) from exc

    async def _login(self, client: aiosmtplib.SMTP, username: str) -> None:
        """Log in with the configured password, refused unless TLS is up or the relay is local."""
        plaintext = client.get_transport_info("sslcontext") is None
        if plaintext and not is_loopback(self._config.host) and not self._config.allow_plaintext:
            raise SmtpTemporaryError(f"{self._where}: refusing to send a password in plaintext")
        try:
            await client.login(username, self._secret())
        except aiosmtplib.SMTPResponseException as exc:
            raise SmtpTemporaryError(
                f"{self._where}: login as {username!r} refused: {exc.code} "
                f"{self._scrub(exc.message)}",
                code=exc.code,
                reply=self._scrub(exc.message),
            ) from None

    def _secret(self) -> str:
        """Read the password once, at the first login."""
        if self._password is None:
            try:
                self._password = self._config.read_password().get_secret_value()
            except ValueError as exc:
                raise SmtpTemporaryError(f"{self._where}: cannot read the password: {exc}") from exc
        return self._password

    # ----------------------------------------------------------------------------------------
    # one letter
    # ----------------------------------------------------------------------------------------

    async def _transaction(
        self, client: aiosmtplib.SMTP, raw: bytes, sender: str, recipients: list[str]
    ) -> dict[str, str]:
        """Run MAIL, RCPT and DATA; give the refused recipients with their replies."""
        options = []
        if not all(address.isascii() for address in [sender, *recipients]):
            options.append("SMTPUTF8")
        if not raw.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            errors = await _sendmail(
                client, raw, sender=sender, recipients=recipients, options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise self._all_refused(exc) from None
        except aiosmtplib.SMTPResponseException as exc:
            if not client.is_connected:
                await self._discard()
            raise self._reply_error("refused the letter", exc.code, exc.message) from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise SmtpPermanentError(f"{self._where}: {exc.message}") from None
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS, TimeoutError) as exc:
            await self._discard()
            raise self._session_error(exc) from exc
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            raise SmtpPermanentError(f"{self._where}: {exc}") from None
        return {address: f"{reply.code} {reply.message}" for address, reply in errors.items()}

    def _all_refused(self, exc: aiosmtplib.SMTPRecipientsRefused) -> SmtpError:
        """Raise for a letter no recipient took: temporary if any refusal was, else permanent."""
        refusals = exc.recipients
        detail = "; ".join(f"{r.recipient}: {r.code} {self._scrub(r.message)}" for r in refusals)
        temporary = any(400 <= r.code < 500 for r in refusals) or not refusals
        kind = SmtpTemporaryError if temporary else SmtpPermanentError
        first = refusals[0] if refusals else None
        return kind(
            f"{self._where}: every recipient refused: {detail}",
            code=first.code if first else None,
            reply=self._scrub(first.message) if first else "",
        )

    def _reply_error(self, what: str, code: int, message: str) -> SmtpError:
        """Classify a reply code: 5xx is permanent; 4xx and anything odd are worth a retry."""
        reply = self._scrub(message)
        kind = SmtpPermanentError if 500 <= code < 600 else SmtpTemporaryError
        return kind(f"{self._where}: {what}: {code} {reply}", code=code, reply=reply)

    def _session_error(self, exc: BaseException) -> SmtpTemporaryError:
        """Name a failure to connect, encrypt, greet or stay connected; it is always temporary."""
        untrusted = _cert_error(exc)
        message = exc.message if isinstance(exc, aiosmtplib.SMTPException) else str(exc)
        code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
        if isinstance(untrusted, ssl.SSLCertVerificationError):
            detail = f"certificate not trusted: {untrusted.verify_message or untrusted}"
        elif isinstance(exc, TimeoutError):
            detail = f"timed out after {self._timeout:g} s ({message or 'no answer'})"
        elif code is not None:
            detail = f"{code} {message}"
        else:
            detail = message or type(exc).__name__
        reply = self._scrub(message) if code is not None else ""
        return SmtpTemporaryError(f"{self._where}: {self._scrub(detail)}", code=code, reply=reply)

    def _scrub(self, text: str) -> str:
        """Mask the password, plain or base64-encoded, should a relay echo it back."""
        secret = self._password
        if not secret:
            return text
        username = self._config.username or ""
        forms = {
            secret,
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{username}\0{secret}".encode()).decode(),
        }
        for form in forms:
            text = text.replace(form, "***")
        return text


class _Stale(Exception):
    """The connection was found closed at MAIL, before anything of the letter was sent."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def _sendmail(
    client: aiosmtplib.SMTP, raw: bytes, *, sender: str, recipients: list[str], options: list[str]
) -> dict[str, aiosmtplib.SMTPResponse]:
    """Run one mail transaction as ``aiosmtplib.SMTP.sendmail`` does, with one pass over the letter.

    ``sendmail`` goes over the letter three times with regular expressions (line ends for
    SIZE, line ends again and leading dots for DATA); here the letter, already with CRLF line
    ends as maild composes it, is only counted and has its leading dots doubled. The commands,
    the checks before them and the RSET after a refusal are ``sendmail``'s.
    """
    parse_address(sender)
    for recipient in recipients:
        parse_address(recipient)
    utf8 = any(option.lower() == "smtputf8" for option in options)
    if utf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    encoding = "utf-8" if utf8 else "ascii"
    data, size = wire_body(raw)
    if client.supports_extension("size"):
        options = [f"size={size}", *options]
    try:
        try:
            await client.mail(sender, options=options, encoding=encoding)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _Stale(exc) from exc
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        for recipient in recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[recipient] = aiosmtplib.SMTPResponse(exc.code, exc.message)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()]
            )
        await _data(client, data)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise
    return refused


async def _data(client: aiosmtplib.SMTP, body: bytes) -> None:
    """Send DATA and the prepared letter a piece at a time, and read the relay's verdict on it."""
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # Waiting for the reply before the first byte goes: a reply cannot arrive unawaited.
    reply = asyncio.ensure_future(protocol.read_response(timeout=client.timeout))
    try:
        await asyncio.sleep(0)
        whole = await _write_body(protocol, body, reply)
        response = await reply
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError):
        client.close()
        raise
    finally:
        if not reply.done():
            reply.cancel()
        reply.add_done_callback(_retrieved)
    if not whole:  # the relay spoke before the end of the letter: the session is out of step
        client.close()
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    if not whole:
        raise aiosmtplib.SMTPServerDisconnected("the relay answered before the letter's end")


async def _write_body(
    protocol: SMTPProtocol, body: bytes, reply: asyncio.Future[aiosmtplib.SMTPResponse]
) -> bool:
    """Write the letter and its final dot, waiting while the socket is behind; tell if all went.

    The transport copies whatever the socket does not take at once: written whole, a 25 MB
    letter would be in memory twice more until it is gone.
    """
    view = memoryview(body)
    for at in range(0, len(view), WRITE_CHUNK):
        if reply.done():
            return False
        _write(protocol, view[at : at + WRITE_CHUNK])
        if not await _drained(protocol, reply):
            return False
    if reply.done():
        return False
    _write(protocol, _END_OF_DATA)
    return True


async def _drained(protocol: SMTPProtocol, reply: asyncio.Future[aiosmtplib.SMTPResponse]) -> bool:
    """Wait until the socket took what waits to be sent; False if the reply came first.

    A relay that answers early may stop reading: then only its reply (or the reply's
    timeout) ends the wait, never a drain that will not come.
    """
    transport = protocol.transport
    if isinstance(transport, asyncio.WriteTransport) and not transport.get_write_buffer_size():
        return True
    drain = asyncio.ensure_future(protocol._drain_helper())  # aiosmtplib's flow control
    try:
        await asyncio.wait((drain, reply), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not drain.done():
            drain.cancel()
        drain.add_done_callback(_retrieved)
    if not drain.done() or drain.cancelled():
        return False
    drain.result()  # a lost connection raises here
    return True


def _write(protocol: SMTPProtocol, data: bytes | memoryview) -> None:
    """Hand bytes to the transport without copying them, as ``SMTPProtocol.write`` does bytes."""
    transport = protocol.transport
    if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    transport.write(data)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a reply nobody will read as seen, so its error is not reported as lost."""
    if not future.cancelled():
        future.exception()


def wire_data(raw: bytes) -> tuple[bytes, int]:
    """Give a letter as DATA carries it (CRLF line ends, leading dots doubled, the final dot).

    Also gives its size for SIZE (RFC 1870): the octets with CRLF line ends, before the
    dots. The same bytes as aiosmtplib's regular expressions give, for any letter.
    """
    body, size = wire_body(raw)
    return body + _END_OF_DATA, size


def wire_body(raw: bytes) -> tuple[bytes, int]:
    """Give the letter as DATA carries it before the final dot, and its size for SIZE.

    A letter maild composed (CRLF line ends, no line starting with a dot, such as base64
    attachments) is given back as it is, not copied.
    """
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") == crlf == raw.count(b"\n"):
        lines = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    else:  # a bare CR or LF somewhere: aiosmtplib's own normalization
        lines = normalize_message_line_endings(raw)
    data = lines.replace(b"\n.", b"\n..") if b"\n." in lines else lines
    if data.startswith(b"."):
        data = b"." + data
    return data, len(lines)


async def _closed(
    client: aiosmtplib.SMTP, protocol: SMTPProtocol | None = None, wait: float = 2.0
) -> None:
    """Close a connection and give its socket a moment to close: TLS says goodbye first."""
    protocol = protocol or client.protocol
    transport = protocol.transport if protocol is not None else None
    client.close()
    if protocol is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    # aiosmtplib offers no event for "the socket is closed"; its protocol drops the transport then.
    while protocol.transport is not None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if protocol.transport is not None and isinstance(transport, asyncio.WriteTransport):
        # A relay that never answers TLS's goodbye must not keep the socket open behind our back.
        transport.abort()
        for _ in range(3):
            await asyncio.sleep(0)


async def _close_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close a transport aiosmtplib let go of, and give the loop a turn to release its socket."""
    if transport is not None and not transport.is_closing():
        transport.close()
        await asyncio.sleep(0)


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """Find a certificate verification failure anywhere in an exception's cause chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
