"""Registries of rule conditions and actions: a unique name -> the factory that compiles it.

A condition factory turns one condition table of the config into a compiled condition: a
function of the letter that returns ``None`` when it holds, or a readable description of the
condition that failed (``match.all[1]: has_attachment = true``). An action factory turns the
value under an action's name into a ``CompiledAction`` that returns effects, never performs them.

The built-in conditions and actions register themselves in ``maild.rules.conditions`` and
``maild.rules.actions``; later packages (leads, auto-replies) register theirs the same way.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from maild.core.decision import AccountInfo, Effect, LetterFacts
from maild.rules.gates import Gate

CompiledCondition = Callable[[LetterFacts], str | None]
"""Return None when the condition holds, else the path and description of what failed."""

ActionRun = Callable[[LetterFacts, AccountInfo | None], tuple[Effect, ...]]


@dataclass(frozen=True, slots=True)
class CompiledAction:
    """One compiled action: ``run`` returns the effects for a letter in an account.

    ``reads_letter`` is false when the effects depend only on the account, so the engine can
    compute them once per account instead of once per letter. ``stops`` ends evaluation.
    """

    name: str
    run: ActionRun
    reads_letter: bool = False
    stops: bool = False


@dataclass
class BuildContext:
    """What a factory needs while compiling one rule: the accounts, and where to put problems.

    ``shared`` is one dict for every rule of a rule set, so conditions of different rules can
    pool work done once per letter (the needles searched for in each view of the letter).
    ``gates`` holds the gate a factory declared for a compiled condition (see ``gates``).
    """

    accounts: Mapping[str, AccountInfo]
    rule_accounts: tuple[str, ...]
    problems: list[tuple[str, str]] = field(default_factory=list)
    shared: dict[object, Any] = field(default_factory=dict)
    gates: dict[CompiledCondition, Gate] = field(default_factory=dict)

    def problem(self, path: str, message: str) -> None:
        """Record a problem at a rule-relative path (``match.all[0].matches``)."""
        self.problems.append((path, message))

    def watched_folders(self) -> set[str]:
        """Give the folders watched by at least one of the accounts this rule applies to."""
        return {
            folder
            for name in self.rule_accounts
            if name in self.accounts
            for folder in self.accounts[name].watched
        }

    def condition(self, node: Any, path: str) -> CompiledCondition | None:
        """Compile a nested condition table through the registry; None after a problem."""
        return compile_condition(node, path, self)

    def gate(self, condition: CompiledCondition, gate: Gate | None) -> CompiledCondition:
        """Declare the gate of a compiled condition (none: it is always called); give it back."""
        if gate is not None:
            self.gates[condition] = gate
        return condition

    def gate_of(self, condition: CompiledCondition) -> Gate | None:
        """Give the gate declared for a compiled condition, if any."""
        return self.gates.get(condition)


ConditionFactory = Callable[[Mapping[str, Any], str, BuildContext], CompiledCondition | None]
"""Compile a condition table found at a path; report problems to the context and return None."""

ActionFactory = Callable[[Any, str, BuildContext], CompiledAction | None]
"""Compile the value under an action's name found at a path; report problems and return None."""

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Entry(Generic[F]):
    """One registered name: its factory, the other keys its table takes, and a one-line summary."""

    name: str
    factory: F
    summary: str
    keys: frozenset[str] = frozenset()


class Registry(Generic[F]):
    """Names -> factories; a name is registered once, so every name means one thing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, *, summary: str, keys: tuple[str, ...] = ()) -> Callable[[F], F]:
        """Register a factory under a unique name (used as a decorator)."""

        def add(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, factory, summary, frozenset(keys))
            return factory

        return add

    def get(self, name: str) -> Entry[F] | None:
        """Give the entry registered under a name, or None."""
        return self._entries.get(name)

    def names(self) -> tuple[str, ...]:
        """Give every registered name, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def suggest(self, name: str) -> str:
        """Give a ``; did you mean "x"?`` hint for a misspelt name, or an empty string."""
        close = difflib.get_close_matches(name, self._entries, n=1, cutoff=0.6)
        return f'; did you mean "{close[0]}"?' if close else ""


CONDITIONS: Registry[ConditionFactory] = Registry("condition")
ACTIONS: Registry[ActionFactory] = Registry("action")

OPERATORS = ("is", "contains", "matches", "exists")
"""The operators of the text conditions (header, address, domain, display_name, body, attachment)."""

# Names admins reach for that are written another way here.
_HINTS = {
    "subject": 'write header = "subject"',
    "from": 'write address = "from" (or domain = "from", display_name = "from")',
    "to": 'write address = "to" (or domain = "to", display_name = "to")',
    "cc": 'write address = "cc" (or domain = "cc", display_name = "cc")',
    "recipient": 'write address = "recipient" (or domain = "recipient")',
    "from_domain": 'write domain = "from"',
    "to_domain": 'write domain = "to"',
    "recipient_domain": 'write domain = "recipient"',
    "text": 'write body = "text"',
    "attachment_name": 'write attachment = "name"',
    "attachment_type": 'write attachment = "type"',
    "size": "write size_over or size_under",
}


def registered_names() -> dict[str, tuple[str, ...]]:
    """List every condition, operator and action name, built-ins included."""
    from maild.rules import actions, conditions  # the built-ins register on import

    del actions, conditions
    return {"condition": CONDITIONS.names(), "operator": OPERATORS, "action": ACTIONS.names()}


def render(value: Any) -> str:
    """Render a config value compactly for messages: strings quoted, lists in brackets."""
    return json.dumps(value, ensure_ascii=False, default=str)


def compile_condition(node: Any, path: str, ctx: BuildContext) -> CompiledCondition | None:
    """Find the one registered condition name among a table's keys and run its factory."""
    if not isinstance(node, Mapping):
        ctx.problem(path, f"a condition must be a table, not {render(node)}")
        return None
    if not node:
        ctx.problem(path, "a condition table is empty; name a condition (e.g. header = ...)")
        return None
    named = [key for key in node if key in CONDITIONS]
    if len(named) > 1:
        listed = ", ".join(f"`{key}`" for key in named)
        ctx.problem(path, f"one condition per table, found {listed}; combine them with all = [...]")
        return None
    if not named:
        problems = []
        for key in node:
            hint = f"; {_HINTS[key]}" if key in _HINTS else CONDITIONS.suggest(key)
            problems.append(f'unknown condition "{key}"{hint}')
        known = ", ".join(CONDITIONS.names())
        ctx.problem(path, "; ".join(problems) + f" (conditions: {known})")
        return None
    entry = CONDITIONS.get(named[0])
    assert entry is not None
    extra = [key for key in node if key != entry.name and key not in entry.keys]
    if extra:
        for key in extra:
            allowed = ", ".join(sorted(entry.keys)) or "nothing else"
            ctx.problem(
                f"{path}.{key}",
                f'unknown key for a "{entry.name}" condition (it takes: {allowed})',
            )
        return None
    return entry.factory(node, path, ctx)


def compile_action(node: Any, path: str, ctx: BuildContext) -> CompiledAction | None:
    """Compile one action table, which names exactly one registered action."""
    if not isinstance(node, Mapping) or len(node) != 1:
        ctx.problem(
            path,
            f'an action is a table with one key, e.g. {{ move = "Invoices" }}, not {render(node)}',
        )
        return None
    ((name, value),) = node.items()
    entry = ACTIONS.get(name)
    if entry is None:
        known = ", ".join(ACTIONS.names())
        ctx.problem(path, f'unknown action "{name}"{ACTIONS.suggest(name)} (actions: {known})')
        return None
    return entry.factory(value, f"{path}.{name}", ctx)
