"""A tiny HTTP endpoint for /healthz and /metrics, on the address the admin chose (loopback by default)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from maild.core.status import StatusBoard
from maild.logging import get_logger
from maild.metrics import Metrics
from maild.tls import is_loopback

log = get_logger(__name__)

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT = 10.0


class HealthServer:
    """Serve GET /healthz (JSON, 503 when an account is unhealthy) and GET /metrics (Prometheus)."""

    def __init__(self, listen: str, status: StatusBoard, metrics: Metrics) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.status = status
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the listening socket; a taken port fails the start loudly."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("health_listening", host=self.host, port=self.port)
        if not is_loopback(self.host):
            log.warning(
                "health_exposed",
                host=self.host,
                port=self.port,
                why="daemon.health_listen is not a loopback address: /healthz and /metrics "
                "answer anyone who can reach it, without authentication",
            )

    async def stop(self) -> None:
        """Close the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request and close the connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            status, ctype, body = self._route(head[:MAX_REQUEST_BYTES])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = "400 Bad Request", "text/plain", b"bad request\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, head: bytes) -> tuple[str, str, bytes]:
        """Pick the response for a request line."""
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        path = parts[1].split(b"?", 1)[0]
        if path == b"/healthz":
            report = self.status.as_dict()
            code = "200 OK" if report["ok"] else "503 Service Unavailable"
            return code, "application/json", json.dumps(report, indent=1).encode() + b"\n"
        if path == b"/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()
        return "404 Not Found", "text/plain", b"not found: try /healthz or /metrics\n"
