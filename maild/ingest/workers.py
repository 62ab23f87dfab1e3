"""A process pool for parsing, so a 20 MB letter never stalls the event loop of other accounts."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from maild.core.letter import ParsedLetter
from maild.errors import ParseError
from maild.ingest.parse import parse_letter


def _quiet_worker() -> None:
    """Silence mail-parser's own warnings in workers: every defect is recorded on the letter instead."""
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)


def default_workers() -> int:
    """Use every core: parsing is the bottleneck of ingest."""
    return max(1, os.cpu_count() or 1)


class ParserPool:
    """Parse letters in worker processes; a dead worker costs one letter's parse, never the daemon."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or default_workers()
        self._executor: ProcessPoolExecutor | None = None
        self._isolation = asyncio.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        """Start the workers on first use; spawn, because forking a process with threads is unsafe."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_quiet_worker,
            )
        return self._executor

    def submit(self, raw: bytes) -> asyncio.Future[ParsedLetter]:
        """Start parsing now and give a future, so fetching overlaps with parsing."""
        loop = asyncio.get_running_loop()
        return asyncio.ensure_future(self._parse(loop, raw))

    async def _parse(self, loop: asyncio.AbstractEventLoop, raw: bytes) -> ParsedLetter:
        try:
            return await loop.run_in_executor(self._pool(), parse_letter, raw)
        except BrokenProcessPool:
            self._reset()
        # A dead worker fails every letter in flight; only the guilty one should stay failed.
        async with self._isolation:
            return await self._parse_isolated(loop, raw)

    async def _parse_isolated(self, loop: asyncio.AbstractEventLoop, raw: bytes) -> ParsedLetter:
        """Parse in a process of its own, so a letter that kills its parser is pinned down exactly."""
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_quiet_worker,
        )
        try:
            return await loop.run_in_executor(executor, parse_letter, raw)
        except BrokenProcessPool as exc:
            raise ParseError("the parser process died on this letter") from exc
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    async def parse(self, raw: bytes) -> ParsedLetter:
        """Parse one letter off the loop; raise ParseError when it cannot be parsed."""
        return await self.submit(raw)

    def _reset(self) -> None:
        """Throw a broken pool away; the next letter starts a fresh one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        """Stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
