"""The event-loop heartbeat reports a step that blocks the loop."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from maild.watchdog import watch_loop


async def _run_heartbeat(block: float) -> list[dict[str, object]]:
    """Run the heartbeat around a loop blocked for ``block`` seconds; give what it logged."""
    with capture_logs() as logs:
        task = asyncio.create_task(watch_loop(interval=0.01, threshold=0.1))
        await asyncio.sleep(0.05)
        time.sleep(block)  # a blocking call on the event loop, as a bug would make
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return [entry for entry in logs if entry["event"] == "event_loop_blocked"]


async def test_a_blocked_loop_is_reported() -> None:
    """A 300 ms block is logged as a warning with how late the heartbeat woke."""
    [entry, *_] = await _run_heartbeat(0.3)
    assert entry["log_level"] == "warning"
    assert isinstance(entry["late_ms"], int) and entry["late_ms"] >= 200
