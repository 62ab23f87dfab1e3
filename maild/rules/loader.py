"""Compile the ``[[rules]]`` of a config into a RuleSet, reporting every problem at once.

Each problem is one line, ``SOURCE: rules[3] ("rule name").match.all[0].matches: bad regex: ...``,
the same shape as every other config problem, so ``maild check-config`` lists them together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from maild.core.decision import AccountInfo
from maild.errors import ConfigError
from maild.rules import actions as _actions
from maild.rules import conditions as _conditions
from maild.rules.conditions import unwatched_folder
from maild.rules.engine import CompiledRule, RuleSet
from maild.rules.models import RuleConfig
from maild.rules.registry import BuildContext, CompiledAction, compile_action, compile_condition

__all__ = ["AccountInfo", "compile_rules", "ruleset_version"]

# The built-in conditions and actions register themselves when imported.
_BUILT_INS = (_actions, _conditions)


def ruleset_version(rules: Sequence[RuleConfig]) -> str:
    """Give a short sha256 of the rules' canonical JSON: it changes when any rule changes."""
    canonical = json.dumps(
        [rule.model_dump(mode="json") for rule in rules],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def compile_rules(
    rules: Sequence[RuleConfig], accounts: Mapping[str, AccountInfo], *, source: str
) -> RuleSet:
    """Compile rules against the configured accounts; raise ConfigError listing every problem."""
    problems: list[str] = []
    compiled: list[CompiledRule] = []
    first_use: dict[str, int] = {}
    shared: dict[object, Any] = {}
    for index, rule in enumerate(rules):
        prefix = f"rules[{index}] ({json.dumps(rule.name, ensure_ascii=False)})"
        ctx = BuildContext(
            accounts=accounts, rule_accounts=_rule_accounts(rule, accounts), shared=shared
        )
        folded = rule.name.casefold()
        if folded in first_use:
            ctx.problem("name", f"the name is already used by rules[{first_use[folded]}]")
        else:
            first_use[folded] = index
        result = _compile_one(index, rule, ctx)
        problems.extend(f"{source}: {prefix}.{path}: {message}" for path, message in ctx.problems)
        if result is not None and not ctx.problems:
            compiled.append(result)
    if problems:
        raise ConfigError(problems)
    return RuleSet(tuple(compiled), accounts, version=ruleset_version(rules), source=source)


def _rule_accounts(rule: RuleConfig, accounts: Mapping[str, AccountInfo]) -> tuple[str, ...]:
    return tuple(rule.accounts) if rule.accounts is not None else tuple(accounts)


def _compile_one(index: int, rule: RuleConfig, ctx: BuildContext) -> CompiledRule | None:
    known = ", ".join(sorted(ctx.accounts)) or "none configured"
    listed: set[str] = set()
    for position, name in enumerate(rule.accounts or ()):
        if name not in ctx.accounts:
            ctx.problem(f"accounts[{position}]", f'unknown account "{name}" (accounts: {known})')
        elif name in listed:
            ctx.problem(f"accounts[{position}]", f'account "{name}" is listed twice')
        listed.add(name)
    if rule.folders is not None:
        watched = ctx.watched_folders()
        for position, folder in enumerate(rule.folders):
            if folder not in watched:
                ctx.problem(f"folders[{position}]", unwatched_folder(folder, ctx))
    condition = None if rule.match is None else compile_condition(rule.match, "match", ctx)
    compiled_actions: list[CompiledAction] = []
    for position, node in enumerate(rule.actions):
        action = compile_action(node, f"actions[{position}]", ctx)
        if action is not None:
            compiled_actions.append(action)
    if not rule.actions and not rule.stop:
        ctx.problem("actions", "a rule needs at least one action, or stop = true")
    if ctx.problems:
        return None
    return CompiledRule(
        index=index,
        name=rule.name,
        accounts=None if rule.accounts is None else frozenset(rule.accounts),
        folders=None if rule.folders is None else frozenset(rule.folders),
        condition=condition,
        gate=None if condition is None else ctx.gate_of(condition),
        actions=tuple(compiled_actions),
        stop=rule.stop or any(action.stops for action in compiled_actions),
    )
