"""Lead detection in the letter's own transaction: join a thread, open a lead, link the sender."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.decision import Decision
from maild.core.letter import ParsedLetter
from maild.db import leads as leads_db
from maild.db import parties
from maild.leads.detect import LeadPolicy, cited_ids, subject_numbers, verdict
from maild.leads.guess import guess_party


@dataclass(frozen=True, slots=True)
class LeadOutcome:
    """What lead detection did with one letter: opened or joined lead number, or neither, and why."""

    action: str  # "opened", "joined" or "none"
    reason: str
    number: int | None = None
    party: str | None = None


@dataclass
class LeadBook:
    """Lead detection for one watched folder of an account."""

    policy: LeadPolicy
    folder: str

    async def record(
        self,
        session: AsyncSession,
        *,
        account_id: int,
        folder_id: int,
        letter_id: int,
        letter: ParsedLetter,
        decision: Decision,
        responsible: str | None,
        use_potential_clients: bool,
    ) -> LeadOutcome:
        """Attach the letter to its thread's lead, or open a lead, or record why it is none."""
        own = self.policy.own_reason(self.folder, letter) is not None
        party = None if own else await self._known_party(session, letter)
        thread = await leads_db.find_thread(
            session, cited_ids(letter), subject_numbers(letter.subject)
        )
        if thread is not None:
            reason = f"reply to lead #{thread.number} ({thread.how})"
            await leads_db.set_letter_lead(session, letter_id, thread.lead_id, reason, party)
            if responsible is not None:
                await leads_db.adopt_responsible(session, thread.lead_id, responsible)
            return LeadOutcome("joined", reason, thread.number, _describe(party))
        found = verdict(self.policy, self.folder, letter, decision.lead_override)
        if not found.opens:
            await leads_db.set_letter_lead(session, letter_id, None, found.reason, party)
            return LeadOutcome("none", found.reason, party=_describe(party))
        if party is None:
            party = await self._new_party(session, letter, letter_id, use_potential_clients)
        sender = letter.sender
        _, number = await leads_db.open_lead(
            session,
            leads_db.NewLead(
                account_id=account_id,
                folder_id=folder_id,
                letter_id=letter_id,
                subject=letter.subject,
                sender_address=sender.address if sender else "",
                sender_name=sender.name if sender else "",
                reason=found.reason,
                responsible_login=responsible,
                party=party,
            ),
        )
        return LeadOutcome("opened", found.reason, number, _describe(party))

    async def _known_party(
        self, session: AsyncSession, letter: ParsedLetter
    ) -> parties.Party | None:
        """Resolve the sender to a party already in the directories."""
        sender = letter.sender
        return await parties.resolve_party(session, sender.address) if sender else None

    async def _new_party(
        self, session: AsyncSession, letter: ParsedLetter, letter_id: int, potential: bool
    ) -> parties.Party | None:
        """Make a party for an unknown sender: a potential client, or a client when those are off."""
        guess = guess_party(letter)
        if guess is None:
            return None
        if potential:
            return await parties.create_potential_client(
                session,
                full_name=guess.full_name,
                company=guess.company,
                email=guess.email,
                phone=guess.phone,
                first_letter_id=letter_id,
            )
        link = await parties.client_for(
            session,
            full_name=guess.full_name,
            company=guess.company,
            email=guess.email,
            phone=guess.phone,
        )
        kind: parties.PartyKind = "contact_person" if link.contact_person_id else "client"
        name = guess.full_name or guess.company or guess.email
        return parties.Party(kind, name, link.client_id, link.contact_person_id)


def _describe(party: parties.Party | None) -> str | None:
    return party.describe() if party is not None else None
