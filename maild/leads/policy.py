"""An account's lead settings from the config, as the pure policy lead detection reads."""

from __future__ import annotations

from maild.core.names import address_key
from maild.leads.detect import LeadPolicy
from maild.settings import AccountConfig


def lead_policy(account: AccountConfig) -> LeadPolicy:
    """Build the lead policy of one configured account."""
    return LeadPolicy(
        account=account.name,
        source=account.leads.source,
        folders=frozenset(account.leads.folders),
        addresses=frozenset(address_key(a) for a in (account.address, *account.aliases)),
        sent_folder=account.folders.sent,
    )
