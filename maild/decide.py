"""Rules applied to newly stored letters, recorded in the letters' own transaction.

The rules engine is pure; here its Decision becomes rows: the audit trail (``rule_hits``), the
effects to perform (``outbox``, one row per effect under a unique key) and what the decision says
of the letter itself (deletion mark, Responsible). Committing them with the letter means a crash
can never keep the letter and lose its effects, nor perform effects for a letter not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from maild import responsible
from maild.autoreply.responder import Autoresponder
from maild.core.decision import (
    AddFlag,
    Copy,
    Decision,
    Effect,
    Forward,
    Move,
    RemoveFlag,
)
from maild.core.letter import ParsedLetter
from maild.db import outbox
from maild.db.flags import use_potential_clients
from maild.db.tables import utcnow
from maild.db.users import NameOwner
from maild.dryrun.trial import decide
from maild.leads.book import LeadBook, LeadOutcome
from maild.logging import get_logger
from maild.rules.engine import RuleSet

log = get_logger(__name__)

# The order effects of one letter are performed in: the letter leaves its folder last.
_ORDER = {Forward: 0, AddFlag: 1, RemoveFlag: 1, Copy: 2, Move: 3}


@dataclass
class RulesHolder:
    """The rule set in force; a reload swaps it whole, so a letter sees one version only."""

    current: RuleSet


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A letter just inserted, with what the rules look at."""

    letter_id: int
    parsed: ParsedLetter
    size: int
    received_at: datetime | None = None


@dataclass
class Decider:
    """Evaluates the rules for one folder's new letters and queues their effects."""

    rules: RulesHolder
    account: str
    folder: str
    forward_fuse_per_hour: int = 20
    leads: LeadBook | None = None
    addresses: frozenset[str] = frozenset()
    autoreply: Autoresponder | None = None

    def decide(self, letter: StoredLetter) -> Decision:
        """Evaluate the rules in force on one letter; pure, the same call as the dry run."""
        return decide(
            self.rules.current,
            letter.parsed,
            account=self.account,
            folder=self.folder,
            size=letter.size,
        )

    async def apply(
        self,
        session: AsyncSession,
        account_id: int,
        letters: Sequence[StoredLetter],
        *,
        folder_id: int = 0,
        between: Callable[[], None] | None = None,
    ) -> int:
        """Decide each letter and record the outcome in the open transaction; give effects queued.

        ``between`` is called before each letter: it may raise to abandon the transaction.
        """
        queued = 0
        owners: dict[str, list[NameOwner]] = {}  # by name, for this transaction's letters
        leads = self.leads if self.leads is not None and self.leads.policy.enabled else None
        potential = await use_potential_clients(session) if leads and letters else True
        for letter in letters:
            if between is not None:
                between()
            decision = self.decide(letter)
            queued += await self._record(session, account_id, letter, decision)
            if self.autoreply is not None:
                said, replied = await self.autoreply.apply(
                    session,
                    account_id=account_id,
                    letter_id=letter.letter_id,
                    letter=letter.parsed,
                    arrival=letter.received_at,
                    decision=decision,
                )
                decision = replace(decision, autoreply=said)
                queued += replied
            chosen = await responsible.choose(
                session,
                account_id=account_id,
                addresses=self.addresses,
                letter=letter.parsed,
                decision=decision,
                known=owners,
            )
            if chosen is not None:
                await outbox.set_responsible(
                    session, letter.letter_id, chosen.login, reason=chosen.reason
                )
                self._log_responsible(letter, chosen)
            if leads is not None:
                outcome = await leads.record(
                    session,
                    account_id=account_id,
                    folder_id=folder_id,
                    letter_id=letter.letter_id,
                    letter=letter.parsed,
                    decision=decision,
                    responsible=chosen.login if chosen is not None else None,
                    use_potential_clients=potential,
                )
                self._log_lead(letter, outcome)
        return queued

    async def _record(
        self, session: AsyncSession, account_id: int, letter: StoredLetter, decision: Decision
    ) -> int:
        """Write one letter's hits and effects, and log what was decided."""
        hits = [
            (
                letter.letter_id,
                hit.rule,
                decision.ruleset_version,
                [effect.as_dict() for effect in hit.effects],
            )
            for hit in decision.hits
        ]
        await outbox.record_hits(session, hits)
        rows, fused = await self.effect_rows(session, account_id, letter, decision)
        if decision.marks_deleted:
            await outbox.mark_deleted(session, letter.letter_id)
        await outbox.add_effects(session, rows)
        self._log(letter, decision, len(rows), fused)
        return len(rows)

    async def effect_rows(
        self, session: AsyncSession, account_id: int, letter: StoredLetter, decision: Decision
    ) -> tuple[list[outbox.NewEffect], int]:
        """Give a decision's outbox rows under their unique keys, and how many forwards the fuse dropped."""
        effects, fused = await self._fuse(session, letter, _settle_moves(decision.effects))
        rows = [
            row
            for effect in effects
            if (row := effect_row(account_id, letter.letter_id, effect)) is not None
        ]
        return rows, fused

    async def _fuse(
        self, session: AsyncSession, letter: StoredLetter, effects: Sequence[Effect]
    ) -> tuple[list[Effect], int]:
        """Drop forwards once this sender has had too many in the last hour: a loop's fuse."""
        if not any(isinstance(effect, Forward) for effect in effects):
            return list(effects), 0
        sender = letter.parsed.sender.address if letter.parsed.sender else ""
        since = utcnow() - timedelta(hours=1)
        recent = await outbox.recent_forwards(session, sender, since=since)
        kept: list[Effect] = []
        fused = 0
        for effect in effects:
            if isinstance(effect, Forward):
                if recent >= self.forward_fuse_per_hour:
                    fused += 1
                    continue
                recent += 1
            kept.append(effect)
        if fused:
            log.warning(
                "forward_fuse",
                account=self.account,
                letter_id=letter.letter_id,
                sender=sender,
                dropped=fused,
                limit_per_hour=self.forward_fuse_per_hour,
            )
        return kept, fused

    def _log_responsible(self, letter: StoredLetter, chosen: responsible.Responsible) -> None:
        """Say who became Responsible for the letter, or why nobody did."""
        log.info(
            "responsible",
            account=self.account,
            folder=self.folder,
            letter_id=letter.letter_id,
            login=chosen.login,
            reason=chosen.reason,
        )

    def _log_lead(self, letter: StoredLetter, outcome: LeadOutcome) -> None:
        """Say what lead detection did with the letter and why."""
        log.info(
            "lead",
            account=self.account,
            folder=self.folder,
            letter_id=letter.letter_id,
            outcome=outcome.action,
            number=outcome.number,
            reason=outcome.reason,
            party=outcome.party,
        )

    def _log(self, letter: StoredLetter, decision: Decision, queued: int, fused: int) -> None:
        """Say what the rules decided: the rules that hit, or that the letter stays put."""
        if decision.implicit_keep:
            log.info(
                "rules",
                account=self.account,
                folder=self.folder,
                letter_id=letter.letter_id,
                outcome="implicit_keep",
            )
            return
        log.info(
            "rules",
            account=self.account,
            folder=self.folder,
            letter_id=letter.letter_id,
            outcome="matched",
            rules=[hit.rule for hit in decision.hits],
            stopped_by=decision.stopped_by,
            effects=[effect.key() for effect in decision.effects],
            queued=queued,
            fused=fused,
        )


def effect_row(account_id: int, letter_id: int, effect: Effect) -> outbox.NewEffect | None:
    """Turn an effect into its outbox row; effects done in the database itself need none."""
    # Effects done in the database itself (responsible, lead marks) need no row.
    match effect:
        case Forward(to=target):
            pass
        case Move(folder=target) | Copy(folder=target):
            pass
        case AddFlag(flag=target) | RemoveFlag(flag=target):
            pass
        case _:
            return None
    return outbox.NewEffect(
        account_id=account_id,
        letter_id=letter_id,
        kind=effect.kind,
        target=target,
        payload=effect.as_dict(),
        key=f"letter:{letter_id}:{effect.key()}",
        seq=_ORDER[type(effect)],
    )


def _settle_moves(effects: Sequence[Effect]) -> list[Effect]:
    """Keep one move, the last; earlier moves become copies, so the letter lands in each folder."""
    moves = [effect for effect in effects if isinstance(effect, Move)]
    if len(moves) <= 1:
        return list(effects)
    last = moves[-1]
    out: list[Effect] = []
    for effect in effects:
        if isinstance(effect, Move) and effect is not last:
            out.append(Copy(effect.folder))
        else:
            out.append(effect)
    return out
