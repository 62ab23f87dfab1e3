"""Record sent letters a chunk at a time while sending goes on: store each chunk, then file it.

The dispatcher's SMTP connections never wait for the database or the IMAP server: every letter
the relay took is added here; each full chunk is stored (after the chunk before it) and then
filed in Sent (after the chunk before it), in tasks of their own. Sending waits only when two
chunks' worth of letters are sent but not yet stored, so a crash resends at most that many.
A chunk is also full at a quarter of ``max_bytes`` (SQLite holds two copies of a chunk's
letters while it inserts them), and a letter waits before it is composed while
the letters being composed, sent or not yet filed hold ``max_bytes``: big letters are kept in
memory a few at a time, not chunks of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["Recorder"]

T = TypeVar("T")
S = TypeVar("S")


class Recorder(Generic[T, S]):
    """Gather sent letters into chunks; store and then file each chunk in order, in the background."""

    def __init__(
        self,
        size: int,
        store: Callable[[list[T]], Awaitable[S]],
        file: Callable[[S], Awaitable[None]],
        *,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._size = size
        self._store = store
        self._file = file
        self._batch: list[T] = []
        self._room = asyncio.Semaphore(2 * size)
        self._max_bytes = max_bytes
        self._batch_bytes = 0
        self._held_bytes = 0  # reserved for letters on their way, or added and not yet filed
        self._less_held = asyncio.Event()
        self._stored: asyncio.Task[S] | None = None
        self._filed: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # chunks' tasks not yet done
        self._failures: list[BaseException] = []

    async def reserve(self, size: int = 0) -> None:
        """Wait for room for one more letter of about ``size`` bytes, then count them held.

        There is room under two chunks not stored and while the letters composed or sent but
        not yet filed hold under max_bytes; counted from before composing, so that letters on
        their way to the relay are bounded too, not only those the relay took.
        """
        await self._room.acquire()
        while self._held_bytes >= self._max_bytes:  # filed chunks bring it down
            self._less_held.clear()
            await self._less_held.wait()
        self._held_bytes += size

    def unreserve(self, size: int = 0) -> None:
        """Give back the room of a letter that was not sent after all, and its reserved bytes."""
        self._room.release()
        self._release(size)

    def add(self, item: T, size: int = 0, *, reserved: int = 0) -> None:
        """Take a letter the relay accepted, of ``size`` bytes; a full chunk starts being stored.

        ``reserved`` is what ``reserve`` counted for it, now replaced by its real size.
        """
        self._batch.append(item)
        self._batch_bytes += size
        self._held_bytes += size
        self._release(reserved)
        if len(self._batch) >= self._size or 4 * self._batch_bytes >= self._max_bytes:
            self._flush()

    def _release(self, size: int) -> None:
        """Count bytes no longer held, and wake a letter waiting for room."""
        if size:
            self._held_bytes -= size
            self._less_held.set()

    async def finish(self) -> None:
        """Store and file what is left; raise the first failure of any chunk's recording."""
        self._flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        failures, self._failures = self._failures, []
        if failures:
            raise failures[0]

    async def cancel(self) -> None:
        """Stop recording (the dispatcher is stopping or failed); the rows are retried later."""
        waiting = list(self._tasks)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        self._failures.clear()

    def _forget(self, task: asyncio.Task[Any]) -> None:
        """Let a finished chunk's task go, so its letters are freed; keep its failure for finish."""
        self._tasks.remove(task)
        # the last chunk's tasks are kept only for the next to wait on: done, they hold letters
        if self._stored is task:
            self._stored = None
        if self._filed is task:
            self._filed = None
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            self._failures.append(failure)

    def _flush(self) -> None:
        """Start storing the current chunk after the one before, and filing it after that one."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        held, self._batch_bytes = self._batch_bytes, 0
        stored = asyncio.create_task(self._store_after(self._stored, batch))
        filed = asyncio.create_task(self._file_after(self._filed, stored, held))
        self._stored, self._filed = stored, filed
        for task in (stored, filed):
            self._tasks.append(task)
            task.add_done_callback(self._forget)

    async def _store_after(self, before: asyncio.Task[S] | None, batch: list[T]) -> S:
        """Store a chunk once the chunk before it is stored; then make room for more letters."""
        try:
            if before is not None:
                await asyncio.wait([before])  # its failure is reported by its own task
            return await self._store(batch)
        finally:
            for _ in batch:
                self._room.release()

    async def _file_after(
        self, before: asyncio.Task[None] | None, stored: asyncio.Task[S], held: int
    ) -> None:
        """File a chunk once it is stored and the chunk before it is filed; then let its bytes go."""
        try:
            done = await stored
            if before is not None:
                await asyncio.wait([before])
            await self._file(done)
        finally:
            self._release(held)
