"""An SMTP sink on loopback, so sending code is tested against a real SMTP server.

``aiosmtpd`` is a test dependency, so it is imported only when a sink starts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["ReceivedMail", "SmtpSink"]


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted SMTP transaction; ``mail_from`` is ``""`` for the null sender ``<>``."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    smtputf8: bool = False


class _Handler:
    """aiosmtpd handler that keeps every message and answers 250."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the envelope; aiosmtpd calls this once per DATA."""
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        self._sink._received(
            ReceivedMail(
                mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=bytes(content),
                smtputf8=bool(envelope.smtp_utf8),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that accepts everything and keeps it in :attr:`messages`."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: Any = None

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

    def start(self) -> None:
        """Start the server in aiosmtpd's own thread on a free port."""
        from aiosmtpd.controller import Controller  # a test dependency: imported lazily

        if self._controller is not None:
            return
        self.port = self._requested_port or _free_port(self.host)
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=True,
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self.messages.clear()

    def _received(self, mail: ReceivedMail) -> None:
        """Store a message from aiosmtpd's thread under the lock."""
        with self._lock:
            self.messages.append(mail)

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
