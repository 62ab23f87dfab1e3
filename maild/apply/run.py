"""Apply the rules to stored letters: decide a page per transaction, then drain the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild import responsible
from maild.apply.letters import NOT_APPLIED, narrow, needs_header, skip_reason
from maild.core.decision import Decision, Forward
from maild.db import outbox, stored
from maild.db.engine import is_sqlite, session_factory
from maild.db.gate import Sessions, gated
from maild.db.tables import utcnow
from maild.decide import Decider, RulesHolder, StoredLetter
from maild.dryrun.replay import ReplayQuery, database_errors, open_read_only, pages, selected
from maild.dryrun.trial import decide
from maild.errors import MaildError
from maild.ingest.parse import parse_header_block
from maild.logging import get_logger
from maild.outbox.dispatcher import Dispatcher, DispatchReport
from maild.rules.engine import RuleSet
from maild.rules.needs import Needs, needs_of
from maild.runtime import endpoint_for, warn_insecure
from maild.settings import Config

log = get_logger(__name__)


class UnknownRule(MaildError):
    """A --rule name the config does not have; the message names the rules it has."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A stored letter left alone, and why."""

    letter_id: int
    account: str
    folder: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeadRow:
    """An outbox row parked dead during the command, with the reason the dispatcher gave."""

    id: int
    letter_id: int | None
    kind: str
    target: str
    reason: str


@dataclass
class ApplyReport:
    """What `maild rules apply` did: letters decided and skipped, effects queued and performed."""

    hits: dict[str, int]
    evaluated: int = 0
    headers_read: int = 0
    queued: dict[str, int] = field(default_factory=dict)
    already_queued: int = 0
    fused: int = 0
    hits_recorded: int = 0
    responsible_set: int = 0
    marked_deleted: int = 0
    not_applied: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    performed: int = 0
    retried: int = 0
    dead: list[DeadRow] = field(default_factory=list)
    pending: int = 0
    applied_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Tell whether every effect is done or parked dead: nothing of these letters is left pending."""
        return self.pending == 0

    def count(self, decision: Decision) -> None:
        """Count one decided letter's hits and the effects apply does not act on."""
        self.evaluated += 1
        for hit in decision.hits:
            self.hits[hit.rule] = self.hits.get(hit.rule, 0) + 1
            for effect in hit.effects:
                if effect.kind in NOT_APPLIED:
                    self.not_applied[effect.kind] = self.not_applied.get(effect.kind, 0) + 1


async def apply_rules(
    config: Config, query: ReplayQuery, *, rules: Sequence[str] = ()
) -> ApplyReport:
    """Decide every stored letter the query selects, record the effects, then perform them."""
    ruleset = config.ruleset
    named = _check_names(ruleset, rules)
    needs = needs_of(config.rules)
    report = ApplyReport(
        hits={rule.name: 0 for rule in ruleset.rules if named is None or rule.name in named}
    )
    warn_insecure(config)
    started = utcnow()
    engine = await open_read_only(config)
    try:
        sessions = session_factory(engine)
        async with database_errors(), sessions() as session:
            rows = await selected(session, query)
        pager = _Pager(config, ruleset, named, needs, report)
        # SQLite: the pages and the dispatcher's transactions take turns, so moves keep up
        gate = asyncio.Lock() if is_sqlite(config.database_url()) else None
        dispatcher = _dispatcher(config, sessions, gate)
        try:
            performing = _Performing(dispatcher)
            worker = asyncio.create_task(performing.run(), name="outbox")
            try:
                for page in pages(rows):
                    async with database_errors():
                        if await pager.apply(gated(sessions, gate), page):
                            performing.wake()
            finally:
                performing.finish()
                await worker
            log.info(
                "rules_applied",
                evaluated=report.evaluated,
                skipped=len(report.skipped),
                queued=sum(report.queued.values()),
                already_queued=report.already_queued,
                ruleset_version=ruleset.version,
            )
            performing.done.add(await dispatcher.drain(config.outbox.once_drain_seconds))
        finally:
            await dispatcher.close()
        await _read_outcome(sessions, report, performing.done, started)
    finally:
        await engine.dispose()
    return report


def _check_names(ruleset: RuleSet, rules: Sequence[str]) -> frozenset[str] | None:
    """Give the --rule names to apply (None: all), refusing one the config does not have."""
    if not rules:
        return None
    known = [rule.name for rule in ruleset.rules]
    for name in rules:
        if name not in known:
            listed = ", ".join(f'"{item}"' for item in known) or "none"
            raise UnknownRule(f'unknown rule "{name}" (rules: {listed})')
    return frozenset(rules)


def _dispatcher(
    config: Config, sessions: async_sessionmaker[AsyncSession], gate: asyncio.Lock | None
) -> Dispatcher:
    """Build the dispatcher `maild run` uses, reading account passwords only when it connects."""
    timeout = config.daemon.imap_timeout_seconds
    return Dispatcher(
        sessions,
        config,
        endpoint_for=lambda account: endpoint_for(account, timeout),
        write_gate=gate,
    )


@dataclass
class _Performing:
    """Performs the rows due while later pages are still being decided: moves start at once."""

    dispatcher: Dispatcher
    done: DispatchReport = field(default_factory=DispatchReport)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _finished: bool = False

    def wake(self) -> None:
        """Say a page queued rows."""
        self._wake.set()

    def finish(self) -> None:
        """Say every page is decided: one last pass, then the drain takes over."""
        self._finished = True
        self._wake.set()

    async def run(self) -> None:
        """Perform the due rows each time a page queues some, until every page is decided."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            finished = self._finished
            try:
                self.done.add(await self.dispatcher.run_once())
            except Exception as exc:  # the drain after the last page tries again
                log.warning("dispatcher_error", error=f"{type(exc).__name__}: {exc}")
            if finished:
                return


async def _read_outcome(
    sessions: async_sessionmaker[AsyncSession],
    report: ApplyReport,
    done: DispatchReport,
    started: datetime,
) -> None:
    """Read what the dispatcher performed, what died since the start and what is left."""
    report.performed, report.retried = done.done, done.retried
    async with database_errors(), sessions() as session:
        report.dead = [
            DeadRow(row.id, row.letter_id, row.kind, row.target, row.last_error or "")
            for row in await outbox.dead_since(session, started)
        ]
        report.pending = await outbox.pending_of(session, report.applied_ids)


@dataclass
class _Pager:
    """Decides and records one page of stored letters in one transaction."""

    config: Config
    ruleset: RuleSet
    named: frozenset[str] | None
    needs: Needs
    report: ApplyReport
    _deciders: dict[tuple[str, str], Decider] = field(default_factory=dict)

    async def apply(self, sessions: Sessions, page: list[int]) -> bool:
        """Read the page's letters (only the columns the rules read), decide and record each one.

        Tells whether the page queued rows that were not queued before.
        """
        accounts = {account.name for account in self.config.accounts}
        async with sessions.begin() as session:
            letters = await stored.rule_letters(session, page, self.needs.columns)
            ready = []
            for item in letters:
                reason = skip_reason(item, self.needs, accounts)
                if reason is None:
                    ready.append(item)
                else:
                    self.report.skipped.append(Skipped(item.id, item.account, item.folder, reason))
            heads = await stored.header_slices(
                session, [item.id for item in ready if needs_header(item, self.needs)]
            )
            self.report.headers_read += len(heads)
            known = await stored.known_hits(session, [item.id for item in ready])
            book = _Book(session, self.report)
            for item in ready:
                letter = item.letter
                if item.id in heads:
                    letter = dataclasses.replace(letter, headers=parse_header_block(heads[item.id]))
                decision = narrow(
                    decide(
                        self.ruleset,
                        letter,
                        account=item.account,
                        folder=item.folder,
                        size=item.size,
                    ),
                    self.named,
                )
                self.report.count(decision)
                self.report.applied_ids.append(item.id)
                await book.record(
                    self._decider(item.account, item.folder),
                    item,
                    StoredLetter(item.id, letter, item.size, item.received_at),
                    decision,
                    known,
                )
            await book.flush()
        return book.new > 0

    def _decider(self, account: str, folder: str) -> Decider:
        """Give the (account, folder)'s decider, whose effect rows are the daemon's own."""
        decider = self._deciders.get((account, folder))
        if decider is None:
            decider = self._deciders[(account, folder)] = Decider(
                RulesHolder(self.ruleset),
                account,
                folder,
                forward_fuse_per_hour=self.config.outbox.forward_fuse_per_hour,
            )
        return decider


@dataclass
class _Book:
    """One page's writes: hits and effect rows gathered and written together at the end."""

    session: AsyncSession
    report: ApplyReport
    hits: list[tuple[int, str, str, list[dict[str, object]]]] = field(default_factory=list)
    rows: list[outbox.NewEffect] = field(default_factory=list)
    new: int = 0

    async def record(
        self,
        decider: Decider,
        item: stored.RuleLetter,
        letter: StoredLetter,
        decision: Decision,
        known: set[tuple[int, str, str]],
    ) -> None:
        """Record one decision as the daemon does: new hits, effect rows, deletion mark, Responsible."""
        version = decision.ruleset_version
        for hit in decision.hits:
            if (item.id, hit.rule, version) not in known:
                self.hits.append(
                    (item.id, hit.rule, version, [effect.as_dict() for effect in hit.effects])
                )
        if any(isinstance(effect, Forward) for effect in decision.effects):
            await self.flush()  # the forward fuse counts the rows queued before this letter's
        rows, fused = await decider.effect_rows(self.session, item.account_id, letter, decision)
        self.rows.extend(rows)
        self.report.fused += fused
        if decision.marks_deleted:
            await outbox.mark_deleted(self.session, item.id)
            self.report.marked_deleted += 1
        chosen = responsible.rule_choice(decision)
        if chosen is not None:
            await outbox.set_responsible(self.session, item.id, chosen.login, reason=chosen.reason)
            self.report.responsible_set += 1

    async def flush(self) -> None:
        """Write the gathered hits and rows; count the rows new and those already queued."""
        await outbox.record_hits(self.session, self.hits)
        self.report.hits_recorded += len(self.hits)
        new = await outbox.add_new_effects(self.session, self.rows)
        self.new += len(new)
        for row in self.rows:
            if row.key in new:
                self.report.queued[row.kind] = self.report.queued.get(row.kind, 0) + 1
        self.report.already_queued += len(self.rows) - len(new)
        self.hits, self.rows = [], []
