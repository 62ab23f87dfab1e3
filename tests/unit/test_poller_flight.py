"""A folder's letters in flight stay bounded: big letters are fetched alone and never side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.core.status import StatusBoard
from maild.ingest import poller
from maild.ingest.poller import FolderPoller, PollOptions
from maild.memory import unmap_big_blocks
from maild.metrics import Metrics

MB = 1024 * 1024


class _Session:
    """Serve letters of given sizes and note the bytes the fetcher holds at each fetch."""

    def __init__(self, table: dict[int, int], sink: _Sink) -> None:
        self.table = table
        self.sink = sink
        self.fetched: list[list[int]] = []
        self.in_flight: list[int] = []

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        return {uid: self.table[uid] for uid in uids}

    async def fetch(self, uids: Sequence[int], *, headers_only: bool = False) -> list[Any]:
        self.fetched.append(list(uids))
        held = sum(self.table[uid] for chunk in self.fetched for uid in chunk)
        self.in_flight.append(held - self.sink.stored_bytes)
        await asyncio.sleep(0)
        return [FetchedMessage(uid=uid, raw=b"x" * self.table[uid], size=0) for uid in uids]


class _Sink:
    """Store letters slowly, counting each UID and the bytes stored."""

    def __init__(self) -> None:
        self.uids: list[int] = []
        self.stored_bytes = 0

    async def store_many(
        self, items: Sequence[tuple[FetchedMessage, Any, Any]], *, push: bool = False
    ) -> list[str]:
        await asyncio.sleep(0.001)
        self.uids += [message.uid for message, _, _ in items]
        self.stored_bytes += sum(len(message.raw) for message, _, _ in items)
        return ["stored"] * len(items)


class _Parser:
    """Parse nothing, at once."""

    def submit_many(
        self, raws: Sequence[bytes], *, lane: object = None, express: bool = False
    ) -> list[asyncio.Future[ParsedLetter]]:
        futures = []
        for _ in raws:
            future: asyncio.Future[ParsedLetter] = asyncio.get_running_loop().create_future()
            future.set_result(ParsedLetter())
            futures.append(future)
        return futures


async def test_big_letters_are_fetched_alone_and_one_at_a_time() -> None:
    """Every letter is stored once in order; no fetch holds more than the bound or one big letter."""
    sizes = dict.fromkeys(range(1, 61), 20_000)
    for uid in (10, 11, 31, 52):
        sizes[uid] = 25 * MB
    sizes[40] = 5 * MB
    sink = _Sink()
    session = _Session(sizes, sink)
    folder = FolderPoller(
        account="a",
        folder="INBOX",
        endpoint=None,  # type: ignore[arg-type]  # never connects here
        sink=sink,
        parser=_Parser(),  # type: ignore[arg-type]
        options=PollOptions(),
        status=StatusBoard(),
        metrics=Metrics(),
        stop=asyncio.Event(),
    )
    await folder._ingest(session, sorted(sizes))  # type: ignore[arg-type]
    assert sink.uids == sorted(sizes)
    for uid in (10, 11, 31, 52):
        assert [uid] in session.fetched
    for held in session.in_flight:
        assert held <= max(poller.MAX_FLIGHT_BYTES, 25 * MB)
    assert max(session.in_flight) >= 25 * MB


def test_chunks_cut_around_a_big_letter() -> None:
    """A big or oversize letter goes alone, after the letters before it and before those after."""
    folder = object.__new__(FolderPoller)
    folder.options = PollOptions(max_letter_bytes=100 * MB)
    sizes = {1: 1000, 2: 1000, 3: 9 * MB, 4: 1000, 5: 200 * MB}
    assert folder._chunks([1, 2, 3, 4, 5], sizes) == [
        ([1, 2], False),
        ([3], False),
        ([4], False),
        ([5], True),
    ]
    folder.options = PollOptions(max_letter_bytes=2000)
    assert folder._chunks([1, 2, 4, 6], {1: 1000, 2: 3000, 4: 1000, 6: 1000}) == [
        ([1], False),
        ([2], True),
        ([4, 6], False),
    ]


def test_big_blocks_are_unmapped_when_freed() -> None:
    """glibc takes the fixed mmap threshold (the machines maild runs on are Linux with glibc)."""
    assert unmap_big_blocks()
