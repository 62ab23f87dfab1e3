"""Record sent letters a chunk at a time while sending goes on: store each chunk, then file it.

The dispatcher's SMTP connections never wait for the database or the IMAP server: every letter
the relay took is added here; each full chunk is stored (after the chunk before it) and then
filed in Sent (after the chunk before it), in tasks of their own. Sending waits only when two
chunks' worth of letters are sent but not yet stored, so a crash resends at most that many.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

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
    ) -> None:
        self._size = size
        self._store = store
        self._file = file
        self._batch: list[T] = []
        self._room = asyncio.Semaphore(2 * size)
        self._stored: asyncio.Task[S] | None = None
        self._filed: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[object]] = []

    async def reserve(self) -> None:
        """Wait for room for one more letter: fewer than two chunks sent but not yet stored."""
        await self._room.acquire()

    def unreserve(self) -> None:
        """Give back the room of a letter that was not sent after all."""
        self._room.release()

    def add(self, item: T) -> None:
        """Take a letter the relay accepted; a full chunk starts being stored."""
        self._batch.append(item)
        if len(self._batch) >= self._size:
            self._flush()

    async def finish(self) -> None:
        """Store and file what is left; raise the first failure of any chunk's recording."""
        self._flush()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def cancel(self) -> None:
        """Stop recording (the dispatcher is stopping or failed); the rows are retried later."""
        waiting = [task for task in self._tasks if not task.done()]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _flush(self) -> None:
        """Start storing the current chunk after the one before, and filing it after that one."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        stored = asyncio.create_task(self._store_after(self._stored, batch))
        filed = asyncio.create_task(self._file_after(self._filed, stored))
        self._stored, self._filed = stored, filed
        self._tasks += [stored, filed]

    async def _store_after(self, before: asyncio.Task[S] | None, batch: list[T]) -> S:
        """Store a chunk once the chunk before it is stored; then make room for more letters."""
        try:
            if before is not None:
                await asyncio.wait([before])  # its failure is reported by its own task
            return await self._store(batch)
        finally:
            for _ in batch:
                self._room.release()

    async def _file_after(self, before: asyncio.Task[None] | None, stored: asyncio.Task[S]) -> None:
        """File a chunk once it is stored and the chunk before it is filed."""
        done = await stored
        if before is not None:
            await asyncio.wait([before])
        await self._file(done)
