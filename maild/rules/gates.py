"""Gates: what a letter must show for a rule to have any chance, checked for all rules at once.

While a rule set compiles, a condition may declare a gate: atoms (needles the shared search
must find in a view, or exact values of a view) of which at least one holds on every letter
the condition holds on, and the constant miss the condition gives on every letter where none
does. Per letter the engine then asks each view once which atoms hold, through dicts keyed
by needle and by value, and calls the conditions of only the rules that may hold: the others
get their gate's miss, the very result their condition would have returned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from maild.core.decision import LetterFacts
from maild.rules.needles import Found

Values = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NeedleAtom:
    """Holds when every needle is present in the view, by one shared search (``key`` names it)."""

    key: object
    search: Callable[[LetterFacts], Found]
    needles: frozenset[str]


@dataclass(frozen=True, slots=True)
class ValueAtom:
    """Holds when a value of the view (memoised under ``key``) is one of ``values``."""

    key: object
    view: Callable[[LetterFacts], Values]
    values: frozenset[str]


Atom = NeedleAtom | ValueAtom


@dataclass(frozen=True, slots=True)
class Gate:
    """A necessary condition: when no atom holds, the condition fails with ``failed``."""

    atoms: tuple[Atom, ...]
    failed: str


def gate_any(gates: Sequence[Gate | None], failed: str) -> Gate | None:
    """Gate an ``any``: it can hold only where a child can, so only when every child is gated."""
    if not gates or any(gate is None for gate in gates):
        return None
    return Gate(tuple(atom for gate in gates if gate is not None for atom in gate.atoms), failed)


def gate_all(gates: Sequence[Gate | None]) -> Gate | None:
    """Gate an ``all`` by its first child: when that one fails, its miss is the first miss."""
    return gates[0] if gates else None


# A needle's entries: (position of the rule, the other needles of the atom, or None).
_NeedleEntries = dict[str, list[tuple[int, frozenset[str] | None]]]


class Gating:
    """The gates of the rules of one plan, indexed by view, then by needle or value."""

    __slots__ = ("_needles", "_values")

    def __init__(self, gated: Iterable[tuple[int, Gate]]) -> None:
        gated = list(gated)
        needles: dict[object, tuple[Callable[[LetterFacts], Found], _NeedleEntries]] = {}
        values: dict[object, tuple[Callable[[LetterFacts], Values], dict[str, list[int]]]] = {}
        shared = _sharing(gated)
        for position, gate in gated:
            for atom in gate.atoms:
                if isinstance(atom, NeedleAtom):
                    first = _key_needle(atom, shared)
                    rest = atom.needles - {first} or None
                    entries = needles.setdefault(atom.key, (atom.search, {}))[1]
                    entries.setdefault(first, []).append((position, rest))
                else:
                    by_value = values.setdefault(atom.key, (atom.view, {}))[1]
                    for value in atom.values:
                        by_value.setdefault(value, []).append(position)
        self._needles = tuple(needles.values())
        self._values = tuple(values.values())

    def candidates(self, facts: LetterFacts) -> set[int]:
        """Give the positions of the gated rules whose gate holds on this letter."""
        out: set[int] = set()
        for search, entries in self._needles:
            found = search(facts)
            if not found:
                continue
            present = found[0] if len(found) == 1 else set().union(*found)
            for needle in present:
                hits = entries.get(needle)
                if hits is not None:
                    for position, rest in hits:
                        if rest is None or rest <= present:
                            out.add(position)
        for view, by_value in self._values:
            for value in view(facts):
                positions = by_value.get(value)
                if positions is not None:
                    out.update(positions)
        return out


def _sharing(gated: list[tuple[int, Gate]]) -> Counter[tuple[object, str]]:
    """Count, per search and needle, the atoms that need the needle."""
    return Counter(
        (atom.key, needle)
        for _, gate in gated
        for atom in gate.atoms
        if isinstance(atom, NeedleAtom)
        for needle in atom.needles
    )


def _key_needle(atom: NeedleAtom, shared: Counter[tuple[object, str]]) -> str:
    """Pick the needle an atom is looked up by: the one least often present, at a guess.

    That is the needle the fewest atoms share (a word many rules need, like ``order`` in
    ``order\\s+#?17\\d{4}``, is likely a common one), then the longest, then the first.
    """
    return min(sorted(atom.needles), key=lambda needle: (shared[atom.key, needle], -len(needle)))
