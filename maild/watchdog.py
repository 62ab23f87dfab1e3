"""A heartbeat on the event loop, so a step that blocks it (a slow call in a coroutine) shows in the log."""

from __future__ import annotations

import asyncio

from maild.logging import get_logger

log = get_logger(__name__)

INTERVAL_SECONDS = 0.05
THRESHOLD_SECONDS = 0.1


async def watch_loop(
    *, interval: float = INTERVAL_SECONDS, threshold: float = THRESHOLD_SECONDS
) -> None:
    """Sleep in short steps until cancelled; warn when a step wakes more than ``threshold`` late."""
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        await asyncio.sleep(interval)
        late = loop.time() - began - interval
        if late > threshold:
            log.warning("event_loop_blocked", late_ms=round(late * 1000))
