"""The parse timeout: a letter that keeps the parser busy fails with the reason; a stuck worker ends."""

from __future__ import annotations

import multiprocessing

import pytest

from maild.errors import ParseError
from maild.ingest import parser_process
from maild.ingest.parse import HashedLetter
from maild.ingest.workers import ParserPool
from maild.testing.samples import letter

# A part header whose quotes the email package reads in quadratic time: minutes of parsing.
SLOW = (
    b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
    b'Content-Type: text/plain; a="' + b';"' * 500000 + b"\r\n\r\nx\r\n--p--\r\n"
)


async def test_slow_letter_fails_with_the_timeout_and_the_worker_goes_on() -> None:
    """Past the timeout the letter is a ParseError saying so, and the next letter parses."""
    pool = ParserPool(1, timeout=0.5)
    try:
        with pytest.raises(
            ParseError, match=r"longer than 0\.5 s \(daemon\.parse_timeout_seconds\)"
        ):
            await pool.parse(SLOW)
        raw = letter(sender=("A", "a@x.example"), to="s@corp.example", subject="after", body="b")
        assert (await pool.parse(raw)).subject == "after"
    finally:
        pool.close()


def _stuck_in_c(raw: bytes) -> HashedLetter:
    """Spin in C code, where no signal handler runs: only the hard deadline can end it."""
    sum(range(10**15))
    return HashedLetter()


def _run_stuck() -> None:
    """Run in a child process: a parse stuck in C under a short timeout and grace."""
    parser_process.HARD_GRACE = 0.5
    parser_process._guarded(_stuck_in_c, b"", 0.2)


def test_worker_stuck_in_c_code_ends_itself() -> None:
    """A parse deaf to the alarm ends its process shortly after timeout + grace (status 1)."""
    child = multiprocessing.get_context("spawn").Process(target=_run_stuck)
    child.start()
    child.join(60)
    stuck = child.is_alive()
    if stuck:
        child.kill()
        child.join()
    assert not stuck and child.exitcode == 1
