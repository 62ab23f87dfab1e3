"""The one home of Hyperscan: which of many fixed needles occur in a text, in one pass.

Rule conditions on a long value (a 10-20 KB body) would otherwise scan it once per needle;
Hyperscan finds every needle in a single vectorised scan, reports each needle at most once
per scan (so a common word costs nothing more than a rare one), and folds ASCII case itself,
so a case-insensitive search needs no lower-cased copy of the text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import cast

import hyperscan


def encode(text: str) -> bytes:
    """Encode a text as UTF-8, keeping lone surrogates, so any ``str`` can be searched."""
    return text.encode("utf-8", "surrogatepass")


def _pattern(needle: bytes) -> bytes:
    r"""Spell a needle as a Hyperscan expression matching exactly its bytes.

    Every byte but an ASCII letter or digit is written ``\xHH``: no byte is read as regex
    syntax, and a NUL byte (which Hyperscan's pure-literal compiler cannot take) is allowed.
    """
    return b"".join(
        bytes((byte,))
        if 48 <= byte <= 57 or 65 <= byte <= 90 or 97 <= byte <= 122
        else b"\\x%02x" % byte
        for byte in needle
    )


def _collect(index: int, _start: int, _end: int, _flags: int, found: object) -> None:
    """Note the index of a needle Hyperscan found (once per scan, by ``HS_FLAG_SINGLEMATCH``)."""
    cast("list[int]", found).append(index)


class MultiSearch:
    """A fixed set of non-empty needles, compiled once, searched for in UTF-8 bytes.

    UTF-8 is self-synchronising: a needle's encoding occurs in a text's encoding exactly when
    the needle occurs in the text, so searching bytes gives the answer for the strings.
    With ``caseless``, ASCII letters match either case, exactly as if the text had gone through
    ``bytes.lower()`` first (the needles must then be lower-case); other bytes match as they are.
    """

    __slots__ = ("_database", "_local", "_needles")

    def __init__(self, needles: Iterable[str], *, caseless: bool = False) -> None:
        self._needles = tuple(sorted(set(needles)))
        if any(not needle for needle in self._needles):
            raise ValueError("needles must not be empty")
        self._local = threading.local()
        self._database: hyperscan.Database | None = None
        if self._needles:
            flags = hyperscan.HS_FLAG_SINGLEMATCH
            if caseless:
                flags |= hyperscan.HS_FLAG_CASELESS
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            database.compile(
                expressions=[_pattern(encode(needle)) for needle in self._needles],
                ids=list(range(len(self._needles))),
                elements=len(self._needles),
                flags=flags,
            )
            self._database = database

    @property
    def needles(self) -> tuple[str, ...]:
        """Give the needles, sorted and without repeats."""
        return self._needles

    def present(self, data: bytes) -> set[str]:
        """Give the needles that occur in UTF-8 ``data``, overlapping ones included."""
        database = self._database
        if database is None:
            return set()
        found: list[int] = []
        database.scan(data, match_event_handler=_collect, context=found, scratch=self._scratch())
        names = self._needles
        return {names[index] for index in found}

    def _scratch(self) -> hyperscan.Scratch:
        """Give this thread's scratch space: one scan at a time may use a scratch."""
        scratch: hyperscan.Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        return scratch
