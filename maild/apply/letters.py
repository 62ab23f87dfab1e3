"""Pure choices of `maild rules apply`: which stored letters can be decided, and with which rules."""

from __future__ import annotations

from collections.abc import Collection

from maild.core.decision import Decision, Effect
from maild.db.stored import RuleLetter
from maild.rules.needs import Needs

#: Effects a rule may have that apply records in rule_hits but never acts on for old letters.
NOT_APPLIED = frozenset({"mark_lead", "not_lead", "autoreply"})


def skip_reason(item: RuleLetter, needs: Needs, accounts: Collection[str]) -> str | None:
    """Say why a stored letter cannot be decided now, or None when it can."""
    if item.status == "failed":
        return "failed: it could not be parsed (try `maild letters retry-failed`)"
    if item.direction != "in":
        return "sent by maild: rules decide incoming letters only"
    if item.status == "oversize" and needs.body:
        return "oversize: only its header is stored, and the rules read the body or attachments"
    if item.status not in ("stored", "oversize"):
        return f"status {item.status}"
    if item.account not in accounts:
        return f"account {item.account} is not in the config"
    return None


def needs_header(item: RuleLetter, needs: Needs) -> bool:
    """Tell whether this letter's header block must be read for the rules to see it whole."""
    if needs.headers:
        return True
    letter = item.letter
    empty = {
        "subject": not letter.subject,
        "from": not letter.from_,
        "to": not letter.to,
        "cc": not letter.cc,
        "reply_to": not letter.reply_to,
    }
    return any(empty[part] for part in needs.header_if_empty)


def narrow(decision: Decision, rules: frozenset[str] | None) -> Decision:
    """Keep only the named rules' results and effects; the whole rule set was evaluated, stops and all."""
    if rules is None:
        return decision
    results = tuple(result for result in decision.results if result.rule in rules)
    hits = [result for result in decision.hits if result.rule in rules]
    effects: list[Effect] = []
    seen: set[str] = set()
    for hit in hits:
        for effect in hit.effects:
            if effect.key() not in seen:
                seen.add(effect.key())
                effects.append(effect)
    return Decision(
        results=results,
        effects=tuple(effects),
        stopped_by=decision.stopped_by if decision.stopped_by in rules else None,
        implicit_keep=not hits,
        ruleset_version=decision.ruleset_version,
    )
