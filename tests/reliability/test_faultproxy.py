"""The fault proxy itself, in front of a tiny line server: each fault does what it says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from maild.testing.faultproxy import FaultProxy

NO_HANG = 5.0


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet, then answer every line with "ok LINE", or with 100 kB for "big"."""
    writer.write(b"hello\r\n")
    with contextlib.suppress(ConnectionError):
        while line := await reader.readline():
            reply = b"x" * 100_000 + b"\r\n" if line.strip() == b"big" else b"ok " + line
            writer.write(reply)
            await writer.drain()
    writer.close()


_CLIENTS: list[asyncio.StreamWriter] = []


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """Give a proxy in front of the line server; close every client the test opened."""
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FaultProxy(port, record=True) as proxy:
            yield proxy
            for writer in _CLIENTS:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            _CLIENTS.clear()
    finally:
        server.close()
        await server.wait_closed()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    _CLIENTS.append(writer)
    return reader, writer


async def _open(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _connect(proxy)
    assert await asyncio.wait_for(reader.readline(), NO_HANG) == b"hello\r\n"
    return reader, writer


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    writer.write(line + b"\r\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), NO_HANG)


async def test_forwards_both_ways_and_records(proxy: FaultProxy) -> None:
    """Without faults the proxy is invisible; what went up is recorded."""
    reader, writer = await _open(proxy)
    assert await _ask(reader, writer, b"one") == b"ok one\r\n"
    assert proxy.live == 1 and bytes(proxy.sent_up or b"") == b"one\r\n"


async def test_cut_and_refuse(proxy: FaultProxy) -> None:
    """cut resets live connections; refuse resets new ones until accept."""
    reader, _ = await _open(proxy)
    assert proxy.cut() == 1
    assert await asyncio.wait_for(reader.read(), NO_HANG) == b""
    proxy.refuse()
    reader, _ = await _connect(proxy)
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), NO_HANG) == b""
    proxy.accept()
    await _open(proxy)
    assert proxy.accepted == 3


async def test_stall_then_resume(proxy: FaultProxy) -> None:
    """A stalled link keeps the connection open and delivers nothing until resumed."""
    reader, writer = await _open(proxy)
    proxy.stall("down")
    writer.write(b"two\r\n")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.3)
    proxy.resume()
    assert await asyncio.wait_for(reader.readline(), NO_HANG) == b"ok two\r\n"


async def test_cut_after_n_bytes_down(proxy: FaultProxy) -> None:
    """cut_after passes exactly N more bytes down, then resets the connection."""
    reader, writer = await _open(proxy)
    proxy.cut_after(1000)
    writer.write(b"big\r\n")
    got = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), NO_HANG):
            got += chunk
    assert len(got) <= 1000 < 100_002


async def test_inject_rewrite_and_reply_triggers(proxy: FaultProxy) -> None:
    """Injected bytes reach the client; a reply is rewritten, prefixed, or swallowed and cut."""
    reader, writer = await _open(proxy)
    assert proxy.inject(b"* BYE now\r\n") == 1
    assert await asyncio.wait_for(reader.readline(), NO_HANG) == b"* BYE now\r\n"
    proxy.rewrite(b"ok", b"OK")
    proxy.on_request(b"three", prepend=b"first\r\n")
    assert await _ask(reader, writer, b"three") == b"first\r\n"
    assert await asyncio.wait_for(reader.readline(), NO_HANG) == b"OK three\r\n"
    proxy.on_request(b"four", cut=True)
    writer.write(b"fo")
    await writer.drain()
    await asyncio.sleep(0.05)  # the pattern arrives split across two reads
    writer.write(b"ur\r\n")
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), NO_HANG) == b""


async def test_slow_trickles(proxy: FaultProxy) -> None:
    """slow holds a direction to the given rate."""
    reader, writer = await _open(proxy)
    proxy.slow(20_000, "down")
    start = time.monotonic()
    writer.write(b"big\r\n")
    await asyncio.wait_for(reader.readexactly(10_000), NO_HANG)
    assert time.monotonic() - start >= 0.3  # 10 kB at 20 kB/s: about half a second
    proxy.heal()
