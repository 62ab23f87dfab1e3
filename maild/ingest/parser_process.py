"""What runs inside a parser process: kept free of asyncio and the daemon, so each worker stays small.

The pool (``maild.ingest.workers``) names these functions when it starts a worker and hands it
letters; a spawned worker imports this module, the parser and nothing else of maild.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO

from maild.errors import ParseError
from maild.ingest.parse import HashedLetter, parse_and_hash
from maild.memory import unmap_big_blocks

#: Seconds one letter may take to parse unless the config says otherwise.
DEFAULT_TIMEOUT = 120.0
#: Seconds past the timeout after which a worker stuck in C code (deaf to the alarm) is ended.
HARD_GRACE = 10.0

#: How much less CPU priority the pool's workers take than maild (os.nice). When a backlog
#: keeps every core busy parsing, maild's own process, the database and the worker kept for
#: pushes still run first, so a new letter elsewhere is not held up by the backlog's parsing.
BACKLOG_NICE = 5

_sink: IO[str] | None = None


def start_worker(backlog: bool = False) -> None:
    """Silence mail-parser in a worker (defects are recorded on the letter) and tie it to maild.

    Ctrl-C in a terminal interrupts the whole process group: the daemon then finishes the
    letters in flight, which needs its parsers, so they ignore SIGINT (they end with maild).
    A ``backlog`` worker yields the cores (``BACKLOG_NICE``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if backlog:
        _yield_the_cores()
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)
    unmap_big_blocks()  # a big letter's parse is given back, not kept by an idle worker
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent", daemon=True).start()


def _yield_the_cores() -> None:
    """Lower this worker's CPU priority; where that is refused, parse at maild's priority."""
    with contextlib.suppress(OSError):
        os.nice(BACKLOG_NICE)


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Exit when maild is gone, even by kill -9, so no worker outlives it and piles up on restarts."""
    parent.join()
    os._exit(1)


def _dump_sink() -> IO[str]:
    """Give where faulthandler writes the stack of a stuck worker it ends: nowhere (the log says why)."""
    global _sink  # noqa: PLW0603 - one per process, opened on first use
    if _sink is None:
        _sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return _sink


class _Overtime(BaseException):
    """The alarm in a worker: a BaseException, so no parser's ``except Exception`` swallows it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Overtime


def warm() -> None:
    """Do nothing: submitted once to start a worker (and its imports) before it is needed."""


def parse_group(raws: list[bytes], timeout: float) -> list[HashedLetter | str]:
    """Parse and hash letters in a worker, each within ``timeout`` seconds; a failure becomes its reason."""
    return _guarded_all(parse_and_hash, raws, timeout)


def _guarded(
    parse: Callable[[bytes], HashedLetter], raw: bytes, timeout: float
) -> HashedLetter | str:
    """Run one parse under the alarm and the hard deadline of ``_guarded_all``."""
    return _guarded_all(parse, [raw], timeout)[0]


def _guarded_all(
    parse: Callable[[bytes], HashedLetter], raws: list[bytes], timeout: float
) -> list[HashedLetter | str]:
    """Run parses under an alarm each (Python code) and a hard deadline that ends the process (C code).

    The hard deadline (faulthandler's watchdog thread) is armed for ``timeout + HARD_GRACE``
    and re-armed before a letter only when half the grace has passed since it was last armed:
    arming it is a thread start and stop, which cost a fifth of a small letter's parse. So a
    parse deaf to the alarm ends its process between half the grace and the whole grace after
    its timeout.
    """
    if threading.current_thread() is not threading.main_thread():
        return [_reason_or(parse, raw) for raw in raws]  # signals reach the main thread only
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    armed_at: float | None = None
    try:
        results: list[HashedLetter | str] = []
        for raw in raws:
            now = time.monotonic()
            if armed_at is None or now - armed_at > HARD_GRACE / 2:
                faulthandler.dump_traceback_later(
                    timeout + HARD_GRACE, exit=True, file=_dump_sink()
                )
                armed_at = now
            results.append(_alarmed(parse, raw, timeout))
        return results
    finally:
        if armed_at is not None:
            faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def _alarmed(
    parse: Callable[[bytes], HashedLetter], raw: bytes, timeout: float
) -> HashedLetter | str:
    """Run one parse with the alarm set to its timeout; give the letter or why it failed."""
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return parse(raw)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Overtime:
        return f"parsing took longer than {timeout:g} s (daemon.parse_timeout_seconds)"
    except ParseError as exc:
        return str(exc)


def _reason_or(parse: Callable[[bytes], HashedLetter], raw: bytes) -> HashedLetter | str:
    """Parse without a time limit; give the letter or why it failed."""
    try:
        return parse(raw)
    except ParseError as exc:
        return str(exc)
