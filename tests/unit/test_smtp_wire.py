"""DATA bytes: one pass over the letter gives what aiosmtplib's regular expressions gave."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from maild.outbox.smtp import wire_data

PIECES = [b"a", b"line", b".", b"..", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\xd0\x96", b" ", b"From "]


def aiosmtplib_data(raw: bytes) -> tuple[bytes, int]:
    """What ``sendmail`` sends after DATA, and the size it declares."""
    lines = normalize_message_line_endings(raw)
    return PERIOD_REGEX.sub(b"..", lines) + b".\r\n", len(lines)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b".",
        b"Subject: x\r\n\r\n.hidden\r\n..\r\n.\r\n",
        b"Subject: x\n\n.bare LF\n",
        b"no final line end",
        b"\r\n.\r\n",
        b"bare CR\r.dot\r",
    ],
)
def test_known_letters(raw: bytes) -> None:
    """Leading dots, bare CR and LF, no final line end: the same bytes and size."""
    assert wire_data(raw) == aiosmtplib_data(raw)


def test_random_letters() -> None:
    """Random mixes of dots and line ends of every kind give the same bytes and size."""
    rng = random.Random(7)
    for _ in range(3000):
        raw = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        assert wire_data(raw) == aiosmtplib_data(raw), raw
