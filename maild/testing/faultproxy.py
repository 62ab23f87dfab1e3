"""A fault-injecting TCP proxy, so tests and demos can break the link to a real server on command.

:class:`FaultProxy` listens on loopback and forwards every connection to one upstream server
(Dovecot, PostgreSQL, an SMTP relay). "up" is the client-to-server direction, "down" the
server-to-client one. On command it can:

* :meth:`~FaultProxy.cut` every connection now (a reset, as when a server crashes);
* :meth:`~FaultProxy.refuse` new connections until :meth:`~FaultProxy.accept` (each one is
  accepted and reset at once, as a restarting server or a full backlog does);
* :meth:`~FaultProxy.stall` one or both directions until :meth:`~FaultProxy.resume` (a hung
  server: connections stay open, nothing moves; new ones get no greeting);
* :meth:`~FaultProxy.slow` a direction down to a trickle of bytes per second;
* :meth:`~FaultProxy.cut_after` each connection once it has passed N more bytes down (a drop
  in the middle of a large literal), until told otherwise;
* :meth:`~FaultProxy.inject` bytes into every live connection (a ``* BYE`` during IDLE);
* :meth:`~FaultProxy.on_request`: when a request containing a pattern goes up, put bytes in
  front of its reply, or swallow the reply and cut (a relay that takes DATA and hangs up
  before its final answer);
* :meth:`~FaultProxy.rewrite` bytes going down (a man in the middle stripping ``STARTTLS``).

:meth:`~FaultProxy.heal` undoes every standing fault. The proxy runs on the caller's event
loop: a test that runs the daemon in-process drives both from the same loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["FaultProxy"]

Direction = Literal["up", "down"]
Which = Literal["up", "down", "both"]

_READ = 65536
_TRICKLE_STEPS_PER_SECOND = 20


@dataclass
class _Trigger:
    """What happens to the reply to a request that contains ``pattern``; fires once."""

    pattern: bytes
    prepend: bytes = b""
    cut: bool = False


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's writer and the server's."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    down_bytes: int = 0  # counted against cut_after since it was armed
    up_tail: bytes = b""  # the end of the last request, so a pattern split across reads matches
    armed: _Trigger | None = None
    dead: bool = field(default=False)

    def writer(self, direction: Direction) -> asyncio.StreamWriter:
        """Give the side bytes flowing in this direction are written to."""
        return self.server if direction == "up" else self.client

    def abort(self) -> None:
        """Reset both sides at once, dropping whatever is still buffered."""
        self.dead = True
        for side in (self.client, self.server):
            side.transport.abort()

    def close(self) -> None:
        """Close both sides after their buffers are flushed."""
        self.dead = True
        for side in (self.client, self.server):
            if not side.transport.is_closing():
                side.close()


class FaultProxy:
    """A loopback TCP proxy in front of one server that breaks the link when told to."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        record: bool = False,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        #: Connections accepted so far, refused ones included.
        self.accepted = 0
        #: Every byte sent up, in order, when ``record`` is set (to prove what went in clear).
        self.sent_up: bytearray | None = bytearray() if record else None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        self._rate: dict[Direction, float | None] = {"up": None, "down": None}
        self._refusing = False
        self._cut_after: int | None = None
        self._rewrites: list[tuple[bytes, bytes]] = []
        self._triggers: list[_Trigger] = []
        self.resume()

    def __repr__(self) -> str:
        return (
            f"FaultProxy({self.host}:{self.port} -> {self.upstream_host}:{self.upstream_port}, "
            f"{len(self._links)} live)"
        )

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Listen on a free loopback port (``self.port``)."""
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
        self.resume()
        self.cut()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def live(self) -> int:
        """Count the connections open through the proxy now."""
        return len(self._links)

    # -- faults ----------------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection now; give how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    def refuse(self) -> None:
        """Reset every new connection at once, until :meth:`accept`."""
        self._refusing = True

    def accept(self) -> None:
        """Forward new connections again."""
        self._refusing = False

    def stall(self, which: Which = "both") -> None:
        """Stop forwarding in one or both directions (connections stay open) until :meth:`resume`."""
        for direction in _directions(which):
            self._flowing[direction].clear()

    def resume(self) -> None:
        """Forward in both directions again."""
        for event in self._flowing.values():
            event.set()

    def slow(self, bytes_per_second: float | None, which: Which = "both") -> None:
        """Trickle bytes at this rate (None: full speed again)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive (or None for full speed)")
        for direction in _directions(which):
            self._rate[direction] = bytes_per_second

    def cut_after(self, nbytes: int | None) -> None:
        """Reset each connection once it has passed ``nbytes`` more bytes down (None: stop)."""
        if nbytes is not None and nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._cut_after = nbytes
        for link in self._links:
            link.down_bytes = 0

    def inject(self, data: bytes, which: Direction = "down") -> int:
        """Write bytes into every live connection (down: to the client); give how many got them."""
        links = [link for link in self._links if not link.dead]
        for link in links:
            link.writer(which).write(data)
        return len(links)

    def on_request(self, pattern: bytes, *, prepend: bytes = b"", cut: bool = False) -> None:
        """Once a request containing ``pattern`` goes up, prepend bytes to its reply or cut instead."""
        if not pattern:
            raise ValueError("the pattern must not be empty")
        self._triggers.append(_Trigger(pattern, prepend, cut))

    def rewrite(self, old: bytes, new: bytes) -> None:
        """Replace ``old`` by ``new`` in everything going down (within one read)."""
        if not old:
            raise ValueError("the bytes to replace must not be empty")
        self._rewrites.append((old, new))

    def heal(self) -> None:
        """Undo every standing fault: accept, resume, full speed, no cut, no rewrite, no trigger."""
        self.accept()
        self.resume()
        self.slow(None)
        self.cut_after(None)
        self._rewrites.clear()
        self._triggers.clear()

    # -- forwarding ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one connection both ways until either side ends or a fault ends it."""
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._refusing:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                writer.transport.abort()
                return
            link = _Link(client=writer, server=up_writer)
            for side in (writer, up_writer):
                side.transport.set_write_buffer_limits(high=0)  # drain means "handed to the kernel"
            self._links.add(link)
            try:
                await asyncio.gather(
                    self._pump(link, reader, "up"), self._pump(link, up_reader, "down")
                )
            finally:
                self._links.discard(link)
                link.close()
        finally:
            self._handlers.discard(task)

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, direction: Direction) -> None:
        """Copy one direction, applying the faults in force; the end of either closes the link."""
        try:
            while data := await reader.read(_READ):
                await self._flowing[direction].wait()
                if link.dead:
                    return
                if direction == "up":
                    self._arm(link, data)
                    if self.sent_up is not None:
                        self.sent_up += data
                    await self._send(link, direction, data)
                elif not await self._down(link, data):
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            link.close()

    def _arm(self, link: _Link, data: bytes) -> None:
        """Arm the first trigger whose pattern this request completes, so its reply is changed."""
        if not self._triggers:
            return
        window = link.up_tail + data
        for trigger in self._triggers:
            if trigger.pattern in window:
                self._triggers.remove(trigger)
                link.armed = trigger
                break
        keep = max((len(t.pattern) for t in self._triggers), default=1) - 1
        link.up_tail = window[-keep:] if keep > 0 else b""

    async def _down(self, link: _Link, data: bytes) -> bool:
        """Send server bytes to the client with the faults applied; False once the link is cut."""
        if link.armed is not None:
            trigger, link.armed = link.armed, None
            if trigger.cut:
                link.abort()
                return False
            data = trigger.prepend + data
        for old, new in self._rewrites:
            data = data.replace(old, new)
        if self._cut_after is not None:
            room = self._cut_after - link.down_bytes
            if len(data) >= room:
                await self._send(link, "down", data[:room])
                link.abort()
                return False
            link.down_bytes += len(data)
        await self._send(link, "down", data)
        return True

    async def _send(self, link: _Link, direction: Direction, data: bytes) -> None:
        """Write at full speed, or in small steps at the configured rate, stopping while stalled."""
        writer = link.writer(direction)
        rate = self._rate[direction]
        if rate is None:
            writer.write(data)
            await writer.drain()
            return
        step = max(1, int(rate / _TRICKLE_STEPS_PER_SECOND))
        for start in range(0, len(data), step):
            await self._flowing[direction].wait()
            if link.dead:
                return
            piece = data[start : start + step]
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(len(piece) / rate)


def _directions(which: Which) -> tuple[Direction, ...]:
    """Expand ``both`` into the two directions."""
    if which == "both":
        return ("up", "down")
    if which not in ("up", "down"):
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {which!r}")
    return (which,)
