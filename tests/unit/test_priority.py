"""Pushes go ahead of backlogs: a backlog gives way while a push is taken in, within a bound."""

from __future__ import annotations

import asyncio

import pytest

from maild.ingest import priority
from maild.ingest.priority import Priority


async def test_give_way_returns_at_once_without_a_push() -> None:
    """No push in progress: a backlog goes on without waiting for anything."""
    gate = Priority()
    assert not gate.pushing
    await asyncio.wait_for(gate.give_way(), 5)


async def test_a_backlog_waits_until_the_pushes_are_done() -> None:
    """While two pushes overlap, the backlog waits; it goes on when the last one ends."""
    gate = Priority()
    order: list[str] = []

    async def backlog() -> None:
        await gate.give_way()
        order.append("backlog")

    with gate.push():
        with gate.push():
            waiting = asyncio.ensure_future(backlog())
            await asyncio.sleep(0)
            order.append("push 2 done")
        await asyncio.sleep(0)
        assert gate.pushing
        order.append("push 1 done")
    await asyncio.wait_for(waiting, 5)
    assert order == ["push 2 done", "push 1 done", "backlog"]
    assert not gate.pushing


async def test_pushes_never_starve_a_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that never ends holds a backlog back only for the bound, then it goes on."""
    monkeypatch.setattr(priority, "MAX_YIELD_SECONDS", 0.01)
    gate = Priority()
    with gate.push():
        await asyncio.wait_for(gate.give_way(), 5)
        assert gate.pushing
