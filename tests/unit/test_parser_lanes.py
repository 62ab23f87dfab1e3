"""The parser pool's lanes: a folder's new letter is parsed before another folder's queued backlog."""

from __future__ import annotations

import asyncio
import os
import signal

from maild.ingest.workers import GROUP_LETTERS, IN_FLIGHT, ParserPool
from maild.testing.samples import letter


def raw(n: int) -> bytes:
    """A small distinct letter."""
    return letter(sender=("A", "a@x.example"), to="s@corp.example", subject=f"s{n}", body="b")


async def test_a_new_lane_goes_before_a_queued_backlog() -> None:
    """With one worker busy on a backlog, a letter of another lane is parsed next, not last."""
    pool = ParserPool(1)
    finished: list[str] = []
    try:
        backlog = pool.submit_many([raw(n) for n in range(GROUP_LETTERS * 6)], lane="backlog")
        for n, future in enumerate(backlog):
            future.add_done_callback(lambda _, n=n: finished.append(f"backlog{n}"))
        [fresh] = pool.submit_many([raw(999)], lane="push")
        fresh.add_done_callback(lambda _: finished.append("push"))
        assert (await fresh).subject == "s999"
        parsed = await asyncio.gather(*backlog)
    finally:
        pool.close()
    assert [p.subject for p in parsed] == [f"s{n}" for n in range(GROUP_LETTERS * 6)]
    # the first backlog groups were already with the worker; the new letter came right after
    assert finished.index("push") == GROUP_LETTERS * IN_FLIGHT
    assert [name for name in finished if name != "push"] == [
        f"backlog{n}" for n in range(GROUP_LETTERS * 6)
    ]


async def test_letters_without_a_lane_are_all_parsed_once_each() -> None:
    """Calls without a lane are lanes of their own; every letter gets its own result."""
    pool = ParserPool(2)
    try:
        calls = [pool.submit_many([raw(10 * c + n) for n in range(c + 1)]) for c in range(5)]
        results = [[p.subject for p in await asyncio.gather(*call)] for call in calls]
    finally:
        pool.close()
    assert results == [[f"s{10 * c + n}" for n in range(c + 1)] for c in range(5)]


async def test_close_cancels_letters_still_queued() -> None:
    """Letters no worker took yet are cancelled by close, so nobody waits for them forever."""
    pool = ParserPool(1)
    futures = pool.submit_many([raw(n) for n in range(GROUP_LETTERS * 3)], lane="backlog")
    pool.close()
    assert all(future.cancelled() for future in futures[GROUP_LETTERS * IN_FLIGHT :])
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)


async def test_abandoned_letters_are_not_parsed() -> None:
    """A queued group whose futures were all cancelled (the folder stopped) is skipped."""
    pool = ParserPool(1)
    try:
        first = pool.submit_many([raw(1)], lane="a")
        dropped = pool.submit_many([raw(2), raw(3)], lane="b")
        for future in dropped:
            future.cancel()
        last = pool.submit_many([raw(4)], lane="c")
        assert (await first[0]).subject == "s1"
        assert (await last[0]).subject == "s4"
        assert all(future.cancelled() for future in dropped)
    finally:
        pool.close()


async def test_an_empty_submission_leaves_no_lane_behind() -> None:
    """Nothing to parse (every letter of a fetch expunged meanwhile) queues nothing."""
    pool = ParserPool(1)
    try:
        assert pool.submit_many([], lane="empty") == []
        assert (await pool.submit_many([raw(5)], lane="other")[0]).subject == "s5"
    finally:
        pool.close()


async def test_a_push_goes_to_the_push_worker_when_every_worker_is_busy() -> None:
    """With the push worker started, a pushed letter does not wait for the groups in hand."""
    pool = ParserPool(1)
    finished: list[str] = []
    try:
        await asyncio.wrap_future(pool.start_push_worker())  # as a daemon starts it, up front
        backlog = pool.submit_many([raw(n) for n in range(GROUP_LETTERS * 6)], lane="backlog")
        for n, future in enumerate(backlog):
            future.add_done_callback(lambda _, n=n: finished.append(f"backlog{n}"))
        [pushed] = pool.submit_many([raw(999)], lane="push", express=True)
        pushed.add_done_callback(lambda _: finished.append("push"))
        assert (await pushed).subject == "s999"
        parsed = await asyncio.gather(*backlog)
    finally:
        pool.close()
    assert [p.subject for p in parsed] == [f"s{n}" for n in range(GROUP_LETTERS * 6)]
    # the regular worker had two groups in hand; the push did not wait for both of them
    assert finished.index("push") < GROUP_LETTERS * IN_FLIGHT


async def test_a_push_without_a_push_worker_takes_the_lanes() -> None:
    """Without the push worker (a single folder), ``express`` letters queue like any other lane."""
    pool = ParserPool(1)
    try:
        backlog = pool.submit_many([raw(n) for n in range(GROUP_LETTERS * 3)], lane="backlog")
        [pushed] = pool.submit_many([raw(999)], lane="push", express=True)
        assert (await pushed).subject == "s999"
        await asyncio.gather(*backlog)
    finally:
        pool.close()
    assert pool._express is None


async def test_workers_keep_parsing_through_a_terminals_ctrl_c() -> None:
    """SIGINT reaches the parsers too when a terminal's Ctrl-C hits maild's process group."""
    pool = ParserPool(1)
    try:
        assert (await pool.parse(raw(1))).subject == "s1"
        executor = pool._executor
        assert executor is not None
        for pid in list(executor._processes):
            os.kill(pid, signal.SIGINT)
        assert (await pool.parse(raw(2))).subject == "s2"
        assert set(executor._processes) and pool._executor is executor
    finally:
        pool.close()


def test_backlog_workers_yield_the_cores_and_the_push_worker_does_not() -> None:
    """The pool's workers run at a lower CPU priority than maild; the one kept for pushes does not."""
    from maild.ingest import workers
    from maild.ingest.parser_process import BACKLOG_NICE

    mine = os.nice(0)
    expected = {True: min(mine + BACKLOG_NICE, 19), False: mine}
    for backlog, niceness in expected.items():
        executor = workers._executor(1, backlog=backlog)
        try:
            assert executor.submit(os.nice, 0).result(timeout=60) == niceness
        finally:
            executor.shutdown()
