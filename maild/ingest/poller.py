"""One task per (account, folder): select, fetch new UIDs, hand letters on, then IDLE or poll."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from maild.core.letter import FetchedMessage, ParsedLetter
from maild.core.status import StatusBoard
from maild.errors import ImapAuthError, ImapError, LeaseLost, ParseError
from maild.ingest.imap import ImapEndpoint, ImapSession, connect
from maild.ingest.priority import PUSH_LETTERS, Priority
from maild.ingest.workers import ParserPool
from maild.logging import get_logger
from maild.metrics import Metrics

log = get_logger(__name__)
T = TypeVar("T")

MAX_CHUNK_LETTERS = 150
MAX_CHUNK_BYTES = 32 * 1024 * 1024
QUEUE_CHUNKS = 2
MAX_STORE_GROUP = 32
ONCE_ATTEMPTS = 3
#: A letter over this many bytes is fetched in a chunk of its own.
BIG_LETTER_BYTES = MAX_CHUNK_BYTES // 4
#: Bytes of letters a folder holds fetched and not yet stored; a bigger chunk (one big letter)
#: is fetched only when nothing else is in flight, so two big letters never stand side by side.
MAX_FLIGHT_BYTES = MAX_CHUNK_BYTES


@dataclass(frozen=True)
class Cursor:
    """Where a folder's sync stands: the UIDVALIDITY seen and the last UID stored under it."""

    uidvalidity: int | None
    last_uid: int


class LetterSink(Protocol):
    """Where fetched letters go; the pipeline implements it on the database."""

    async def cursor(self) -> Cursor:
        """Read the folder's cursor."""
        ...

    async def set_uidvalidity(self, uidvalidity: int, *, changed: bool) -> None:
        """Adopt a new UIDVALIDITY, resetting the last UID so every letter is looked at again."""
        ...

    async def store_many(
        self,
        items: Sequence[tuple[FetchedMessage, ParsedLetter | None, str | None]],
        *,
        push: bool = False,
    ) -> list[str]:
        """Store letters (in UID order) with the cursor; give each one's outcome name.

        ``push``: the letters were heard in IDLE and are few; other folders' writes give way.
        """
        ...

    async def synced(self) -> None:
        """Record that the folder has been read to its end."""
        ...


class _Flight:
    """Count the bytes of letters fetched and not yet stored, holding the fetcher past a bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes fit under the bound, or nothing is in flight; count them."""
        while self.used > 0 and self.used + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def give(self, size: int) -> None:
        """Count bytes as stored (or, negative, as fetched beyond the estimate) and wake the fetcher."""
        self.used -= size
        self._freed.set()


class _Stopped(Exception):
    """The daemon stopped while a call to the server was still waiting for its answer."""


@dataclass(frozen=True)
class PollOptions:
    """How one folder is watched."""

    poll_interval: float = 60.0
    idle_restart: float = 300.0
    max_letter_bytes: int = 50 * 1024 * 1024
    reconnect_max: float = 300.0


class FolderPoller:
    """Keep one folder synced into a sink, reconnecting with jittered backoff on any error."""

    def __init__(
        self,
        *,
        account: str,
        folder: str,
        endpoint: ImapEndpoint,
        sink: LetterSink,
        parser: ParserPool,
        options: PollOptions,
        status: StatusBoard,
        metrics: Metrics,
        stop: asyncio.Event,
        priority: Priority | None = None,
    ) -> None:
        self.account = account
        self.folder = folder
        self.endpoint = endpoint
        self.sink = sink
        self.parser = parser
        self.options = options
        self.status = status
        self.metrics = metrics
        self.stop = stop
        self.log = log.bind(account=account, folder=folder)
        self.priority = priority if priority is not None else Priority()
        self._failures = 0
        self._stored_through = 0
        self._pushed = False  # the letters being taken in came by IDLE, few: a push

    async def run(self, *, once: bool = False) -> bool:
        """Sync until stopped (or, with once, until the folder is read); give True on success."""
        self._failures = 0
        attempts = 0  # never reset: bounds a --once run even when each connect succeeds
        while not self.stop.is_set():
            attempts += 1
            try:
                await self._session_loop(once=once)
                return True
            except LeaseLost as exc:  # another process polls the folder now: leave it to it
                self.log.warning("lease_lost", error=str(exc))
                return True
            except _Stopped:
                return True
            except ImapAuthError as exc:
                self._failures += 1
                self._failed(f"login refused: {exc}", level="error")
                if once:
                    return False
            except ImapError as exc:
                self._failures += 1
                self._failed(str(exc), level="warning")
                if once and attempts >= ONCE_ATTEMPTS:
                    return False
            except Exception as exc:  # a database outage must not kill the folder's task
                self._failures += 1
                self.log.exception("sync_failed")
                self._failed(f"{type(exc).__name__}: {exc}", level="warning")
                if once and attempts >= ONCE_ATTEMPTS:
                    return False
            await self._sleep(self._backoff(self._failures))
        return True

    def _failed(self, message: str, *, level: str) -> None:
        """Log and publish why the folder is not syncing."""
        getattr(self.log, level)("imap_error", error=message)
        self.status.error(self.account, self.folder, message)
        self.metrics.reconnects.labels(self.account, self.folder).inc()
        self.metrics.connected.labels(self.account, self.folder).set(0)

    def _backoff(self, failures: int) -> float:
        """Jittered exponential backoff, so many folders do not reconnect in lockstep."""
        ceiling = min(self.options.reconnect_max, 2.0 ** min(failures, 16))
        return random.uniform(ceiling / 2, ceiling)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the daemon stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _session_loop(self, *, once: bool) -> None:
        """Run one connection's life: sync, then wait for news, until stop or an error."""
        session = await self._unless_stopped(connect(self.endpoint))
        self._failures = 0  # a good connection resets the backoff
        try:
            self.status.connected(self.account, self.folder)
            self.metrics.connected.labels(self.account, self.folder).set(1)
            cursor: Cursor | None = None
            pushed = False
            while not self.stop.is_set():
                cursor = await self.sync(session, cursor, pushed=pushed)
                if once:
                    return
                pushed = await self._wait_for_news(session)
        finally:
            await session.close()

    async def _unless_stopped(self, call: Awaitable[T]) -> T:
        """Await a call to the server, abandoning it when the daemon stops.

        A server that stopped answering must not hold up a stop for the whole grace period;
        abandoning a read loses nothing, since letters not yet stored are fetched again.
        """
        task = asyncio.ensure_future(call)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise _Stopped
        return task.result()

    async def _wait_for_news(self, session: ImapSession) -> bool:
        """IDLE when the server has it, else sleep the poll interval; give True when IDLE heard news."""
        if not session.has_idle:
            await self._sleep(self.options.poll_interval)
            return False
        idle = asyncio.ensure_future(session.idle_wait(self.options.idle_restart))
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if idle.done():
            return idle.result()  # re-raises a connection error
        idle.cancel()
        return False

    async def sync(
        self, session: ImapSession, known: Cursor | None = None, *, pushed: bool = False
    ) -> Cursor:
        """Bring the folder up to date: UIDVALIDITY check, then every UID after the cursor; give the cursor.

        ``known`` is the cursor this session's last pass left. While the folder stays selected
        for IDLE, neither SELECT nor the database is asked again: UIDs cannot change within one
        selection (RFC 3501, 2.3.1.1), and only this poller moves the folder's cursor.
        ``pushed``: IDLE reported the news; a few new letters then go ahead of other folders'
        backlogs (``Priority``).
        """
        if known is not None and session.has_idle and session.selected == self.folder:
            cursor = known
        else:
            cursor = await self._open_folder(session)
        sizes: dict[int, int] | None = None
        if pushed:  # a few letters, as a rule: their sizes in the same round trip
            sizes = await self._unless_stopped(session.sizes_after(cursor.last_uid))
            uids = sorted(sizes)
        else:
            uids = await self._unless_stopped(session.uids_after(cursor.last_uid))
        if uids:
            self._pushed = pushed and len(uids) <= PUSH_LETTERS
            try:
                if self._pushed:
                    with self.priority.push():
                        stored_through = await self._ingest(session, uids, sizes)
                else:
                    stored_through = await self._ingest(session, uids, sizes)
            finally:
                self._pushed = False
            cursor = Cursor(cursor.uidvalidity, max(cursor.last_uid, stored_through))
        if not self.stop.is_set():
            await self.sink.synced()
            self.status.synced(self.account, self.folder)
        return cursor

    async def _open_folder(self, session: ImapSession) -> Cursor:
        """SELECT the folder and read its cursor, adopting a new UIDVALIDITY if the server has one."""
        state = await self._unless_stopped(session.select(self.folder))
        cursor = await self.sink.cursor()
        if cursor.uidvalidity != state.uidvalidity:
            changed = cursor.uidvalidity is not None
            if changed:
                self.log.warning(
                    "uidvalidity_changed", old=cursor.uidvalidity, new=state.uidvalidity
                )
            await self.sink.set_uidvalidity(state.uidvalidity, changed=changed)
            cursor = Cursor(uidvalidity=state.uidvalidity, last_uid=0)
        return cursor

    def _chunks(self, uids: Sequence[int], sizes: dict[int, int]) -> list[tuple[list[int], bool]]:
        """Group UIDs into fetches bounded by count and bytes; oversize letters fetch headers only."""
        chunks: list[tuple[list[int], bool]] = []
        current: list[int] = []
        current_bytes = 0
        for uid in uids:
            size = sizes.get(uid)
            if size is None:
                continue  # expunged meanwhile
            oversize = size > self.options.max_letter_bytes
            if oversize or size > BIG_LETTER_BYTES:  # alone, after the letters before it
                if current:
                    chunks.append((current, False))
                    current, current_bytes = [], 0
                chunks.append(([uid], oversize))
                continue
            if current and (
                len(current) >= MAX_CHUNK_LETTERS or current_bytes + size > MAX_CHUNK_BYTES
            ):
                chunks.append((current, False))
                current, current_bytes = [], 0
            current.append(uid)
            current_bytes += size
        if current:
            chunks.append((current, False))
        return chunks

    async def _ingest(
        self, session: ImapSession, uids: Sequence[int], sizes: dict[int, int] | None = None
    ) -> int:
        """Fetch, parse and store with the three stages overlapped, in UID order; give the last UID stored."""
        self._stored_through = 0
        if sizes is None:
            sizes = await self._unless_stopped(session.sizes(uids))
        queue: asyncio.Queue[list[tuple[FetchedMessage, asyncio.Future[ParsedLetter]]] | None] = (
            asyncio.Queue(maxsize=QUEUE_CHUNKS)
        )
        flight = _Flight(MAX_FLIGHT_BYTES)
        chunks = self._chunks(uids, sizes)
        producer = asyncio.ensure_future(self._produce(session, chunks, sizes, queue, flight))
        try:
            await self._consume(queue, flight)
        finally:
            if not producer.done():
                producer.cancel()  # stopping, or storing failed: the session is dropped after
                await asyncio.wait({producer})
        if not producer.cancelled():
            producer.result()  # a fetch error ends the consumer early: re-raise it here
        return self._stored_through

    async def _produce(
        self,
        session: ImapSession,
        chunks: list[tuple[list[int], bool]],
        sizes: dict[int, int],
        queue: asyncio.Queue[list[tuple[FetchedMessage, asyncio.Future[ParsedLetter]]] | None],
        flight: _Flight,
    ) -> None:
        """Fetch chunk after chunk, within the bytes in flight, and start parsing each letter."""
        try:
            for chunk, headers_only in chunks:
                if self.stop.is_set():
                    break
                expected = 0 if headers_only else sum(sizes[uid] for uid in chunk)
                if not self._pushed:
                    await self.priority.give_way()
                await flight.take(expected)
                messages = await self._unless_stopped(
                    session.fetch(chunk, headers_only=headers_only)
                )
                flight.give(expected - sum(len(m.raw) for m in messages))
                futures = self.parser.submit_many(
                    [m.raw for m in messages], lane=self, express=self._pushed
                )
                await queue.put(list(zip(messages, futures, strict=True)))
        except asyncio.CancelledError:
            raise  # the consumer is gone: nobody waits for the end marker
        except Exception:
            await queue.put(None)
            raise
        await queue.put(None)

    async def _consume(
        self,
        queue: asyncio.Queue[list[tuple[FetchedMessage, asyncio.Future[ParsedLetter]]] | None],
        flight: _Flight,
    ) -> None:
        """Store letters in UID order, grouping those already parsed, so the cursor only moves forward."""
        while (batch := await queue.get()) is not None:
            position = 0
            while position < len(batch):
                if self.stop.is_set():
                    for _, pending in batch[position:]:
                        pending.cancel()
                    return
                group = [batch[position]]
                await asyncio.wait({group[0][1]})
                # Take along the following letters whose parse is already done, in order.
                while (
                    position + len(group) < len(batch)
                    and len(group) < MAX_STORE_GROUP
                    and batch[position + len(group)][1].done()
                ):
                    group.append(batch[position + len(group)])
                if not self._pushed:
                    await self.priority.give_way()
                await self._store_group(group)
                flight.give(sum(len(message.raw) for message, _ in group))
                position += len(group)

    async def _store_group(
        self, group: list[tuple[FetchedMessage, asyncio.Future[ParsedLetter]]]
    ) -> None:
        """Store parsed letters together; a parse failure becomes a flagged raw letter."""
        items: list[tuple[FetchedMessage, ParsedLetter | None, str | None]] = []
        for message, future in group:
            parsed: ParsedLetter | None = None
            error: str | None = None
            try:
                parsed = future.result()
            except ParseError as exc:
                error = str(exc)[:4000]
            if message.headers_only:
                error = (
                    f"letter of {message.size} bytes is over daemon.max_letter_bytes "
                    f"({self.options.max_letter_bytes}); only its header was stored"
                )
            items.append((message, parsed, error))
        outcomes = await self.sink.store_many(items, push=self._pushed)
        self._stored_through = group[-1][0].uid  # the transaction moved the cursor this far
        for (message, _), outcome in zip(group, outcomes, strict=True):
            self._count(message, outcome)

    def _count(self, message: FetchedMessage, outcome: str) -> None:
        """Update status and metrics for one stored letter."""
        state = self.status.folder(self.account, self.folder)
        if outcome in ("stored", "rekeyed"):
            state.stored += 1
            self.metrics.letters_ingested.labels(self.account, self.folder).inc()
            if message.internaldate is not None:
                lag = (datetime.now(UTC) - message.internaldate).total_seconds()
                self.metrics.fetch_lag.labels(self.account).observe(max(lag, 0.0))
        elif outcome in ("failed", "oversize"):
            state.failed += 1
            self.metrics.letters_failed.labels(self.account, self.folder).inc()
        else:
            state.duplicates += 1
