"""Replay the rules over letters already stored, read-only, page by page, as the daemon would decide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from maild.core.decision import Decision
from maild.core.letter import ParsedLetter
from maild.db import migrate, repo
from maild.db.engine import create_engine, is_sqlite, session_factory
from maild.dryrun.outlook import Outlook, outlook
from maild.dryrun.trial import decide
from maild.errors import DatabaseError, ParseError, SchemaOutOfDate
from maild.ingest.workers import ParserPool
from maild.rules.engine import RuleSet
from maild.settings import Config

PAGE_LETTERS = 200
PAGE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReplayQuery:
    """Which stored letters to replay: received in [since, until), optionally one account or folder."""

    since: datetime
    until: datetime | None = None
    account: str | None = None
    folder: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """One stored letter replayed: the decision, or why it could not be evaluated."""

    letter_id: int
    account: str
    folder: str
    status: str
    size: int
    received_at: datetime
    letter: ParsedLetter | None
    decision: Decision | None
    error: str | None = None
    outlook: Outlook | None = None

    @property
    def header_only(self) -> bool:
        """Tell whether only the header was stored (an oversize letter), so the body is unknown."""
        return self.status == "oversize"


@dataclass
class ReplaySummary:
    """The totals of a replay: letters tried, matches per rule, effects per kind, implicit keeps."""

    matched: dict[str, int]
    tried: int = 0
    not_evaluated: int = 0
    header_only: int = 0
    implicit_keeps: int = 0
    leads_opened: int = 0
    effects: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_rules(cls, ruleset: RuleSet) -> ReplaySummary:
        """Start with every rule at zero, in file order, so a rule that never matched shows."""
        return cls(matched={rule.name: 0 for rule in ruleset.rules})

    def add(self, item: Replayed) -> None:
        """Count one replayed letter."""
        self.tried += 1
        if item.decision is None:
            self.not_evaluated += 1
            return
        self.header_only += item.header_only
        self.implicit_keeps += item.decision.implicit_keep
        lead = item.outlook.lead if item.outlook is not None else None
        self.leads_opened += lead is not None and lead.opens
        for hit in item.decision.hits:
            self.matched[hit.rule] = self.matched.get(hit.rule, 0) + 1
        for effect in item.decision.effects:
            self.effects[effect.kind] = self.effects.get(effect.kind, 0) + 1


@asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """Turn a driver's or SQLAlchemy's error into a DatabaseError the CLI reports in one line."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"cannot read the database: {type(exc).__name__}: {exc}") from exc


def missing_sqlite_file(url: str) -> str | None:
    """Name the SQLite file when it does not exist, so a read-only command never creates one."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or Path(database).expanduser().exists():
        return None
    return database


async def open_read_only(config: Config) -> AsyncEngine:
    """Open the database without migrating it, refusing a schema this maild does not speak."""
    url = config.database_url()
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise SchemaOutOfDate(
            f"database file {missing} does not exist: run `maild db upgrade -c CONFIG`"
        )
    async with database_errors():
        engine = create_engine(url)
        try:
            await migrate.require_current(engine)
        except BaseException:
            await engine.dispose()
            raise
    return engine


def pages(rows: Sequence[tuple[int, int]]) -> Iterator[list[int]]:
    """Cut (id, size) rows into pages of at most 200 letters and 32 MiB, so memory stays bounded."""
    page: list[int] = []
    size = 0
    for letter_id, letter_size in rows:
        if page and (len(page) >= PAGE_LETTERS or size + letter_size > PAGE_BYTES):
            yield page
            page, size = [], 0
        page.append(letter_id)
        size += letter_size
    if page:
        yield page


async def selected(session: AsyncSession, query: ReplayQuery) -> list[tuple[int, int]]:
    """List (id, size) of the stored letters a query selects, oldest first, without their bytes."""
    return await repo.letter_ids_received(
        session,
        since=query.since,
        until=query.until,
        account=query.account,
        folder=query.folder,
        limit=query.limit,
    )


async def replay(
    config: Config, query: ReplayQuery, emit: Callable[[Replayed], None]
) -> ReplaySummary:
    """Evaluate the rules on every stored letter the query selects, oldest first; emit each one."""
    ruleset = config.ruleset
    summary = ReplaySummary.for_rules(ruleset)
    engine = await open_read_only(config)
    parser = ParserPool(config.daemon.parse_workers, timeout=config.daemon.parse_timeout_seconds)
    try:
        sessions = session_factory(engine)
        async with database_errors(), sessions() as session:
            rows = await selected(session, query)
        for page in pages(rows):
            async with database_errors(), sessions() as session:
                stored = await repo.stored_letters(session, page)
            futures = parser.submit_many([item.raw for item in stored])
            try:
                for item, parsed in zip(stored, futures, strict=True):
                    replayed = _with_outlook(config, await _evaluate(ruleset, item, parsed))
                    summary.add(replayed)
                    emit(replayed)
            finally:  # emit failed (a reader that went away): the rest of the page is let go
                _let_go(futures)
    finally:
        parser.close()
        await engine.dispose()
    return summary


async def _evaluate(
    ruleset: RuleSet, item: repo.StoredLetter, parsed: asyncio.Future[ParsedLetter]
) -> Replayed:
    """Decide on one stored letter from its re-parsed raw bytes; a parse failure is reported."""
    letter: ParsedLetter | None = None
    error = None
    try:
        letter = await parsed
    except ParseError as exc:
        error = str(exc)
    decision = None
    if letter is not None:
        decision = decide(ruleset, letter, account=item.account, folder=item.folder, size=item.size)
    return Replayed(
        letter_id=item.id,
        account=item.account,
        folder=item.folder,
        status=item.status,
        size=item.size,
        received_at=item.received_at,
        letter=letter,
        decision=decision,
        error=error,
    )


def _with_outlook(config: Config, item: Replayed) -> Replayed:
    """Add the lead verdict and the Responsible to an evaluated letter, as ``rules test`` shows."""
    if item.letter is None or item.decision is None:
        return item
    view = outlook(config, item.account, item.folder, item.letter, item.decision)
    return replace(item, outlook=view)


def _let_go(futures: Sequence[asyncio.Future[ParsedLetter]]) -> None:
    """Cancel the parses not awaited, and mark failed ones seen, so none is reported as lost."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
