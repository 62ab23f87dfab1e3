"""Let a folder's few pushed letters go ahead of other folders' backlogs, within a bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

#: The most letters an IDLE wake-up may bring to count as a push, not a backlog.
PUSH_LETTERS = 8
#: The longest a backlog waits for pushes at one step: pushes never starve a backlog.
MAX_YIELD_SECONDS = 0.25


class Priority:
    """Shared by every folder of a process: is a push being taken in right now?

    While one is, a folder working through a backlog waits before its next fetch and its next
    store, so the pushed letter meets at most the fetch, parse and transaction already under
    way, not the queue behind them; each wait ends after MAX_YIELD_SECONDS at the latest.
    """

    def __init__(self) -> None:
        self._pushes = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @property
    def pushing(self) -> bool:
        """Tell whether a push is being taken in."""
        return self._pushes > 0

    @contextlib.contextmanager
    def push(self) -> Iterator[None]:
        """Mark a push in progress for the duration of the block."""
        self._pushes += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._pushes -= 1
            if not self._pushes:
                self._clear.set()

    async def give_way(self) -> None:
        """Wait, within the bound, until no push is in progress; return at once when none is."""
        if self._pushes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear.wait(), MAX_YIELD_SECONDS)
