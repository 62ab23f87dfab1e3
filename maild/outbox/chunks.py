"""Record sent letters a chunk at a time while sending goes on: store each chunk, then file it.

The dispatcher's SMTP connections never wait for the database or the IMAP server: every letter
the relay took is added here; each full chunk is stored (after the chunk before it) and then
filed in Sent (after the chunk before it), in tasks of their own. Sending waits only when two
chunks' worth of letters are sent but not yet stored, so a crash resends at most that many.
A chunk is also full at half of ``max_bytes``, and sending waits while the letters not yet
filed hold ``max_bytes``: big letters are kept in memory a few at a time, not chunks of them.
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
        self._held_bytes = 0  # added, in chunks not yet filed or still gathering
        self._less_held = asyncio.Event()
        self._stored: asyncio.Task[S] | None = None
        self._filed: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # chunks' tasks not yet done
        self._failures: list[BaseException] = []

    async def reserve(self) -> None:
        """Wait for room for one more letter: under two chunks not stored, under max_bytes not filed."""
        await self._room.acquire()
        while self._held_bytes >= self._max_bytes:  # filed chunks bring it down
            self._less_held.clear()
            await self._less_held.wait()

    def unreserve(self) -> None:
        """Give back the room of a letter that was not sent after all."""
        self._room.release()

    def add(self, item: T, size: int = 0) -> None:
        """Take a letter the relay accepted, of ``size`` bytes; a full chunk starts being stored."""
        self._batch.append(item)
        self._batch_bytes += size
        self._held_bytes += size
        if len(self._batch) >= self._size or 2 * self._batch_bytes >= self._max_bytes:
            self._flush()

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
            self._held_bytes -= held
            self._less_held.set()
