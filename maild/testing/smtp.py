"""An SMTP sink on loopback, so sending code is tested against a real SMTP server.

The sink accepts everything unless told otherwise: :meth:`SmtpSink.fail_next` makes it
answer the next MAIL, RCPT or DATA commands with a given reply (``451 4.3.0 try later``),
and :meth:`SmtpSink.refuse` refuses one recipient for good. With ``tls="starttls"`` or
``tls="tls"`` it serves a certificate from a throwaway CA (made with ``trustme``) whose PEM
is in :attr:`SmtpSink.ca_file`; with ``users`` it offers AUTH over TLS only (and requires it,
except on an implicit-TLS port, where aiosmtpd cannot do both).

``aiosmtpd`` and ``trustme`` are test dependencies, so they are imported only when a sink
starts.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = ["ReceivedMail", "SmtpSink"]

Stage = Literal["MAIL", "RCPT", "DATA"]
TlsMode = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted SMTP transaction; ``mail_from`` is ``""`` for the null sender ``<>``.

    ``login`` is the user that authenticated, and ``peer`` the client's address and port,
    which tells one connection from another.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    smtputf8: bool = False
    mail_options: tuple[str, ...] = ()
    login: str | None = None
    peer: str = ""


class _Handler:
    """aiosmtpd handler that keeps every message and answers as the sink was told."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Accept the sender unless a failure is queued for MAIL."""
        failure = self._sink._take_failure("MAIL")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Accept the recipient unless it is refused or a failure is queued for RCPT."""
        failure = self._sink._refusal(address) or self._sink._take_failure("RCPT")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the envelope, unless a failure is queued for DATA; called once per DATA."""
        failure = self._sink._take_failure("DATA")
        if failure is not None:
            return failure
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        login = getattr(session, "auth_data", None)
        self._sink._received(
            ReceivedMail(
                mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=bytes(content),
                smtputf8=bool(envelope.smtp_utf8),
                mail_options=tuple(envelope.mail_options),
                login=login.login.decode("utf-8") if login is not None else None,
                peer=str(session.peer),
            )
        )
        return "250 Message accepted for delivery"


class _NoDeprecationNoise(logging.Filter):
    """Drop aiosmtpd's own warning about its own legacy attribute, logged at every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but that one."""
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_LOGGER = logging.getLogger("mail.log")
_QUIET = _NoDeprecationNoise()


class _Authenticator:
    """Check AUTH PLAIN/LOGIN against the sink's users; counts the attempts."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self.attempts = 0

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.attempts += 1
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self._users.get(login) != password:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps what it accepts in :attr:`messages`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        tls: TlsMode = "none",
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.tls = tls
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: Any = None
        self._failures: list[tuple[Stage, str]] = []
        self._refused: dict[str, str] = {}
        self._authenticator = _Authenticator(users) if users is not None else None
        self._certs: Path | None = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def ca_file(self) -> Path:
        """Give the PEM file of the CA that signed the sink's certificate (TLS sinks only)."""
        if self._certs is None:
            raise RuntimeError("this sink has no certificate: start it with tls='starttls'/'tls'")
        return self._certs / "ca.pem"

    @property
    def auth_attempts(self) -> int:
        """Give how many AUTH attempts the sink has answered."""
        return self._authenticator.attempts if self._authenticator is not None else 0

    def start(self) -> None:
        """Start the server in aiosmtpd's own thread on a free port."""
        from aiosmtpd.controller import Controller  # a test dependency: imported lazily

        if self._controller is not None:
            return
        self.port = self._requested_port or _free_port(self.host)
        options: dict[str, Any] = {}
        if self.tls != "none":
            context = self._server_context()
            options["tls_context" if self.tls == "starttls" else "ssl_context"] = context
            options["require_starttls"] = self.tls == "starttls"
        if self._authenticator is not None:
            _AIOSMTPD_LOGGER.addFilter(_QUIET)  # the same filter object is added only once
            options["authenticator"] = self._authenticator
            if self.tls == "tls":
                # aiosmtpd counts only STARTTLS as TLS: on an implicit-TLS port, AUTH is
                # offered by lifting its TLS check, and then cannot also be required.
                options["auth_require_tls"] = False
            else:
                options["auth_required"] = True
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=True,
            ready_timeout=10.0,
            server_hostname="sink.test",
            **options,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop the server and its thread, and remove its certificates."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._certs is not None:
            shutil.rmtree(self._certs, ignore_errors=True)
            self._certs = None

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self.messages.clear()

    def fail_next(self, count: int, reply: str, *, on: Stage = "DATA") -> None:
        """Answer the next ``count`` commands of one kind with ``reply`` (e.g. ``"451 4.3.0 later"``)."""
        with self._lock:
            self._failures.extend([(on, reply)] * count)

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Refuse this recipient at every RCPT from now on."""
        with self._lock:
            self._refused[address.lower()] = reply

    def _take_failure(self, stage: Stage) -> str | None:
        """Give the next queued reply for this stage, if any, and forget it."""
        with self._lock:
            for index, (queued, reply) in enumerate(self._failures):
                if queued == stage:
                    del self._failures[index]
                    return reply
        return None

    def _refusal(self, address: str) -> str | None:
        """Give the reply refusing this recipient, if it is refused."""
        with self._lock:
            return self._refused.get(address.lower())

    def _received(self, mail: ReceivedMail) -> None:
        """Store a message from aiosmtpd's thread under the lock."""
        with self._lock:
            self.messages.append(mail)

    def _server_context(self) -> ssl.SSLContext:
        """Make a throwaway CA and a loopback certificate, and a server context serving it."""
        import trustme  # a test dependency: imported only when certificates are made

        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
        self._certs = Path(tempfile.mkdtemp(prefix="maild-smtp-"))
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        return context

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:  # noqa: ASYNC109
        """Wait without blocking the event loop until ``count`` messages arrived, and give them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"got {len(self.messages)} of {count} messages in {timeout} s")
            await asyncio.sleep(0.01)


def _free_port(host: str) -> int:
    """Ask the kernel for a free port (aiosmtpd's controller cannot use port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
