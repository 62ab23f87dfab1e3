"""Needles shared by every condition on one view of the letter, found in one pass per letter.

While a rule set compiles, each ``contains`` operand and each literal a regex requires is
registered with the view it looks at (``body:text``, ``header:subject``, ...), by how that view
is compared: raw, folded like ``str.lower`` (``contains``), or folded like ``re.IGNORECASE``
(a regex prefilter). The first condition that needs them on a letter searches each value of
the view once for all of them and memoises, per value, the set of needles present; every
condition then only looks up that set.
"""

from __future__ import annotations

from collections.abc import Callable

from maild.core.decision import LetterFacts
from maild.rules.multisearch import MultiSearch, encode

Values = tuple[str, ...]
Encoded = tuple[bytes, ...]
"""The values of a view encoded as UTF-8 (lone surrogates kept), in order."""
Found = tuple[set[str], ...]
"""Per value of a view, in order: the registered needles present in it."""

# Characters that match an ASCII letter under re.IGNORECASE but do not lower-case to it.
_REGEX_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})
# The non-ASCII characters that lower-case (or IGNORECASE-match) to an ASCII letter: searched
# for along with the needles, so spotting them costs no extra scan.
_TO_ASCII = frozenset(("\u0130", "\u0131", "\u017f", "\u212a"))


def fold_for_regex(value: str) -> str:
    """Lower-case a value, first mapping the three characters lower() would not fold to ASCII."""
    if "\u0130" in value or "\u0131" in value or "\u017f" in value:
        value = value.translate(_REGEX_FOLD)
    return value.lower()


class ViewNeedles:
    """The needles registered on one view, and the per-letter search for them.

    Needles are fixed once the first letter is searched: a rule set compiles completely
    before it evaluates a letter.
    """

    def __init__(
        self,
        view: Callable[[LetterFacts], Values],
        utf8: Callable[[LetterFacts], Encoded | None] | None = None,
    ) -> None:
        self._view = view
        self._utf8 = utf8
        self._raw: set[str] = set()
        self._folded: set[str] = set()
        self._raw_search: MultiSearch | None = None
        self._folded_search: MultiSearch | None = None
        self._ascii_folded = True
        # Memo keys of this instance: (raw, lower-folded, regex-folded) found sets.
        self.raw_key = object()
        self.lower_key = object()
        self.regex_key = object()
        self._encoded_key = object()

    def add_raw(self, needles: tuple[str, ...]) -> None:
        """Register needles compared with the raw values."""
        self._check_open()
        self._raw.update(needles)

    def add_folded(self, needles: tuple[str, ...]) -> None:
        """Register lower-case needles compared with folded values (either folding)."""
        self._check_open()
        self._folded.update(needles)

    def _check_open(self) -> None:
        if self._raw_search is not None or self._folded_search is not None:
            raise RuntimeError("needles are fixed once a letter has been searched")

    def raw(self, facts: LetterFacts) -> Found:
        """Give, per raw value, the raw needles present (memoised per letter)."""
        found: Found | None = facts.memo.get(self.raw_key)
        if found is None:
            search = self._raw_search
            if search is None:
                search = self._raw_search = MultiSearch(self._raw)
            found = facts.memo[self.raw_key] = tuple(map(search.present, self._encoded(facts)))
        return found

    def _encoded(self, facts: LetterFacts) -> Encoded:
        """Give the view's values as UTF-8, from the letter when it has them (memoised)."""
        encoded: Encoded | None = facts.memo.get(self._encoded_key)
        if encoded is None:
            if self._utf8 is not None:
                encoded = self._utf8(facts)
            if encoded is None:
                encoded = tuple(encode(value) for value in self._view(facts))
            facts.memo[self._encoded_key] = encoded
        return encoded

    def lower(self, facts: LetterFacts) -> Found:
        """Give, per value folded by ``str.lower``, the folded needles present."""
        found: Found | None = facts.memo.get(self.lower_key)
        if found is None:
            self._search_folded(facts)
            found = facts.memo[self.lower_key]
        return found

    def regex(self, facts: LetterFacts) -> Found:
        """Give, per value folded like ``re.IGNORECASE``, the folded needles present."""
        found: Found | None = facts.memo.get(self.regex_key)
        if found is None:
            self._search_folded(facts)
            found = facts.memo[self.regex_key]
        return found

    def _search_folded(self, facts: LetterFacts) -> None:
        search = self._folded_search
        if search is None:
            search = self._folded_search = MultiSearch(self._folded | _TO_ASCII, caseless=True)
            self._ascii_folded = all(needle.isascii() for needle in self._folded)
        lowers: list[set[str]] = []
        regexes: list[set[str]] = []
        for value, data in zip(self._view(facts), self._encoded(facts), strict=True):
            lower, regex = self._fold_found(search, value, data)
            lowers.append(lower)
            regexes.append(regex)
        facts.memo[self.lower_key] = tuple(lowers)
        facts.memo[self.regex_key] = tuple(regexes)

    def _fold_found(
        self, search: MultiSearch, value: str, data: bytes
    ) -> tuple[set[str], set[str]]:
        """Search one value (``data`` is its UTF-8) for the folded needles, under both foldings.

        When every needle is ASCII and the value holds no character that folds to an ASCII
        letter, both foldings place exactly the value's ASCII letters, lower-cased, where they
        were: the search's own ASCII case folding over the UTF-8 bytes gives the same answer.
        Those characters are needles too, so finding one sends the value to the exact foldings.
        """
        if self._ascii_folded:
            found = search.present(data)
            if found.isdisjoint(_TO_ASCII):
                return found, found
        found = search.present(encode(value.lower()))
        if "\u0130" in value or "\u0131" in value or "\u017f" in value:
            return found, search.present(encode(fold_for_regex(value)))
        return found, found
