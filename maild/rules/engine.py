"""The pure rules engine: a compiled RuleSet and a letter in, a Decision out; no I/O at all.

Per (account, folder) the engine keeps a plan: the rules that cannot apply there are reduced to
their constant miss results, and the effects of actions that do not read the letter are computed
once. Evaluating a letter then calls precompiled conditions and appends constant results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from maild.core.decision import AccountInfo, Decision, Effect, LetterFacts, RuleResult
from maild.rules.registry import CompiledAction, CompiledCondition

_PLAN_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule ready to run: filters, condition, actions and its cached miss results."""

    index: int
    name: str
    accounts: frozenset[str] | None
    folders: frozenset[str] | None
    condition: CompiledCondition | None
    actions: tuple[CompiledAction, ...]
    stop: bool
    misses: dict[str, RuleResult] = field(default_factory=dict, compare=False)

    def effects(self, facts: LetterFacts, account: AccountInfo | None) -> tuple[Effect, ...]:
        """Give this rule's effects for a letter, in action order."""
        out: list[Effect] = []
        for action in self.actions:
            out.extend(action.run(facts, account))
        return tuple(out)

    def skip(self, account: str, folder: str) -> RuleResult | None:
        """Give the constant miss result when the rule does not apply to this account and folder."""
        if self.accounts is not None and account not in self.accounts:
            return RuleResult(self.name, False, f'accounts: not for account "{account}"')
        if self.folders is not None and folder not in self.folders:
            return RuleResult(self.name, False, f'folders: not for folder "{folder}"')
        return None


# One step of a plan: (constant result or None, condition, miss cache, constant hit or None, rule).
Step = tuple[
    RuleResult | None,
    CompiledCondition | None,
    dict[str, RuleResult],
    RuleResult | None,
    CompiledRule,
]


class RuleSet:
    """The compiled rules of one config, with the version recorded in the audit trail."""

    def __init__(
        self,
        rules: tuple[CompiledRule, ...],
        accounts: Mapping[str, AccountInfo],
        *,
        version: str,
        source: str = "",
    ) -> None:
        self.rules = rules
        self.accounts = dict(accounts)
        self.version = version
        self.source = source
        self._plans: dict[tuple[str, str], tuple[Step, ...]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules, version={self.version!r})"

    def plan(self, account: str, folder: str) -> tuple[Step, ...]:
        """Give (and cache) the steps for letters of one account and folder."""
        key = (account, folder)
        steps = self._plans.get(key)
        if steps is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            steps = self._plans[key] = tuple(
                self._step(rule, account, folder) for rule in self.rules
            )
        return steps

    def _step(self, rule: CompiledRule, account: str, folder: str) -> Step:
        skipped = rule.skip(account, folder)
        if skipped is not None:
            return (skipped, None, rule.misses, None, rule)
        hit = None
        if not any(action.reads_letter for action in rule.actions):
            info = self.accounts.get(account)
            effects: list[Effect] = []
            for action in rule.actions:
                effects.extend(action.run(_NO_LETTER, info))
            hit = RuleResult(rule.name, True, None, tuple(effects))
        return (None, rule.condition, rule.misses, hit, rule)


class _NoLetter(LetterFacts):
    """Stands in for the letter when computing effects of actions that do not read it."""

    __slots__ = ()

    def __init__(self) -> None:  # deliberately no letter
        pass


_NO_LETTER = _NoLetter()


def evaluate(ruleset: RuleSet, facts: LetterFacts) -> Decision:
    """Try every rule in order on one letter and add up the effects; pure and allocation-light."""
    results: list[RuleResult] = []
    append = results.append
    effects: list[Effect] = []
    stopped_by = None
    matched = False
    for skipped, condition, misses, constant_hit, rule in ruleset.plan(facts.account, facts.folder):
        if skipped is not None:
            append(skipped)
            continue
        if condition is not None:
            failed = condition(facts)
            if failed is not None:
                miss = misses.get(failed)
                if miss is None:
                    miss = misses[failed] = RuleResult(rule.name, False, failed)
                append(miss)
                continue
        hit = constant_hit
        if hit is None:
            hit = RuleResult(
                rule.name, True, None, rule.effects(facts, ruleset.accounts.get(facts.account))
            )
        append(hit)
        matched = True
        if hit.effects:
            effects.extend(hit.effects)
        if rule.stop:
            stopped_by = rule.name
            break
    if len(effects) > 1:
        effects = _unique(effects)
    return Decision(
        results=tuple(results),
        effects=tuple(effects),
        stopped_by=stopped_by,
        implicit_keep=not matched,
        ruleset_version=ruleset.version,
    )


def _unique(effects: list[Effect]) -> list[Effect]:
    """Drop repeated effects (same key), keeping the first: each is performed once anyway."""
    seen: set[str] = set()
    out = []
    for effect in effects:
        key = effect.key()
        if key not in seen:
            seen.add(key)
            out.append(effect)
    return out
