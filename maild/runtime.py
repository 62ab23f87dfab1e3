"""The asyncio main: one named task per watched folder, signals, and a staged graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maild.autoreply.policy import Period, period_state
from maild.autoreply.responder import Autoresponder, hand_switches, period_of
from maild.autoreply.scheduler import AutoreplyScheduler
from maild.core.status import StatusBoard
from maild.db import autoreply as autoreply_db
from maild.db import leases, migrate, notify
from maild.db import outbox as outbox_db
from maild.db.engine import create_engine, display_url, is_sqlite, session_factory
from maild.db.gate import WriteGate
from maild.db.tables import OutboxItem
from maild.decide import Decider, RulesHolder
from maild.dryrun.replay import database_errors, missing_sqlite_file, open_read_only
from maild.errors import ConfigError, DatabaseError, MaildError
from maild.health import HealthServer
from maild.ingest.imap import ImapEndpoint
from maild.ingest.poller import FolderPoller, PollOptions
from maild.ingest.priority import Priority
from maild.ingest.workers import ParserPool
from maild.leads.book import LeadBook
from maild.leads.policy import lead_policy
from maild.leasing import LeaseKeeper, new_owner_id
from maild.logging import get_logger
from maild.memory import unmap_big_blocks
from maild.metrics import Metrics
from maild.outbox.dispatcher import Dispatcher, DispatchReport
from maild.pipeline import FolderStore, RetryReport, prepare_folders, retry_failed
from maild.settings import (
    AccountConfig,
    AutoreplyConfig,
    Config,
    insecure_transports,
    load_config,
)
from maild.watchdog import watch_loop

log = get_logger(__name__)
_T = TypeVar("_T")


@dataclass
class RunResult:
    """What one run did, for the CLI's exit code and summary."""

    ok: bool = True
    status: StatusBoard = field(default_factory=StatusBoard)
    health_port: int | None = None
    outbox: DispatchReport | None = None
    outbox_left: dict[str, int] = field(default_factory=dict)


async def open_database(config: Config) -> AsyncEngine:
    """Open the database and make sure its schema is the one this maild speaks."""
    engine = create_engine(
        config.database_url(),
        pool_size=config.database.pool_size,
        max_overflow=config.database.max_overflow,
    )
    try:
        if config.database.migrate_on_start:
            await migrate.upgrade(engine)
        else:
            await migrate.require_current(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def endpoint_for(account: AccountConfig, timeout: float) -> ImapEndpoint:
    """Build the IMAP endpoint, reading the password only now."""
    imap = account.imap
    return ImapEndpoint(
        host=imap.host,
        port=imap.port,
        security=imap.security,
        username=imap.username,
        password=imap.read_password().get_secret_value(),
        ca_file=str(imap.ca_file) if imap.ca_file else None,
        timeout=timeout,
        tls_verify=imap.tls_verify,
        allow_plaintext=imap.allow_plaintext,
    )


def warn_insecure(config: Config) -> int:
    """Log each connection target without verified TLS once, loudly; give how many there are."""
    found = insecure_transports(config)
    for item in found:
        log.warning(
            item.event, config_key=f"{item.where}.{item.key}", target=item.target, why=item.message
        )
    return len(found)


class Daemon:
    """Owns the engine, the parser pool and the pollers for one run."""

    def __init__(
        self,
        config: Config,
        *,
        stop: asyncio.Event | None = None,
        config_path: Path | None = None,
    ) -> None:
        unmap_big_blocks()  # big letters leave no resident peak behind in maild's threads
        self.config = config
        self.config_path = config_path
        self.stop = stop or asyncio.Event()
        self.status = StatusBoard()
        self.metrics = Metrics()
        self.health: HealthServer | None = None
        self.rules = RulesHolder(config.ruleset)
        self.dispatcher: Dispatcher | None = None
        self.autoreply: AutoreplyScheduler | None = None
        self._write_gate: WriteGate | None = None  # SQLite: the folders' writes take turns
        self._priority = Priority()  # shared by every folder: pushes go ahead of backlogs

    async def run(self, *, once: bool = False) -> RunResult:
        """Sync every enabled folder; with once, read each folder to its end and return."""
        warn_insecure(self.config)
        engine = await open_database(self.config)
        parser = ParserPool(
            self.config.daemon.parse_workers, timeout=self.config.daemon.parse_timeout_seconds
        )
        result = RunResult(status=self.status)
        watchdog = asyncio.create_task(watch_loop(), name="watchdog")
        try:
            sessions = session_factory(engine)
            folder_ids = await prepare_folders(sessions, self.config)
            self.dispatcher = self._dispatcher(sessions)
            # A daemon shares the folders with any other `maild run` on the database by leases;
            # a single pass (--once) reads every folder, relying on exactly-once storage alone.
            owner = None if once else new_owner_id()
            pollers = self._pollers(sessions, folder_ids, parser, owner=owner)
            if (
                not once and len(pollers) > 1
            ):  # one folder's backlog must not hold up another's push
                parser.start_push_worker()
            if not once:
                self.autoreply = await self._start_autoreply(sessions)
            listen = self.config.health_listen()
            if not once and listen:
                self.health = HealthServer(listen, self.status, self.metrics)
                await self.health.start()
                result.health_port = self.health.port
            log.info(
                "daemon_started",
                folders=len(pollers),
                once=once,
                rules=len(self.rules.current),
                ruleset_version=self.rules.current.version,
            )
            result.ok = await self._run_all(pollers, once=once, engine=engine, owner=owner)
            if once:
                result.outbox = await self.dispatcher.drain(self.config.outbox.once_drain_seconds)
                async with sessions() as session:
                    result.outbox_left = await outbox_db.counts(session)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if self.autoreply is not None:
                self.autoreply.stop()
            if self.dispatcher is not None:
                await self.dispatcher.close()
            if self.health is not None:
                await self.health.stop()
            parser.close()
            await engine.dispose()
        log.info("daemon_stopped", ok=result.ok)
        return result

    async def _start_autoreply(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AutoreplyScheduler | None:
        """Start the scheduler that switches auto-replies on and off, when an account has one."""
        periods = autoreply_periods(self.config)
        if not periods:
            return None

        async def read() -> dict[str, datetime]:
            async with sessions() as session:
                return await hand_switches(session, periods)

        scheduler = AutoreplyScheduler(periods, self.status, read)
        await scheduler.start()
        return scheduler

    def _dispatcher(self, sessions: async_sessionmaker[AsyncSession]) -> Dispatcher:
        """Build the outbox dispatcher, reading account passwords only when it connects."""
        timeout = self.config.daemon.imap_timeout_seconds
        return Dispatcher(
            sessions,
            self.config,
            endpoint_for=lambda account: endpoint_for(account, timeout),
            metrics=self.metrics,
            status=self.status,
            write_gate=self._sqlite_gate(),
        )

    def _sqlite_gate(self) -> WriteGate | None:
        """Give the lock every writer of this process takes turns at on SQLite (None on PostgreSQL).

        SQLite has one writer, taken by sleeping and retrying: without a shared turn the
        dispatcher lost nearly every race to a folder's backlog, and its moves fell behind.
        """
        if self._write_gate is None and is_sqlite(self.config.database_url()):
            self._write_gate = WriteGate()
        return self._write_gate

    async def _run_all(
        self,
        pollers: dict[int, FolderPoller],
        *,
        once: bool,
        engine: AsyncEngine,
        owner: str | None,
    ) -> bool:
        """Run the pollers, and beside them the dispatcher unless this is a single pass."""
        if once or self.dispatcher is None or owner is None:
            return await self._run_pollers(list(pollers.values()), once=once)
        keeper = LeaseKeeper(
            session_factory(engine),
            pollers,
            owner=owner,
            lease_seconds=self.config.daemon.lease_seconds,
            status=self.status,
            stop=self.stop,
            grace=self.config.daemon.shutdown_grace_seconds,
        )
        helpers = [
            asyncio.create_task(
                self.dispatcher.run(self.stop, tick=self.config.outbox.poll_seconds),
                name="outbox",
            ),
            asyncio.create_task(
                notify.listen(engine, self.dispatcher.wake, self.stop), name="outbox-listen"
            ),
            asyncio.create_task(
                notify.listen(engine, keeper.wake, self.stop, channel=leases.CHANNEL),
                name="leases-listen",
            ),
        ]
        try:
            return await keeper.run()
        finally:
            self.stop.set()
            try:
                await asyncio.wait_for(
                    asyncio.gather(*helpers), self.config.daemon.shutdown_grace_seconds
                )
            except TimeoutError:
                log.warning("cancelled_after_grace", tasks=1)

    def reload(self) -> bool:
        """Compile the config file's rules beside the running ones; swap them in only if valid."""
        if self.config_path is None:
            log.warning("reload_skipped", reason="the daemon was not started from a config file")
            return False
        try:
            fresh = load_config(self.config_path, check_secrets=False)
        except ConfigError as exc:
            log.error("reload_failed", problems=exc.problems, kept=self.rules.current.version)
            return False
        old = self.rules.current.version
        self.rules.current = fresh.ruleset
        changed = _restart_needed(self.config, fresh)
        if changed:
            log.warning("reload_needs_restart", changed=changed)
        log.info("rules_reloaded", rules=len(fresh.ruleset), old=old, new=fresh.ruleset.version)
        return True

    def _pollers(
        self,
        sessions: async_sessionmaker[AsyncSession],
        folder_ids: dict[tuple[str, str], int],
        parser: ParserPool,
        *,
        owner: str | None = None,
    ) -> dict[int, FolderPoller]:
        """Build one poller per enabled (account, folder), by folder id.

        With a lease ``owner``, each folder stores only while that process holds its lease,
        and each poller has a stop of its own, so it can be stopped when the lease goes.
        """
        daemon = self.config.daemon
        options = PollOptions(
            poll_interval=daemon.poll_interval_seconds,
            idle_restart=daemon.idle_restart_seconds,
            max_letter_bytes=daemon.max_letter_bytes,
            reconnect_max=daemon.reconnect_max_seconds,
        )
        pollers: dict[int, FolderPoller] = {}
        for account in self.config.accounts:
            if not account.enabled:
                continue
            endpoint = endpoint_for(account, daemon.imap_timeout_seconds)
            policy = lead_policy(account)
            period = period_of(account)
            responder = (
                Autoresponder(account.name, period, policy.addresses) if period.enabled else None
            )
            for folder in account.folders.watch:
                folder_id = folder_ids[(account.name, folder)]
                store = FolderStore(
                    sessions=sessions,
                    account=account.name,
                    folder=folder,
                    folder_id=folder_id,
                    first_sync_mode=daemon.first_sync,
                    decider=Decider(
                        self.rules,
                        account.name,
                        folder,
                        forward_fuse_per_hour=self.config.outbox.forward_fuse_per_hour,
                        leads=LeadBook(policy, folder),
                        addresses=policy.addresses,
                        autoreply=responder if folder != account.folders.sent else None,
                    ),
                    on_queued=self.dispatcher.wake if self.dispatcher is not None else None,
                    is_sent_folder=folder == account.folders.sent,
                    lease_owner=owner,
                    write_gate=self._sqlite_gate(),
                )
                pollers[folder_id] = FolderPoller(
                    account=account.name,
                    folder=folder,
                    endpoint=endpoint,
                    sink=store,
                    parser=parser,
                    options=options,
                    status=self.status,
                    metrics=self.metrics,
                    stop=self.stop if owner is None else asyncio.Event(),
                    priority=self._priority,
                )
        return pollers

    async def _run_pollers(self, pollers: list[FolderPoller], *, once: bool) -> bool:
        """Run the pollers; on stop, give in-flight letters the grace period, then cancel."""
        tasks = [
            asyncio.create_task(p.run(once=once), name=f"poll:{p.account}:{p.folder}")
            for p in pollers
        ]
        if not tasks:
            return True
        stopper = asyncio.create_task(self.stop.wait(), name="stop-signal")
        try:
            pending: set[asyncio.Task[bool]] = set(tasks)
            while pending and not self.stop.is_set():
                done, _ = await asyncio.wait(
                    pending | {stopper},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                pending -= done
            if pending:
                log.info("stopping", in_flight=len(pending))
                _, late = await asyncio.wait(
                    pending, timeout=self.config.daemon.shutdown_grace_seconds
                )
                for task in late:
                    task.cancel()
                if late:
                    log.warning("cancelled_after_grace", tasks=len(late))
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        return all(
            t.done() and not t.cancelled() and t.exception() is None and t.result() for t in tasks
        )

    def install_signal_handlers(self, main_task: asyncio.Task[object]) -> None:
        """First SIGTERM/SIGINT: stop taking work and finish in-flight letters; second: exit now."""
        loop = asyncio.get_running_loop()

        def _on_signal(signame: str) -> None:
            if self.stop.is_set():
                log.warning("second_signal_exit_now", signal=signame)
                main_task.cancel()
                return
            log.info("signal_stopping", signal=signame)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)


def autoreply_periods(config: Config) -> dict[str, Period]:
    """Give the auto-reply of every enabled account that configures one, by account name."""
    return {
        account.name: period_of(account)
        for account in config.accounts
        if account.enabled and account.autoreply != AutoreplyConfig()
    }


def _restart_needed(old: Config, new: Config) -> list[str]:
    """Name the config sections a reload cannot apply: they take effect at the next start."""
    return [
        name
        for name in ("database", "daemon", "smtp", "outbox", "accounts")
        if getattr(old, name) != getattr(new, name)
    ]


async def run_daemon(
    config: Config, *, once: bool = False, config_path: Path | None = None
) -> RunResult:
    """Run the daemon with signal handling; the CLI's entry point."""
    daemon = Daemon(config, config_path=config_path)
    task = asyncio.current_task()
    assert task is not None
    daemon.install_signal_handlers(task)
    return await daemon.run(once=once)


async def upgrade_database(config: Config) -> tuple[str | None, str]:
    """Migrate the schema to head; give the revisions before and after."""
    engine = create_engine(config.database_url())
    try:
        before = await migrate.current_revision(engine)
        await migrate.upgrade(engine)
        after = await migrate.current_revision(engine)
    finally:
        await engine.dispose()
    return before, after or ""


class UnknownRevision(MaildError):
    """A revision named on the command line is not one of this maild's migrations."""


@dataclass(frozen=True)
class DowngradePlan:
    """What `maild db downgrade` would do, shown to the admin before anything is dropped."""

    database: str  # the URL with its password masked
    current: str
    target: str
    undone: list[migrate.Revision]  # newest first; empty when already at the target
    head: str


async def plan_downgrade(config: Config, target: str) -> DowngradePlan:
    """Check ``target`` against the migrations and the database; list the revisions undone."""
    known = migrate.revisions()
    order = ["base", *(r.id for r in known)]
    if target not in order:
        raise UnknownRevision(f"unknown revision {target!r}: the revisions are {', '.join(order)}")
    url = config.database_url()
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise DatabaseError(f"database file {missing} does not exist: nothing to downgrade")
    current = await _current_revision(url) or "base"
    if current not in order:
        raise DatabaseError(
            f"the database schema is at {current}, which this maild does not know: "
            "downgrade it with the maild that upgraded it"
        )
    if order.index(target) > order.index(current):
        raise DatabaseError(
            f"the database schema is at {current}, below {target}: a downgrade only goes down "
            f"(`maild db upgrade` goes up to {known[-1].id})"
        )
    undone = known[order.index(target) : order.index(current)][::-1]
    return DowngradePlan(display_url(url), current, target, undone, known[-1].id)


async def _current_revision(url: str) -> str | None:
    """Read the database's revision, reporting an unreachable database in one line."""
    engine = create_engine(url)
    try:
        async with database_errors():
            return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def downgrade_database(config: Config, plan: DowngradePlan) -> str:
    """Undo the plan's revisions in one transaction; give the revision the schema is at after.

    Refuses when the schema moved since the plan was shown, so no more is dropped than that.
    """
    engine = create_engine(config.database_url())
    try:
        try:
            await migrate.downgrade(engine, plan.target, expect=plan.current)
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(
                f"the downgrade failed and changed nothing: {type(exc).__name__}: {exc}"
            ) from exc
        after = await migrate.current_revision(engine)
    finally:
        await engine.dispose()
    return after or "base"


async def retry_failed_letters(config: Config, *, limit: int | None = None) -> RetryReport:
    """Re-parse every failed letter from its raw bytes."""
    engine = await open_database(config)
    parser = ParserPool(config.daemon.parse_workers, timeout=config.daemon.parse_timeout_seconds)
    try:
        return await retry_failed(session_factory(engine), parser, limit=limit)
    finally:
        parser.close()
        await engine.dispose()


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as `maild outbox list` shows it."""

    id: int
    account: str
    letter_id: int | None
    kind: str
    target: str
    status: str
    attempts: int
    when: str
    last_error: str


async def list_outbox(config: Config, *, status: str | None, limit: int) -> list[OutboxRow]:
    """Read outbox rows, newest first, for the CLI; never creates or migrates a database."""
    engine = await open_read_only(config)
    try:
        async with session_factory(engine)() as session:
            rows = await outbox_db.list_items(session, status=status, limit=limit)
    finally:
        await engine.dispose()
    return [
        OutboxRow(
            id=item.id,
            account=account,
            letter_id=item.letter_id,
            kind=item.kind,
            target=item.target,
            status=item.status,
            attempts=item.attempts,
            when=_when(item).isoformat(timespec="seconds"),
            last_error=item.last_error or "",
        )
        for item, account in rows
    ]


def _when(item: OutboxItem) -> datetime:
    """Give the time that matters for a row: its next attempt, when it was done or given up."""
    if item.status == "pending":
        return item.next_attempt_at
    if item.status == "done" and item.done_at is not None:
        return item.done_at
    return item.updated_at


async def retry_outbox(config: Config, ids: list[int] | None) -> int:
    """Make dead outbox rows pending again so the next pass performs them; give how many."""
    engine = await open_read_only(config)
    try:
        async with session_factory(engine).begin() as session:
            return await outbox_db.revive(session, ids)
    finally:
        await engine.dispose()


async def with_database(
    config: Config, use: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]
) -> _T:
    """Run one CLI query or change on the existing database; never creates or migrates it."""
    engine = await open_read_only(config)
    try:
        return await use(session_factory(engine))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class AutoreplyRow:
    """One account's auto-reply as `maild autoreply status` shows it."""

    account: str
    start: datetime | None
    end: datetime | None
    state: str
    interval_days: int
    switched_off_at: datetime | None


async def autoreply_status(config: Config) -> list[AutoreplyRow]:
    """Give each account's auto-reply period and its state now, manual off switches included."""
    periods = autoreply_periods(config)

    async def read(sessions: async_sessionmaker[AsyncSession]) -> dict[str, datetime]:
        async with sessions() as session:
            return await hand_switches(session, periods)

    switches = await with_database(config, read) if periods else {}
    now = datetime.now(UTC)
    return [
        AutoreplyRow(
            account=name,
            start=period.start,
            end=period.end,
            state=period_state(period, now, switches.get(name)),
            interval_days=round(period.interval / timedelta(days=1)),
            switched_off_at=switches.get(name),
        )
        for name, period in periods.items()
    ]


async def autoreply_switch(config: Config, account: str, *, on: bool, by: str = "") -> str:
    """Switch an account's auto-reply off by hand until its period ends (or undo that)."""
    period = autoreply_periods(config).get(account)
    if period is None or not period.enabled or period.start is None or period.end is None:
        raise MaildError(f"account {account!r} has no enabled auto-reply in the config")
    start, end = period.start, period.end
    now = datetime.now(UTC)
    if not on and now > end:
        raise MaildError(f"the auto-reply of {account!r} already ended at {period.end.isoformat()}")

    async def change(sessions: async_sessionmaker[AsyncSession]) -> bool:
        async with sessions.begin() as session:
            if on:
                return await autoreply_db.switch_back_on(session, account)
            await autoreply_db.switch_off(session, account, start=start, end=end, at=now, by=by)
            return True

    changed = await with_database(config, change)
    if on:
        return "switched back on" if changed else "was not switched off by hand"
    return f"switched off from {now.isoformat(timespec='seconds')} until {period.end.isoformat()}"
