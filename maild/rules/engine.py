"""The pure rules engine: a compiled RuleSet and a letter in, a Decision out; no I/O at all.

Per (account, folder) the engine keeps a plan: the rules that cannot apply there are reduced to
their constant miss results, and the effects of actions that do not read the letter are computed
once. Rules whose condition has a gate (``maild.rules.gates``) are only called on letters that
pass it: the plan starts every letter from the results the rules give when not called (their
constant or gate miss), then calls, in order, the ungated rules and the gated ones that may hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from maild.core.decision import AccountInfo, Decision, Effect, LetterFacts, RuleResult
from maild.rules.gates import Gate, Gating
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
    gate: Gate | None = field(default=None, compare=False)
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

    def miss(self, failed: str) -> RuleResult:
        """Give the (cached) miss result for a failed condition."""
        result = self.misses.get(failed)
        if result is None:
            result = self.misses[failed] = RuleResult(self.name, False, failed)
        return result


# One step of a plan: (constant result or None, condition, miss cache, constant hit or None, rule).
Step = tuple[
    RuleResult | None,
    CompiledCondition | None,
    dict[str, RuleResult],
    RuleResult | None,
    CompiledRule,
]


@dataclass(frozen=True, slots=True)
class Plan:
    """The steps for one account and folder, and which of them a letter needs called.

    ``start`` holds, per step, the result when the step is not called (its constant miss, or
    its gate's miss); ``always`` lists the steps to call on every letter, in order; ``gating``
    gives the gated steps that may hold on a letter.
    """

    steps: tuple[Step, ...]
    start: tuple[RuleResult | None, ...]
    always: tuple[int, ...]
    gating: Gating | None

    def to_call(self, facts: LetterFacts) -> Sequence[int]:
        """Give the positions of the steps to call on a letter, in order."""
        gating = self.gating
        if gating is None:
            return self.always
        candidates = gating.candidates(facts)
        if not candidates:
            return self.always
        candidates.update(self.always)
        return sorted(candidates)


class RuleSet:
    """The compiled rules of one config, with the version recorded in the audit trail."""

    def __init__(
        self,
        rules: tuple[CompiledRule, ...],
        accounts: Mapping[str, AccountInfo],
        *,
        version: str,
        source: str = "",
        gating: bool = True,
    ) -> None:
        self.rules = rules
        self.accounts = dict(accounts)
        self.version = version
        self.source = source
        self.gating = gating
        self._plans: dict[tuple[str, str], Plan] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules, version={self.version!r})"

    def plan(self, account: str, folder: str) -> Plan:
        """Give (and cache) the plan for letters of one account and folder."""
        key = (account, folder)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            plan = self._plans[key] = self._plan(account, folder)
        return plan

    def _plan(self, account: str, folder: str) -> Plan:
        steps = tuple(self._step(rule, account, folder) for rule in self.rules)
        start: list[RuleResult | None] = []
        always: list[int] = []
        gated: list[tuple[int, Gate]] = []
        for position, (skipped, condition, _, _, rule) in enumerate(steps):
            gate = rule.gate if self.gating and condition is not None else None
            if skipped is not None:
                start.append(skipped)
            elif gate is not None:
                start.append(rule.miss(gate.failed))
                gated.append((position, gate))
            else:
                start.append(None)
                always.append(position)
        gating = Gating(gated) if gated else None
        return Plan(steps, tuple(start), tuple(always), gating)

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
    plan = ruleset.plan(facts.account, facts.folder)
    to_call = plan.to_call(facts)
    if not to_call:  # every rule missed by its filters or gate: the results are constant
        return Decision(
            results=cast("tuple[RuleResult, ...]", plan.start),
            effects=(),
            stopped_by=None,
            implicit_keep=True,
            ruleset_version=ruleset.version,
        )
    steps = plan.steps
    results = list(plan.start)
    effects: list[Effect] = []
    stopped_by = None
    matched = False
    for position in to_call:
        _, condition, misses, constant_hit, rule = steps[position]
        if condition is not None:
            failed = condition(facts)
            if failed is not None:
                miss = misses.get(failed)
                if miss is None:
                    miss = misses[failed] = RuleResult(rule.name, False, failed)
                results[position] = miss
                continue
        hit = constant_hit
        if hit is None:
            hit = RuleResult(
                rule.name, True, None, rule.effects(facts, ruleset.accounts.get(facts.account))
            )
        results[position] = hit
        matched = True
        if hit.effects:
            effects.extend(hit.effects)
        if rule.stop:
            stopped_by = rule.name
            del results[position + 1 :]
            break
    if len(effects) > 1:
        effects = _unique(effects)
    return Decision(
        results=cast("tuple[RuleResult, ...]", tuple(results)),
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
