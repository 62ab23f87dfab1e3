"""The autoresponder inside a letter's transaction: the policy, the off switch, the throttle, the outbox.

Runs beside the rules for every new letter of an account whose auto-reply is enabled; the reply
itself is an outbox row of kind ``autoreply`` (key ``letter:<id>:autoreply``), sent by the
dispatcher with retries, so a letter stored is a reply queued, in the same commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from maild.autoreply.policy import Period, ReplyPlan, Suppressed, plan_reply
from maild.core.decision import Decision
from maild.core.letter import ParsedLetter
from maild.db import autoreply as autoreply_db
from maild.db import outbox
from maild.logging import get_logger
from maild.settings import AccountConfig

log = get_logger(__name__)

KIND = "autoreply"


def period_of(account: AccountConfig) -> Period:
    """Give the account's configured auto-reply as the policy reads it."""
    config = account.autoreply
    return Period(
        enabled=config.enabled,
        start=config.start,
        end=config.end,
        text=config.text,
        subject=config.subject,
        interval=timedelta(days=config.interval_days),
        null_sender=config.null_sender,
    )


@dataclass(frozen=True)
class Autoresponder:
    """One account's autoresponder, shared by the deciders of its watched folders."""

    account: str
    period: Period
    addresses: frozenset[str]

    async def apply(
        self,
        session: AsyncSession,
        *,
        account_id: int,
        letter_id: int,
        letter: ParsedLetter,
        arrival: datetime | None,
        decision: Decision,
    ) -> tuple[str, bool]:
        """Decide one letter's auto-reply, queue it or say why not; give the outcome and if queued."""
        off_at = None
        period = self.period
        if period.enabled and period.start and period.end and arrival and period.covers(arrival):
            off_at = await autoreply_db.switched_off_at(
                session, account_id, period.start, period.end
            )
        verdict = plan_reply(
            letter,
            arrival=arrival,
            period=period,
            addresses=self.addresses,
            switched_off_at=off_at,
            override=decision.autoreply_override,
        )
        if isinstance(verdict, ReplyPlan):
            held = await autoreply_db.claim(
                session,
                account_id=account_id,
                sender=verdict.key,
                letter_id=letter_id,
                arrival=verdict.arrival,
                interval=period.interval,
            )
            if held is None:
                await outbox.add_effects(session, [self._row(account_id, letter_id, verdict)])
                outcome = f"queued: reply to {verdict.to}"
                await autoreply_db.set_outcome(session, letter_id, outcome)
                self._log(letter_id, "queued", to=verdict.to, text_rule=verdict.text_rule)
                return outcome, True
            state = "sent" if held.sent_at is not None else "queued"
            verdict = Suppressed(
                f"a reply to {verdict.key} was {state} for a letter that arrived "
                f"{held.since.isoformat()}, within {_days(period.interval)}"
            )
        outcome = f"suppressed: {verdict.reason}"
        await autoreply_db.set_outcome(session, letter_id, outcome)
        self._log(letter_id, "suppressed", reason=verdict.reason)
        return outcome, False

    def _row(self, account_id: int, letter_id: int, plan: ReplyPlan) -> outbox.NewEffect:
        """Turn a reply plan into its outbox row: everything the dispatcher composes it from."""
        return outbox.NewEffect(
            account_id=account_id,
            letter_id=letter_id,
            kind=KIND,
            target=plan.to,
            payload={
                "to": plan.to,
                "sender_key": plan.key,
                "to_name": plan.to_name,
                "subject": plan.subject,
                "text": plan.text,
                "in_reply_to": plan.in_reply_to,
                "references": list(plan.references),
                "arrival": plan.arrival.isoformat(),
                "null_sender": self.period.null_sender,
                "text_rule": plan.text_rule,
            },
            key=f"letter:{letter_id}:{KIND}",
        )

    def _log(self, letter_id: int, outcome: str, **fields: object) -> None:
        """Say what the autoresponder decided for one letter."""
        log.info("autoreply", account=self.account, letter_id=letter_id, outcome=outcome, **fields)


def _days(interval: timedelta) -> str:
    """Render the throttle interval for a reason line."""
    days = interval / timedelta(days=1)
    return f"{days:g} day" + ("" if days == 1 else "s")


async def hand_switches(
    session: AsyncSession, periods: Mapping[str, Period]
) -> dict[str, datetime]:
    """Give when each account's current period was switched off by hand (accounts not so: absent)."""
    found = await autoreply_db.off_switches(session)
    out = {}
    for name, (start, end, at) in found.items():
        period = periods.get(name)
        if period is not None and period.start == start and period.end == end:
            out[name] = at
    return out
