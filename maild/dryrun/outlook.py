"""What the daemon would record beside the rules' effects: the lead verdict and the Responsible.

A dry run reads no database, so it says what it cannot know: a reply that cites a stored
letter, or carries a lead's ``[#N]`` in its subject, joins that lead instead of opening one,
and personal sender names are looked up among the config's ``[[users]]`` only (names set in
the CRM live in the database).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maild.core.decision import Decision
from maild.core.letter import ParsedLetter
from maild.core.names import address_key, name_key
from maild.db.users import NameOwner
from maild.leads.detect import cited_ids, subject_numbers, verdict
from maild.leads.policy import lead_policy
from maild.responsible import Responsible, addressed_names, pick, rule_choice
from maild.settings import AccountConfig, Config


@dataclass(frozen=True, slots=True)
class LeadView:
    """Whether the letter opens a lead and why, which scenarios show it, what could join it."""

    opens: bool
    reason: str
    scenarios: tuple[str, ...] = ()
    may_join: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Give the view as the JSON of a dry run writes it."""
        return {
            "opens": self.opens,
            "reason": self.reason,
            "scenarios": list(self.scenarios),
            "may_join": list(self.may_join),
        }


@dataclass(frozen=True, slots=True)
class Outlook:
    """The lead (None: the account has leads off) and the Responsible (None: nobody chosen)."""

    lead: LeadView | None
    responsible: Responsible | None

    def as_dict(self) -> dict[str, Any]:
        """Give both as the JSON of a dry run writes them."""
        chosen = self.responsible
        return {
            "lead": self.lead.as_dict() if self.lead is not None else None,
            "responsible": (
                {"login": chosen.login, "reason": chosen.reason} if chosen is not None else None
            ),
        }


def outlook(
    config: Config, account: str, folder: str, letter: ParsedLetter, decision: Decision
) -> Outlook:
    """Say what the daemon would record for a letter in this place, short of the database."""
    configured = next((item for item in config.accounts if item.name == account), None)
    if configured is None:  # a stored letter of an account no longer in the file
        return Outlook(None, rule_choice(decision))
    return Outlook(
        _lead(config, configured, folder, letter, decision),
        rule_choice(decision) or _by_name(config, configured, letter),
    )


def _lead(
    config: Config, account: AccountConfig, folder: str, letter: ParsedLetter, decision: Decision
) -> LeadView | None:
    """Give the lead verdict, the scenarios showing the lead it opens, and what could join one."""
    policy = lead_policy(account)
    if not policy.enabled:
        return None
    found = verdict(policy, folder, letter, decision.lead_override)
    scenarios = tuple(
        scenario.name
        for scenario in config.scenarios
        if folder in scenario.leads_from.get(account.name, [])
    )
    cited = [f"{header} {message_id}" for message_id, header in cited_ids(letter)]
    numbered = [f"[#{number}] in the subject" for number in subject_numbers(letter.subject)]
    return LeadView(
        found.opens, found.reason, scenarios if found.opens else (), tuple(cited + numbered)
    )


def _by_name(config: Config, account: AccountConfig, letter: ParsedLetter) -> Responsible | None:
    """Choose by the personal sender name the letter is addressed to, among ``[[users]]``."""
    addresses = frozenset(address_key(a) for a in (account.address, *account.aliases))
    for name, header in addressed_names(letter, addresses):
        key = name_key(name)
        owners = [
            NameOwner(user.login, True)
            for user in config.users
            if account.name in user.sender_names
            and name_key(user.sender_names[account.name]) == key
        ]
        if owners:
            return pick(owners, name, header)
    return None
