"""The one home of ahocorasick-rs: which of many fixed needles occur in a text, in one pass.

Rule conditions on a long value (a 10-20 KB body) would otherwise scan it once per needle;
an Aho-Corasick automaton finds every needle in a single scan.
"""

from __future__ import annotations

from collections.abc import Iterable

from ahocorasick_rs import BytesAhoCorasick


def encode(text: str) -> bytes:
    """Encode a text as UTF-8, keeping lone surrogates, so any ``str`` can be searched."""
    return text.encode("utf-8", "surrogatepass")


class MultiSearch:
    """A fixed set of non-empty needles, compiled once, searched for in UTF-8 bytes.

    UTF-8 is self-synchronising: a needle's encoding occurs in a text's encoding exactly when
    the needle occurs in the text, so searching bytes gives the answer for the strings.
    One-byte needles (``5``, ``-``) are tested with ``in`` instead: a frequent one would
    otherwise cost the automaton a match at every occurrence.
    """

    __slots__ = ("_automaton", "_long", "_needles", "_single")

    def __init__(self, needles: Iterable[str]) -> None:
        self._needles = tuple(sorted(set(needles)))
        if any(not needle for needle in self._needles):
            raise ValueError("needles must not be empty")
        encoded = [(needle, encode(needle)) for needle in self._needles]
        self._single = tuple((needle, data) for needle, data in encoded if len(data) == 1)
        self._long = tuple(needle for needle, data in encoded if len(data) > 1)
        self._automaton = (
            BytesAhoCorasick([data for _, data in encoded if len(data) > 1]) if self._long else None
        )

    @property
    def needles(self) -> tuple[str, ...]:
        """Give the needles, sorted and without repeats."""
        return self._needles

    def present(self, data: bytes) -> set[str]:
        """Give the needles that occur in UTF-8 ``data``, overlapping ones included."""
        automaton = self._automaton
        if automaton is None:
            found: set[str] = set()
        else:
            long = self._long
            found = {long[index] for index, _, _ in automaton.find_matches_as_indexes(data, True)}
        for needle, byte in self._single:
            if byte in data:
                found.add(needle)
        return found
