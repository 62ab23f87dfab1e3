"""The recorder: chunks stored, then filed, in order, while sending goes on; bounded backlog."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from maild.outbox.chunks import Recorder


class Log:
    """Record what was stored and filed, in order; stores wait until released."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def store(self, batch: list[int]) -> list[int]:
        """Store a chunk once released."""
        await self.release.wait()
        self.events.append(("store", batch))
        return batch

    async def file(self, stored: list[int]) -> None:
        """File a stored chunk."""
        await asyncio.sleep(0)
        self.events.append(("file", stored))


async def test_chunks_are_stored_then_filed_in_order() -> None:
    """Full chunks go as they fill, the rest at finish; each is stored before it is filed."""
    log = Log()
    recorder: Recorder[int, list[int]] = Recorder(3, log.store, log.file)
    for n in range(7):
        await recorder.reserve()
        recorder.add(n)
    await recorder.finish()
    stores = [batch for kind, batch in log.events if kind == "store"]
    files = [batch for kind, batch in log.events if kind == "file"]
    assert stores == files == [[0, 1, 2], [3, 4, 5], [6]]
    for batch in stores:
        assert log.events.index(("store", batch)) < log.events.index(("file", batch))


async def test_sending_waits_while_two_chunks_are_not_stored() -> None:
    """No more than two chunks' letters are sent but not stored: the next one waits for room."""
    log = Log()
    log.release.clear()
    recorder: Recorder[int, list[int]] = Recorder(2, log.store, log.file)
    for n in range(4):
        await recorder.reserve()
        recorder.add(n)
    waiting = asyncio.ensure_future(recorder.reserve())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    log.release.set()
    await asyncio.wait_for(waiting, 1)
    recorder.unreserve()
    await recorder.finish()
    assert [batch for kind, batch in log.events if kind == "file"] == [[0, 1], [2, 3]]


async def test_big_letters_close_a_chunk_early_and_hold_sending_by_their_bytes() -> None:
    """A quarter of max_bytes fills a chunk; while max_bytes are not filed, the next letter waits."""
    log = Log()
    log.release.clear()
    recorder: Recorder[int, list[int]] = Recorder(32, log.store, log.file, max_bytes=100)
    for n in range(7):  # 15 bytes each: chunks of two (30 >= 25), then 105 held unfiled
        await recorder.reserve()
        recorder.add(n, 15)
    waiting = asyncio.ensure_future(recorder.reserve())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    log.release.set()
    await asyncio.wait_for(waiting, 1)
    recorder.add(7, 1)
    await recorder.finish()
    stores = [batch for kind, batch in log.events if kind == "store"]
    assert stores == [[0, 1], [2, 3], [4, 5], [6, 7]]


async def test_bytes_reserved_before_sending_count_until_given_back() -> None:
    """Letters still being composed or sent hold their bytes too: the next one waits for them."""
    log = Log()
    recorder: Recorder[int, list[int]] = Recorder(32, log.store, log.file, max_bytes=100)
    await recorder.reserve(60)
    await recorder.reserve(50)  # under the bound when asked: goes, and now 110 are held
    waiting = asyncio.ensure_future(recorder.reserve(10))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    recorder.unreserve(50)  # that letter was not sent after all
    await asyncio.wait_for(waiting, 1)
    recorder.add(0, 70, reserved=60)  # the relay took it: its real size replaces the guess
    recorder.add(1, 5, reserved=10)
    await recorder.finish()
    assert [batch for kind, batch in log.events if kind == "store"] == [[0], [1]]


async def test_a_letter_bigger_than_max_bytes_still_goes() -> None:
    """One letter over the whole bound is stored alone and sending goes on: no deadlock."""
    log = Log()
    recorder: Recorder[int, list[int]] = Recorder(32, log.store, log.file, max_bytes=10)
    for n in range(3):
        await asyncio.wait_for(recorder.reserve(), 1)
        recorder.add(n, 50)
    await recorder.finish()
    assert [batch for kind, batch in log.events if kind == "store"] == [[0], [1], [2]]


async def test_a_filed_chunk_lets_its_letters_go_before_the_pass_ends() -> None:
    """Once filed, a chunk's letters are freed at once, not held until finish: a long pass of
    big letters does not keep every letter it sent."""

    class Letter:
        """A sent letter, watched by a weak reference."""

    async def store(batch: list[Letter]) -> list[Letter]:
        return batch

    async def file(stored: list[Letter]) -> None:
        await asyncio.sleep(0)

    recorder: Recorder[Letter, list[Letter]] = Recorder(2, store, file)
    watched = []
    for _ in range(4):
        letter = Letter()
        watched.append(weakref.ref(letter))
        await recorder.reserve()
        recorder.add(letter, 10)
    del letter
    for _ in range(10):  # the two chunks are stored, then filed
        await asyncio.sleep(0)
    gc.collect()
    assert [ref() for ref in watched[:2]] == [None, None]
    await recorder.finish()


async def test_a_failed_chunk_is_raised_at_finish_and_the_next_still_goes() -> None:
    """A chunk whose filing failed is raised by finish; later chunks are still stored and filed."""
    filed: list[list[int]] = []

    async def store(batch: list[int]) -> list[int]:
        return batch

    async def file(stored: list[int]) -> None:
        if stored == [0]:
            raise RuntimeError("database away")
        filed.append(stored)

    recorder: Recorder[int, list[int]] = Recorder(1, store, file)
    for n in range(2):
        await recorder.reserve()
        recorder.add(n)
    with pytest.raises(RuntimeError, match="database away"):
        await recorder.finish()
    assert filed == [[1]]
    await recorder.cancel()


async def test_cancel_stops_what_is_left() -> None:
    """Cancelling drops chunks not yet recorded (their rows are retried later) without warnings."""
    log = Log()
    log.release.clear()
    recorder: Recorder[int, list[int]] = Recorder(1, log.store, log.file)
    await recorder.reserve()
    recorder.add(1)
    await asyncio.sleep(0)
    await recorder.cancel()
    assert log.events == []


def test_multiappend_groups_by_size() -> None:
    """Letters are filed in order in groups of at most the limit; a larger letter goes alone."""
    from types import SimpleNamespace

    from maild.outbox.dispatcher import _by_size

    pairs = [(SimpleNamespace(raw=b"x" * size), n) for n, size in enumerate([4, 4, 3, 20, 1, 9])]
    groups = _by_size(pairs, 10)  # type: ignore[arg-type]
    assert [[n for _, n in group] for group in groups] == [[0, 1], [2], [3], [4, 5]]
    assert _by_size([], 10) == []
