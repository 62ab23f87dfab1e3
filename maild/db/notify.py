"""PostgreSQL LISTEN: wake the dispatcher the moment the CRM inserts an outbox row (and the
lease keeper the moment another process gives folders back)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from maild.logging import get_logger

log = get_logger(__name__)

CHANNEL = "maild_outbox"


async def listen(
    engine: AsyncEngine,
    on_notify: Callable[[], None],
    stop: asyncio.Event,
    *,
    retry_seconds: float = 5.0,
    channel: str = CHANNEL,
) -> None:
    """Call ``on_notify`` on every notification until stopped; reconnect when the link drops."""
    if engine.dialect.name != "postgresql":
        return
    while not stop.is_set():
        try:
            await _listen_once(engine, on_notify, stop, channel)
        except Exception as exc:  # the database went away: polling still covers, try again
            log.warning("listen_failed", channel=channel, error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)


async def _listen_once(
    engine: AsyncEngine, on_notify: Callable[[], None], stop: asyncio.Event, channel: str
) -> None:
    """Hold one connection listening on the channel until stopped."""

    lost = asyncio.Event()

    def callback(*_args: Any) -> None:
        on_notify()

    def terminated(*_args: Any) -> None:
        lost.set()

    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        driver.add_termination_listener(terminated)
        await driver.add_listener(channel, callback)
        log.info("listening", channel=channel)
        on_notify()  # rows inserted while nobody listened
        await _first(stop, lost)
        if lost.is_set():  # a restart or a cut link: nothing would ever arrive on it again
            await conn.invalidate()
            raise ConnectionError(f"the LISTEN connection for {channel} was closed")
        await driver.remove_listener(channel, callback)


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
