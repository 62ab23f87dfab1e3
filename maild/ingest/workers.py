"""A process pool for parsing, so a 20 MB letter never stalls the event loop of other accounts."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from maild.core.letter import ParsedLetter
from maild.errors import ParseError
from maild.ingest.parser_process import (
    DEFAULT_TIMEOUT,
    HARD_GRACE,
    parse_group,
    start_worker,
    warm,
)

GROUP_LETTERS = 8
GROUP_BYTES = 512 * 1024
#: Groups handed to the workers at once, per worker: one parsing, one ready for when it is done.
IN_FLIGHT = 2


def _groups(raws: Sequence[bytes]) -> list[tuple[int, int]]:
    """Cut letters into runs of at most 8 letters and 512 KiB: few round trips, a worker soon free."""
    groups: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, raw in enumerate(raws):
        if index > start and (index - start >= GROUP_LETTERS or size + len(raw) > GROUP_BYTES):
            groups.append((start, index))
            start, size = index, 0
        size += len(raw)
    if start < len(raws):
        groups.append((start, len(raws)))
    return groups


def default_workers() -> int:
    """Use every core: parsing is the bottleneck of ingest."""
    return max(1, os.cpu_count() or 1)


class _Group:
    """Letters waiting to be parsed in one worker call, with their futures."""

    __slots__ = ("futures", "order", "raws")

    def __init__(
        self, raws: list[bytes], futures: list[asyncio.Future[ParsedLetter]], order: int
    ) -> None:
        self.raws = raws
        self.futures = futures
        self.order = order

    def abandoned(self) -> bool:
        """Tell whether nobody waits for these letters any more (the consumer stopped)."""
        return all(future.done() for future in self.futures)


class ParserPool:
    """Parse letters in worker processes; a dead worker costs one letter's parse, never the daemon.

    Each letter gets ``timeout`` seconds: past them it fails with the reason, and a worker that
    does not answer the alarm (stuck in C code) ends itself at most ``HARD_GRACE`` seconds later.

    Groups wait here, one queue per lane (a folder), and at most IN_FLIGHT groups per worker
    are handed to the workers at a time (one parsing, one ready); the next one comes from the
    lane with the fewest groups waiting. So a folder's new letter is parsed as soon as a worker is free, instead of
    behind every queued letter of another folder's backlog.

    A push (``express``: a few letters heard in IDLE) does not wait even for that: when every
    worker is busy, it goes to one more worker kept for pushes, if ``start_push_worker`` was
    called (a daemon watching several folders, where one's backlog can hold up another's push).
    """

    def __init__(self, workers: int = 0, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.workers = workers or default_workers()
        self.timeout = timeout
        self._executor: ProcessPoolExecutor | None = None
        self._isolation = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()
        self._lanes: dict[Hashable, deque[_Group]] = {}
        self._queued = 0  # groups ever queued: the order that breaks ties between lanes
        self._express: ProcessPoolExecutor | None = None
        self._express_tasks: set[asyncio.Future[None]] = set()
        self._push_worker = False
        self._warmed: Future[None] = Future()

    def _pool(self) -> ProcessPoolExecutor:
        """Start the workers on first use; spawn, because forking a process with threads is unsafe."""
        if self._executor is None:
            self._executor = _executor(self.workers, backlog=True)
        return self._executor

    def start_push_worker(self) -> Future[None]:
        """Start the worker kept for pushes now, imports and all; the future tells when it is up."""
        self._push_worker = True
        self._express_pool()
        return self._warmed

    def _express_pool(self) -> ProcessPoolExecutor:
        """Give the worker kept for pushes, starting it (and its imports) if it is not running."""
        if self._express is None:
            self._express = _executor(1)
            self._warmed = self._express.submit(warm)
        return self._express

    def _busy(self) -> bool:
        """Tell whether every worker has its groups in hand."""
        return len(self._tasks) >= IN_FLIGHT * self.workers

    def submit(self, raw: bytes) -> asyncio.Future[ParsedLetter]:
        """Start parsing one letter now and give a future."""
        return self.submit_many([raw])[0]

    def submit_many(
        self, raws: Sequence[bytes], *, lane: Hashable | None = None, express: bool = False
    ) -> list[asyncio.Future[ParsedLetter]]:
        """Queue letters for parsing, a few per worker call, and give one future per letter in order.

        Letters of one ``lane`` are parsed in the order given; without a lane the call is a
        lane of its own. ``express`` letters (one group at most) skip the queue when every
        worker is busy and the push worker is free.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ParsedLetter]] = [loop.create_future() for _ in raws]
        if not raws:
            return futures  # an empty lane would have no oldest group to rank it by
        if (
            express
            and self._push_worker
            and self._busy()
            and not self._express_tasks
            and len(_groups(raws)) == 1
        ):
            self._start_express(loop, list(raws), futures)
            return futures
        queue = self._lanes.setdefault(object() if lane is None else lane, deque())
        for start, end in _groups(raws):
            self._queued += 1
            queue.append(_Group(list(raws[start:end]), futures[start:end], self._queued))
        self._dispatch(loop)
        return futures

    def _start_express(
        self,
        loop: asyncio.AbstractEventLoop,
        raws: list[bytes],
        futures: list[asyncio.Future[ParsedLetter]],
    ) -> None:
        """Parse a push on the worker kept for pushes."""
        task = asyncio.ensure_future(self._run_group(loop, raws, futures, express=True))
        self._express_tasks.add(task)
        task.add_done_callback(self._express_tasks.discard)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand groups to idle workers, taking each from the lane with the fewest waiting."""
        while len(self._tasks) < IN_FLIGHT * self.workers and (group := self._next_group()):
            task = asyncio.ensure_future(self._run_group(loop, group.raws, group.futures))
            self._tasks.add(task)
            task.add_done_callback(lambda done: self._group_done(loop, done))

    def _next_group(self) -> _Group | None:
        """Take the next group: the shortest lane's oldest, so a new letter never queues behind a backlog."""
        while self._lanes:
            lane = min(
                self._lanes, key=lambda key: (len(self._lanes[key]), self._lanes[key][0].order)
            )
            queue = self._lanes[lane]
            group = queue.popleft()
            if not queue:
                del self._lanes[lane]
            if not group.abandoned():
                return group
        return None

    def _group_done(self, loop: asyncio.AbstractEventLoop, task: asyncio.Future[None]) -> None:
        """Free the worker's slot and hand it the next group."""
        self._tasks.discard(task)
        if not loop.is_closed():
            self._dispatch(loop)

    async def _run_group(
        self,
        loop: asyncio.AbstractEventLoop,
        raws: list[bytes],
        futures: list[asyncio.Future[ParsedLetter]],
        *,
        express: bool = False,
    ) -> None:
        """Parse a group in one worker call and settle each letter's future."""
        executor = self._express_pool() if express else self._pool()
        try:
            results = await loop.run_in_executor(executor, parse_group, raws, self.timeout)
        except BrokenProcessPool:
            if self._executor is executor:  # not a pool another group already replaced
                self._reset()
            elif self._express is executor:  # the next push starts a fresh one
                self._express = None
                executor.shutdown(wait=False, cancel_futures=True)
            await self._settle_isolated(loop, raws, futures)
            return
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        for future, result in zip(futures, results, strict=True):
            if future.done():
                continue  # the consumer stopped waiting
            if isinstance(result, str):
                future.set_exception(ParseError(result))
            else:
                future.set_result(result)

    async def _settle_isolated(
        self,
        loop: asyncio.AbstractEventLoop,
        raws: list[bytes],
        futures: list[asyncio.Future[ParsedLetter]],
    ) -> None:
        """After a worker died, parse each letter of its group alone, so only the guilty one fails."""
        for raw, future in zip(raws, futures, strict=True):
            if future.done():
                continue
            try:
                async with self._isolation:
                    parsed = await self._parse_isolated(loop, raw)
            except ParseError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(parsed)

    async def _parse_isolated(self, loop: asyncio.AbstractEventLoop, raw: bytes) -> ParsedLetter:
        """Parse in a process of its own, so a letter that kills its parser is pinned down exactly."""
        executor = _executor(1)
        try:
            [result] = await loop.run_in_executor(executor, parse_group, [raw], self.timeout)
        except BrokenProcessPool as exc:
            raise ParseError(
                "the parser process died on this letter (it crashed, ran out of memory, "
                f"or was stuck past daemon.parse_timeout_seconds + {HARD_GRACE:g} s)"
            ) from exc
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        if isinstance(result, str):
            raise ParseError(result)
        return result

    async def parse(self, raw: bytes) -> ParsedLetter:
        """Parse one letter off the loop; raise ParseError when it cannot be parsed."""
        return await self.submit(raw)

    def _reset(self) -> None:
        """Throw a broken pool away; the next letter starts a fresh one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        """Stop the workers; letters still queued are cancelled."""
        lanes, self._lanes = self._lanes, {}
        for queue in lanes.values():
            for group in queue:
                for future in group.futures:
                    future.cancel()
        for executor in (self._executor, self._express):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._express = None


def _executor(workers: int, *, backlog: bool = False) -> ProcessPoolExecutor:
    """Make a pool of parser processes; spawned, because forking a process with threads is unsafe.

    ``backlog``: the pool's own workers, which take a lower CPU priority than maild; the
    worker kept for pushes and one parsing a letter alone after a crash do not.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_worker,
        initargs=(backlog,),
    )
