"""The one home of ahocorasick-rs: which of many fixed needles occur in a text, in one pass.

Rule conditions on a long value (a 10-20 KB body) would otherwise scan it once per needle;
an Aho-Corasick automaton finds every needle in a single scan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ahocorasick_rs import BytesAhoCorasick

# Searches before the first look at which needles are frequent, and between later looks.
_FIRST_LOOK = 64
_LOOK_EVERY = 4096
# A needle found in at least this share of the searches since the last look is frequent.
_FREQUENT = 0.5


def encode(text: str) -> bytes:
    """Encode a text as UTF-8, keeping lone surrogates, so any ``str`` can be searched."""
    return text.encode("utf-8", "surrogatepass")


class _Automaton:
    """The needles searched by the automaton, in its pattern order, and the automaton."""

    __slots__ = ("automaton", "needles")

    def __init__(self, needles: tuple[str, ...]) -> None:
        self.needles = needles
        self.automaton = BytesAhoCorasick([encode(n) for n in needles]) if needles else None


class MultiSearch:
    """A fixed set of non-empty needles, compiled once, searched for in UTF-8 bytes.

    UTF-8 is self-synchronising: a needle's encoding occurs in a text's encoding exactly when
    the needle occurs in the text, so searching bytes gives the answer for the strings.
    One-byte needles (``5``, ``-``) are tested with ``in`` instead: a frequent one would
    otherwise cost the automaton a match at every occurrence. For the same reason a needle
    found in most texts searched (a common word that a regex requires) is moved out of the
    automaton, now and then, and tested with ``in``, which stops at its first occurrence; the
    answer is the same either way, only its cost changes.
    """

    __slots__ = (
        "_frequent",
        "_long",
        "_look_at",
        "_needles",
        "_seen",
        "_single",
        "_state",
        "_window",
    )

    def __init__(self, needles: Iterable[str]) -> None:
        self._needles = tuple(sorted(set(needles)))
        if any(not needle for needle in self._needles):
            raise ValueError("needles must not be empty")
        encoded = [(needle, encode(needle)) for needle in self._needles]
        self._single = tuple((needle, data) for needle, data in encoded if len(data) == 1)
        self._long = tuple(needle for needle, data in encoded if len(data) > 1)
        # (automaton over the long needles that are not frequent, the frequent ones with their
        # encodings): swapped as one object, so a search always sees a consistent pair.
        self._state: tuple[_Automaton, tuple[tuple[str, bytes], ...]] = (_Automaton(self._long), ())
        self._seen: Counter[str] = Counter()
        self._window = 0  # searches since the last look
        self._look_at = _FIRST_LOOK
        self._frequent: frozenset[str] = frozenset()

    @property
    def needles(self) -> tuple[str, ...]:
        """Give the needles, sorted and without repeats."""
        return self._needles

    @property
    def frequent(self) -> frozenset[str]:
        """Give the needles currently tested with ``in`` for being found in most texts."""
        return self._frequent

    def present(self, data: bytes) -> set[str]:
        """Give the needles that occur in UTF-8 ``data``, overlapping ones included."""
        compiled, frequent = self._state
        automaton = compiled.automaton
        if automaton is None:
            found: set[str] = set()
        else:
            names = compiled.needles
            found = {names[index] for index, _, _ in automaton.find_matches_as_indexes(data, True)}
        for needle, encoded in frequent:
            if encoded in data:
                found.add(needle)
        if self._long:
            self._count(found)
        for needle, byte in self._single:
            if byte in data:
                found.add(needle)
        return found

    def _count(self, found: set[str]) -> None:
        """Count what the long needles found, and now and then re-sort the frequent ones."""
        if found:
            self._seen.update(found)
        self._window += 1
        if self._window < self._look_at:
            return
        threshold = self._window * _FREQUENT
        frequent = frozenset(needle for needle in self._long if self._seen[needle] >= threshold)
        self._seen.clear()
        self._window = 0
        self._look_at = _LOOK_EVERY
        if frequent != self._frequent:
            self._frequent = frequent
            rest = tuple(needle for needle in self._long if needle not in frequent)
            pairs = tuple((needle, encode(needle)) for needle in self._long if needle in frequent)
            self._state = (_Automaton(rest), pairs)
