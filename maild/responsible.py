"""Who is Responsible for an incoming letter: a rule's choice, else the personal sender name it was sent to.

Users of a shared account send as "Anna Petrova <sales@…>"; a client's reply to that name is
addressed to it. The first recipient (To, then Cc) that is the account's address or alias with a
display name decides: the user whose personal sender name on that account equals it (NFKC, case,
quotes and spaces aside) becomes Responsible. A current name wins over a past one; two users with
the same name assign nobody. The reason is recorded with the letter and logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.decision import Decision, SetResponsible
from maild.core.letter import ParsedLetter
from maild.core.names import address_key
from maild.db.users import NameOwner, owners_of_name


@dataclass(frozen=True, slots=True)
class Responsible:
    """The login made Responsible (None for nobody) and why."""

    login: str | None
    reason: str


def rule_choice(decision: Decision) -> Responsible | None:
    """Give the last set_responsible of the rules that matched, with the rule's name."""
    for result in reversed(decision.hits):
        for effect in reversed(result.effects):
            if isinstance(effect, SetResponsible):
                return Responsible(effect.login, f"rule {result.rule}")
    return None


def addressed_names(letter: ParsedLetter, addresses: frozenset[str]) -> list[tuple[str, str]]:
    """Give the display names the letter uses for the account's addresses, To first, then Cc."""
    out = []
    for header, recipients in (("To", letter.to), ("Cc", letter.cc)):
        for recipient in recipients:
            if recipient.name.strip() and address_key(recipient.address) in addresses:
                out.append((recipient.name, header))
    return out


def pick(owners: Sequence[NameOwner], name: str, header: str) -> Responsible:
    """Choose among the users who have this name: one current owner, else one owner at all."""
    current = sorted({owner.login for owner in owners if owner.current})
    everyone = sorted({owner.login for owner in owners})
    chosen = current if len(current) == 1 else everyone
    if len(chosen) == 1:
        return Responsible(chosen[0], f'personal sender name "{name}" in {header}')
    return Responsible(
        None, f'personal sender name "{name}" in {header} is ambiguous: {", ".join(chosen)}'
    )


async def choose(
    session: AsyncSession,
    *,
    account_id: int,
    addresses: frozenset[str],
    letter: ParsedLetter,
    decision: Decision,
    known: dict[str, list[NameOwner]] | None = None,
) -> Responsible | None:
    """Give the letter's Responsible: a rule's choice wins, then the personal sender name.

    ``known`` keeps the owners of each name looked up in this transaction: a backlog's group
    of letters mostly addresses the same few names, each a query otherwise.
    """
    by_rule = rule_choice(decision)
    if by_rule is not None:
        return by_rule
    for name, header in addressed_names(letter, addresses):
        owners = known.get(name) if known is not None else None
        if owners is None:
            owners = await owners_of_name(session, account_id, name)
            if known is not None:
                known[name] = owners
        if owners:
            return pick(owners, name, header)
    return None
