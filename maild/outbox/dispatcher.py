"""The outbox dispatcher: performs queued effects (send, move, copy, flag) at most once each.

It claims due rows with a lease, performs each, and records the outcome: done, retry later with
exponential backoff (4xx replies, dropped connections, timeouts), or dead with the reason (5xx
replies, a folder the server refuses, attempts used up). Mailbox effects of one letter run in
order, so the letter leaves its folder last; a crash between performing and recording means the
effect is performed again once, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.autoreply.compose import compose_reply
from maild.core.addresses import address_problem
from maild.core.decision import FORWARD_MODES
from maild.core.letter import ParsedLetter
from maild.core.status import StatusBoard
from maild.db import autoreply as autoreply_db
from maild.db import outbox, repo, sending
from maild.db.gate import Sessions, gated
from maild.db.tables import utcnow
from maild.errors import (
    ImapCommandError,
    ImapConnectionError,
    ImapError,
    MaildError,
    SmtpPermanentError,
    SmtpTemporaryError,
)
from maild.ingest.imap import ImapEndpoint, ImapSession, connect
from maild.logging import get_logger
from maild.metrics import Metrics
from maild.outbox import batch
from maild.outbox.chunks import Recorder
from maild.outbox.compose import Identity, forward_message_id
from maild.outbox.compose import forward as compose_forward
from maild.outbox.crm import Message, draft_for
from maild.outbox.letter import Composed, Draft, FileAttachment, part_named
from maild.outbox.letter import compose as compose_letter
from maild.outbox.smtp import SmtpSender
from maild.settings import AccountConfig, Config, OutboxConfig

log = get_logger(__name__)

DELETED_FLAG = "\\Deleted"
#: Relay connections a batch of the CRM's letters is sent over at once.
SMTP_CONNECTIONS = 8
#: Letters recorded as sent per transaction. The next chunk is sent while one is recorded, so
#: a crash resends at most two chunks' letters, once.
SEND_CHUNK = 32
#: The most bytes one MULTIAPPEND files in Sent; a larger chunk takes several.
MULTIAPPEND_BYTES = 16 * 1024 * 1024
#: The attachments' bytes a batch reads before it gives its remaining rows back for the next
#: claim (one row is always read), and the sent letters' bytes held until filed: so a batch of
#: letters with 25 MB attached each is not all in memory at once.
LOAD_BYTES = 64 * 1024 * 1024


class Unperformable(MaildError):
    """An effect that can never succeed as queued (no such account, letter gone): park it."""


def check_forward_target(target: str, settings: OutboxConfig) -> None:
    """Refuse a forward row whose target is not one plain address in the allowed domains.

    Rules only queue literal, checked targets; this guards rows written by anything else.
    """
    problem = address_problem(target)
    if problem is not None:
        raise Unperformable(f"forward target {target!r} is not one plain address: {problem}")
    if not settings.forward_allowed(target):
        raise Unperformable(
            f"forward target {target!r} is not in outbox.forward_allowed_domains "
            f"({', '.join(settings.forward_allowed_domains)})"
        )


@dataclass
class DispatchReport:
    """What one pass of the dispatcher did, by outcome."""

    done: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, other: DispatchReport) -> None:
        """Add another pass's counts to these."""
        self.done += other.done
        self.retried += other.retried
        self.dead += other.dead
        self.deferred += other.deferred
        for kind, n in other.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n


@dataclass(frozen=True, slots=True)
class ComposedSend:
    """A CRM letter composed, with the author it is stored under."""

    letter: Composed
    author: sending.Author | None

    @property
    def raw(self) -> bytes:
        """Give the bytes to send."""
        return self.letter.raw

    @property
    def sender(self) -> str:
        """Give the envelope sender."""
        return self.letter.sender

    @property
    def recipients(self) -> tuple[str, ...]:
        """Give the envelope recipients, Bcc included."""
        return self.letter.recipients

    @property
    def parsed(self) -> ParsedLetter:
        """Give the letter as it is stored."""
        return self.letter.parsed


@dataclass(frozen=True, slots=True)
class Sent:
    """A letter the relay accepted and maild stored: its row, bytes and Message-ID."""

    letter_id: int
    raw: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class _Sending:
    """A CRM letter on its way in a batch: its row, what it attaches, and once composed, itself."""

    item: outbox.ClaimedItem
    row: sending.SendRow
    files: list[FileAttachment]
    letters: list[bytes]
    composed: Composed | None = None

    @property
    def raw(self) -> bytes:
        """Give the composed bytes."""
        assert self.composed is not None
        return self.composed.raw

    @property
    def parsed(self) -> ParsedLetter:
        """Give the composed letter as it is stored."""
        assert self.composed is not None
        return self.composed.parsed


Deliver = Callable[[AccountConfig, int, int], Awaitable[Sent]]
_Recorder = Recorder[_Sending, list[tuple[_Sending, int]]]
EndpointFor = Callable[[AccountConfig], ImapEndpoint]
Connect = Callable[[ImapEndpoint], Awaitable[ImapSession]]


class Dispatcher:
    """Claims and performs due outbox rows; one per maild process is enough."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: Config,
        *,
        endpoint_for: EndpointFor,
        connect_imap: Connect = connect,
        metrics: Metrics | None = None,
        status: StatusBoard | None = None,
        write_gate: asyncio.Lock | None = None,
    ) -> None:
        # with a write gate (SQLite), every transaction waits its turn behind the job sharing it
        self.sessions: Sessions = gated(sessions, write_gate)
        self.config = config
        self.settings = config.outbox
        self._endpoint_for = endpoint_for
        self._connect_imap = connect_imap
        self._accounts = {account.name: account for account in config.accounts}
        self._imap: dict[str, ImapSession] = {}
        self._sender: SmtpSender | None = None
        self._sent_folders: dict[str, tuple[str, int, int]] = {}
        self._more_senders: list[SmtpSender] = []
        self._wake = asyncio.Event()
        self._metrics = metrics
        self._status = status  # /healthz shows the outbox's rows by status

    def wake(self) -> None:
        """Say new rows were queued, so the dispatcher looks now instead of at its next tick."""
        self._wake.set()

    async def close(self) -> None:
        """Log out of every connection the dispatcher opened."""
        for session in self._imap.values():
            await session.close()
        self._imap.clear()
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        for sender in self._more_senders:
            await sender.close()
        self._more_senders.clear()

    # -- passes ----------------------------------------------------------------------------

    async def run_once(self) -> DispatchReport:
        """Perform every row due now, in batches, and give the counts.

        The CRM's letters of one batch are still being stored and filed while the next batch
        is claimed and sent; the pass ends once every one of them is recorded.
        """
        report = DispatchReport()
        recorders: dict[str, _Recorder] = {}
        try:
            while True:
                async with self.sessions.begin() as session:
                    items = await outbox.claim_due(
                        session,
                        limit=self.settings.batch_size,
                        lease_seconds=self.settings.lease_seconds,
                        mailbox_limit=self.settings.mailbox_batch_size,
                    )
                if not items:
                    break
                claimed = asyncio.get_running_loop().time()
                items = await self._perform_mailbox(items, claimed, report)
                items = await self._send_batch(items, claimed, report, recorders)
                for item in items:
                    if await self._claim_lost(item, claimed):
                        continue
                    await self._perform(item, report)
            for recorder in recorders.values():
                await recorder.finish()
        finally:
            for recorder in recorders.values():
                await recorder.cancel()
        return report

    async def drain(self, budget: float) -> DispatchReport:
        """Perform due rows, waiting for retries that fall due within ``budget`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        report = DispatchReport()
        while True:
            report.add(await self.run_once())
            async with self.sessions() as session:
                due = await outbox.next_due_at(session)
            if due is None:
                return report
            wait = (due - utcnow()).total_seconds()
            if loop.time() + max(wait, 0) > deadline:
                return report
            await asyncio.sleep(max(wait, 0.05))

    async def run(self, stop: asyncio.Event, *, tick: float = 30.0) -> None:
        """Dispatch until stopped: on every wake-up, and when the next retry falls due."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
                async with self.sessions() as session:
                    due = await outbox.next_due_at(session)
                    counts = await outbox.counts(session)
                    if self._metrics is not None:
                        for status, count in counts.items():
                            self._metrics.outbox_rows.labels(status).set(count)
                    if self._status is not None:
                        self._status.outbox = counts
            except Exception as exc:  # the database may be away for a moment: try again later
                log.warning("dispatcher_error", error=f"{type(exc).__name__}: {exc}")
                due = None
            wait = tick if due is None else min(tick, max((due - utcnow()).total_seconds(), 0.05))
            await _wait_any(self._wake, stop, seconds=wait)
            await self._idle_close()

    async def _idle_close(self) -> None:
        """Drop idle IMAP connections between passes, so accounts' connection limits are spared."""
        if not self._wake.is_set():
            for session in self._imap.values():
                await session.close()
            self._imap.clear()

    # -- one row ---------------------------------------------------------------------------

    async def _perform(self, item: outbox.ClaimedItem, report: DispatchReport) -> None:
        """Perform one row and record its outcome."""
        if await self._blocked(item):
            async with self.sessions.begin() as session:
                await outbox.release(session, [item.id])
            report.deferred += 1
            return
        try:
            result = await self._handler(item.kind)(item)
        except Exception as exc:
            await self._failed(item, exc, report)
        else:
            async with self.sessions.begin() as session:
                await outbox.mark_done(session, item.id, result)
            self._done(item, report)

    async def _failed(
        self, item: outbox.ClaimedItem, exc: Exception, report: DispatchReport
    ) -> None:
        """Record a failed attempt: retry later when it may pass, park it when it never will."""
        if isinstance(exc, SmtpTemporaryError | ImapConnectionError | OSError | TimeoutError):
            await self._retry_or_bury(item, _reason(exc), report)
        elif isinstance(exc, SmtpPermanentError | ImapCommandError | Unperformable | ValueError):
            await self._bury(item, _reason(exc), report)
        else:  # a fault of maild itself: retry, park it when attempts run out
            log.exception("outbox_fault", outbox_id=item.id, kind=item.kind, exc_info=exc)
            await self._retry_or_bury(item, _reason(exc), report)

    def _done(self, item: outbox.ClaimedItem, report: DispatchReport) -> None:
        """Count and log an effect recorded as performed."""
        report.done += 1
        report.kinds[item.kind] = report.kinds.get(item.kind, 0) + 1
        self._outcome(item, "done")

    async def _claim_lost(self, item: outbox.ClaimedItem, claimed: float) -> bool:
        """Confirm a claim that has used half its lease; tell whether another process has the row."""
        lease = self.settings.lease_seconds
        if asyncio.get_running_loop().time() - claimed < lease / 2:
            return False
        async with self.sessions.begin() as session:
            kept = await outbox.confirm(session, item, lease_seconds=lease)
        if kept is None:
            log.warning("outbox_claim_lost", outbox_id=item.id, account=item.account)
        return kept is None

    async def _blocked(self, item: outbox.ClaimedItem) -> bool:
        """Tell whether an earlier mailbox effect of the same letter must be performed first."""
        if item.letter_id is None or item.kind not in outbox.IMAP_KINDS:
            return False
        async with self.sessions() as session:
            return await outbox.pending_before(session, item.letter_id, item.seq)

    async def _retry_or_bury(
        self, item: outbox.ClaimedItem, reason: str, report: DispatchReport
    ) -> None:
        """Schedule another attempt with backoff, or park the row when attempts are used up."""
        if item.attempts >= self.settings.max_attempts:
            await self._bury(item, f"gave up after {item.attempts} attempts: {reason}", report)
            return
        at = utcnow() + timedelta(seconds=self._backoff(item.attempts))
        async with self.sessions.begin() as session:
            await outbox.mark_retry(session, item.id, reason, at)
        report.retried += 1
        self._outcome(item, "retry", error=reason, next_attempt_at=at.isoformat())

    async def _bury(self, item: outbox.ClaimedItem, reason: str, report: DispatchReport) -> None:
        """Park a row as dead with the reason, for `maild outbox list` and an admin."""
        async with self.sessions.begin() as session:
            await outbox.mark_dead(session, item.id, reason)
            if item.kind == "autoreply":
                await self._release_throttle(session, item)
        report.dead += 1
        self._outcome(item, "dead", error=reason)

    async def _release_throttle(self, session: AsyncSession, item: outbox.ClaimedItem) -> None:
        """Give back the sender's throttle of an auto-reply that was never sent."""
        sender = str(item.payload.get("sender_key", ""))
        if item.letter_id is None or not sender:
            return
        progress = await sending.progress(session, item.id)
        if progress.get("stage") == "sent":
            return  # it went out; only filing it in Sent failed
        account_id = await autoreply_db.account_id(session, item.account)
        await autoreply_db.release(
            session, account_id=account_id, sender=sender, letter_id=item.letter_id
        )
        log.warning(
            "autoreply_released", account=item.account, letter_id=item.letter_id, sender=sender
        )

    def _outcome(self, item: outbox.ClaimedItem, outcome: str, **extra: str) -> None:
        """Log an attempt's outcome (one `outbox` line) and count it for /metrics."""
        if self._metrics is not None:
            self._metrics.outbox.labels(item.account, item.kind, outcome).inc()
        level = {"done": log.info, "retry": log.warning}.get(outcome, log.error)
        level(
            "outbox",
            outbox_id=item.id,
            account=item.account,
            letter_id=item.letter_id,
            kind=item.kind,
            target=item.target,
            outcome=outcome,
            attempt=item.attempts,
            **extra,
        )

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter, so a relay that is down is not hammered in step."""
        base = self.settings.retry_base_seconds * 2.0 ** max(attempts - 1, 0)
        jitter = random.uniform(0.8, 1.2)
        return float(min(base, self.settings.retry_max_seconds) * jitter)

    def _handler(self, kind: str) -> Callable[[outbox.ClaimedItem], Awaitable[dict[str, Any]]]:
        """Pick the code that performs one kind of effect."""
        handlers = {
            "forward": self._forward,
            "move": self._move,
            "copy": self._copy,
            "add_flag": self._add_flag,
            "remove_flag": self._remove_flag,
            "send": self._send,
            "autoreply": self._autoreply,
        }
        handler = handlers.get(kind)
        if handler is None:
            raise Unperformable(f"unknown outbox kind {kind!r}")
        return handler

    # -- sending ---------------------------------------------------------------------------

    async def _forward(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Compose the forward from the stored raw letter and send it through the relay."""
        account = self._account(item.account)
        if item.letter_id is None:
            raise Unperformable("a forward without a letter")
        if item.letter_status == "oversize":
            raise Unperformable(
                "the letter is over daemon.max_letter_bytes: only its header is stored, "
                "so it cannot be forwarded"
            )
        check_forward_target(item.target, self.settings)
        async with self.sessions() as session:
            raw = await repo.letter_raw(session, item.letter_id)
        mode = item.payload.get("mode", "attach")
        if mode not in FORWARD_MODES:
            raise Unperformable(f"unknown forward mode {mode!r}")
        identity = Identity(account.address, account.display_name or account.name)
        row = f"{item.id}:{item.letter_id}:{item.target}:{mode}:{item.message_id}"
        # in a thread: a letter of 100,000 header fields takes a second to split, off the loop
        outgoing = await asyncio.to_thread(
            compose_forward,
            mode,
            raw,
            account=identity,
            to=item.target,
            message_id=forward_message_id(row, identity),
        )
        await self._smtp().send(
            outgoing.raw, sender=outgoing.sender, recipients=outgoing.recipients
        )
        return {"to": item.target, "mode": mode, "bytes": len(outgoing.raw)}

    async def _send(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Send a letter the CRM queued, store it as outgoing, and file it in the Sent folder."""

        async def deliver(account: AccountConfig, account_id: int, folder_id: int) -> Sent:
            composed = await self._compose(item, account, account_id)
            await self._smtp().send(
                composed.raw, sender=composed.sender, recipients=composed.recipients
            )
            async with self.sessions.begin() as session:
                letter_id = await sending.store_sent(
                    session,
                    outbox_id=item.id,
                    folder_id=folder_id,
                    raw=composed.raw,
                    parsed=composed.parsed,
                    author=composed.author,
                )
            return Sent(letter_id, composed.raw, composed.parsed.message_id)

        return await self._send_once(item, deliver)

    # -- sending in batches -----------------------------------------------------------------

    async def _send_batch(
        self,
        items: list[outbox.ClaimedItem],
        claimed: float,
        report: DispatchReport,
        recorders: dict[str, _Recorder],
    ) -> list[outbox.ClaimedItem]:
        """Send the batch's CRM letters together, account by account; give back the other rows.

        Per letter only composing, SMTP and the APPEND are left: the rows are read a batch at a
        time, the sent letters stored and the rows marked done a chunk at a time. A crash
        between the relay's yes and the chunk's record sends those letters again once (at most
        two chunks); none is lost. Each letter's claim is confirmed just before it is sent, as one by one.
        """
        sends: dict[str, list[outbox.ClaimedItem]] = {}
        rest = []
        for item in items:
            if item.kind == "send" and item.account in self._accounts:
                sends.setdefault(item.account, []).append(item)
            else:
                rest.append(item)
        for name, group in sends.items():
            account = self._accounts[name]
            rest.extend(await self._send_group(account, group, claimed, report, recorders))
        return rest

    async def _send_group(
        self,
        account: AccountConfig,
        items: list[outbox.ClaimedItem],
        claimed: float,
        report: DispatchReport,
        recorders: dict[str, _Recorder],
    ) -> list[outbox.ClaimedItem]:
        """Send one account's fresh letters; give back the rows to perform one by one (refiling).

        Letters go over a few SMTP connections at once; meanwhile the sent ones are stored a
        chunk at a time, then filed in Sent (at most two chunks are sent but not yet stored).
        """
        if not items:
            return []
        try:
            account_id, folder_id = await self._sent_folder(account)
            loaded, later = await self._load_sends(items, account_id, report)
            await self._give_back(later)
        except Exception as exc:  # the database away for a moment: retry each, as one by one
            for item in items:
                await self._failed(item, exc, report)
            return []
        fresh = [one for one in loaded if one.row.progress.get("stage") != "sent"]
        recorder = recorders.get(account.name)
        if recorder is None:
            recorder = recorders[account.name] = Recorder(
                SEND_CHUNK,
                lambda sent: self._store(account_id, folder_id, sent, report),
                lambda stored: self._file_chunk(account, stored, report),
                max_bytes=LOAD_BYTES,
            )
        await self._send_all(account, fresh, claimed, report, recorder)
        return [one.item for one in loaded if one.row.progress.get("stage") == "sent"]

    async def _send_all(
        self,
        account: AccountConfig,
        letters: list[_Sending],
        claimed: float,
        report: DispatchReport,
        recorder: _Recorder,
    ) -> None:
        """Compose and send letters over up to SMTP_CONNECTIONS connections, each kept busy.

        Every letter the relay took goes to the recorder, which stores and files it in chunks
        meanwhile; a connection waits only while two chunks are not yet stored.
        """
        waiting = collections.deque(letters)

        async def work(sender: SmtpSender) -> None:
            while waiting:
                one = waiting.popleft()
                expected = _expected_size(one)
                await recorder.reserve(expected)
                sent = await self._send_one(account, sender, one, claimed, report)
                if sent is None:
                    recorder.unreserve(expected)
                else:
                    recorder.add(sent, len(sent.raw), reserved=expected)

        try:
            senders = self._senders(len(letters))
        except Exception as exc:  # no [smtp] section: nothing can be sent
            for one in letters:
                await self._failed(one.item, exc, report)
            return
        await asyncio.gather(*(work(sender) for sender in senders))

    async def _send_one(
        self,
        account: AccountConfig,
        sender: SmtpSender,
        one: _Sending,
        claimed: float,
        report: DispatchReport,
    ) -> _Sending | None:
        """Compose and send one letter; give it composed once the relay took it, else None."""
        if await self._claim_lost(one.item, claimed):
            return None
        try:
            composed = compose_letter(self._draft(account, one.row, one.files, one.letters))
            await sender.send(composed.raw, sender=composed.sender, recipients=composed.recipients)
        except Exception as exc:
            await self._failed(one.item, exc, report)
            return None
        # what it attached is in the composed bytes now: let it go before storing and filing
        return replace(one, composed=composed, files=[], letters=[], row=replace(one.row, files=[]))

    async def _sent_folder(self, account: AccountConfig) -> tuple[int, int]:
        """Give the account's id and its Sent folder's row, looked up once per dispatcher."""
        known = self._sent_folders.get(account.name)
        if known is None or known[0] != account.folders.sent:
            async with self.sessions.begin() as session:
                account_id, folder_id, _ = await sending.prepare(
                    session, 0, account.name, account.folders.sent
                )
            known = self._sent_folders[account.name] = (account.folders.sent, account_id, folder_id)
        return known[1], known[2]

    async def _load_sends(
        self, items: list[outbox.ClaimedItem], account_id: int, report: DispatchReport
    ) -> tuple[list[_Sending], list[outbox.ClaimedItem]]:
        """Read the rows with the files and letters they attach; a row that cannot be is parked.

        Rows past LOAD_BYTES of files come back untried (the second list), for the next claim.
        """
        out: list[_Sending] = []
        bad: list[tuple[outbox.ClaimedItem, Exception]] = []
        async with self.sessions() as session:
            rows, later_ids = await sending.load_sends(
                session, [item.id for item in items], account_id, max_bytes=LOAD_BYTES
            )
            cut = set(later_ids)
            later = [item for item in items if item.id in cut]
            for item in items:
                if item.id in cut:
                    continue
                row = rows.get(item.id)
                if row is None:
                    bad.append((item, Unperformable("the outbox row is gone")))
                    continue
                try:
                    files = [await self._file(session, ref) for ref in row.files]
                    letters = [await repo.letter_raw(session, i) for i in row.letter_ids]
                except Exception as exc:
                    bad.append((item, exc))
                    continue
                out.append(_Sending(item, row, files, letters))
        for item, error in bad:
            await self._failed(item, error, report)
        return out, later

    async def _give_back(self, items: list[outbox.ClaimedItem]) -> None:
        """Release claimed rows untried, so the next claim takes them again at once."""
        if items:
            async with self.sessions.begin() as session:
                await outbox.release(session, [item.id for item in items])

    async def _store(
        self, account_id: int, folder_id: int, sent: list[_Sending], report: DispatchReport
    ) -> list[tuple[_Sending, int]]:
        """Store the sent letters as outgoing, the rows saying "sent"; give each its letter id."""
        if not sent:
            return []
        letters = [
            sending.SentLetter(one.item.id, one.raw, one.parsed, one.row.author, one.row.lead_id)
            for one in sent
        ]
        try:
            async with self.sessions.begin() as session:
                stored = await sending.store_sent_many(
                    session, account_id=account_id, folder_id=folder_id, letters=letters
                )
        except Exception as exc:
            for one in sent:
                await self._failed(one.item, exc, report)
            return []
        return [(one, stored[one.item.id]) for one in sent]

    async def _file_chunk(
        self, account: AccountConfig, stored: list[tuple[_Sending, int]], report: DispatchReport
    ) -> None:
        """APPEND the stored letters to Sent, then give them their UIDs and mark the rows done."""
        done: list[tuple[outbox.ClaimedItem, dict[str, Any]]] = []
        places: list[tuple[int, int, int]] = []
        for group in _by_size(stored, MULTIAPPEND_BYTES):
            for one, letter_id, filed, place in await self._file_group(account, group, report):
                result = {
                    "stage": "sent",
                    "letter_id": letter_id,
                    "message_id": one.parsed.message_id,
                }
                done.append((one.item, result | filed))
                if place is not None:
                    places.append((letter_id, *place))
        if not done:
            return
        async with self.sessions.begin() as session:
            await sending.file_sent_many(session, places)
            await outbox.mark_done_many(session, [(item.id, result) for item, result in done])
        for item, _ in done:
            self._done(item, report)

    async def _file_group(
        self, account: AccountConfig, group: list[tuple[_Sending, int]], report: DispatchReport
    ) -> list[tuple[_Sending, int, dict[str, Any], tuple[int, int] | None]]:
        """APPEND letters to Sent, together when the server can; give each one filed and where."""
        folder = account.folders.sent
        try:
            together = await self._append_together(account, [one.raw for one, _ in group])
        except Exception as exc:  # the connection failed mid-command: each is refiled later
            for one, _ in group:
                await self._failed(one.item, exc, report)
            return []
        out = []
        for number, (one, letter_id) in enumerate(group):
            if together is not None:
                place = together[number]
                filed = {"filed": True, "folder": folder, "uid": place[1] if place else None}
            else:
                try:
                    filed, place = await self._file_fresh(one.item, folder, one.raw)
                except Exception as exc:
                    await self._failed(one.item, exc, report)
                    continue
            out.append((one, letter_id, filed, place))
        return out

    async def _append_together(
        self, account: AccountConfig, raws: list[bytes]
    ) -> list[tuple[int, int] | None] | None:
        """APPEND letters sent just now with one MULTIAPPEND; None to APPEND them one by one.

        One by one when the server cannot (no MULTIAPPEND or LITERAL+), or refuses the command
        (it then stored none of them; a missing Sent folder is created on the way one by one).
        """
        if len(raws) < 2:
            return None
        session = await self._session(account.name)
        if not session.has_multiappend:
            return None
        try:
            places = await session.append_many(account.folders.sent, raws, flags=["\\Seen"])
        except ImapConnectionError:
            await self._drop(account.name)
            raise
        except ImapCommandError as exc:
            log.info("multiappend_refused", folder=account.folders.sent, error=str(exc)[:200])
            return None
        return list(places) if places is not None else [None] * len(raws)

    async def _file_fresh(
        self, item: outbox.ClaimedItem, folder: str, raw: bytes
    ) -> tuple[dict[str, Any], tuple[int, int] | None]:
        """APPEND a letter sent just now to Sent; no earlier attempt can have filed it."""
        session = await self._session(item.account)
        try:
            place = await self._append(session, folder, raw)
        except ImapConnectionError:
            await self._drop(item.account)
            raise
        except ImapCommandError as exc:  # sent, but the server will not file it: do not resend
            log.warning("sent_not_filed", outbox_id=item.id, folder=folder, error=str(exc))
            return {"filed": False, "error": str(exc)[:500]}, None
        uid = place[1] if place is not None else None
        return {"filed": True, "folder": folder, "uid": uid}, place

    async def _autoreply(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Send an auto-reply, store it as outgoing, record the throttle as sent, file it in Sent."""
        if item.letter_id is None:
            raise Unperformable("an auto-reply without the letter it answers")
        answered = item.letter_id

        async def deliver(account: AccountConfig, account_id: int, folder_id: int) -> Sent:
            reply = compose_reply(
                item.payload,
                account_address=account.address,
                account_name=account.display_name or account.name,
            )
            await self._smtp().send(reply.raw, sender=reply.sender, recipients=reply.recipients)
            async with self.sessions.begin() as session:
                letter_id = await sending.store_sent(
                    session,
                    outbox_id=item.id,
                    folder_id=folder_id,
                    raw=reply.raw,
                    parsed=reply.parsed,
                    author=None,
                    relink=False,
                )
                await autoreply_db.record_sent(
                    session,
                    account_id=account_id,
                    sender=str(item.payload.get("sender_key", item.target.lower())),
                    letter_id=answered,
                    arrival=datetime.fromisoformat(str(item.payload["arrival"])),
                )
            return Sent(letter_id, reply.raw, reply.parsed.message_id)

        return await self._send_once(item, deliver)

    async def _send_once(self, item: outbox.ClaimedItem, deliver: Deliver) -> dict[str, Any]:
        """Send a composed letter at most once, then file it in Sent (a retry after sending only files it)."""
        account = self._account(item.account)
        async with self.sessions.begin() as session:
            account_id, sent_folder_id, done = await sending.prepare(
                session, item.id, account.name, account.folders.sent
            )
        if done.get("stage") == "sent":  # sent before a crash or an IMAP failure: only file it
            async with self.sessions() as session:
                raw = await repo.letter_raw(session, int(done["letter_id"]))
            sent = Sent(int(done["letter_id"]), raw, str(done.get("message_id", "")))
        else:
            sent = await deliver(account, account_id, sent_folder_id)
        result = {"stage": "sent", "letter_id": sent.letter_id, "message_id": sent.message_id}
        return result | await self._file_in_sent(
            item, account.folders.sent, sent.letter_id, sent.raw, sent.message_id
        )

    async def _compose(
        self, item: outbox.ClaimedItem, account: AccountConfig, account_id: int
    ) -> ComposedSend:
        """Read the row and compose its letter; a draft that cannot be sent raises DraftError."""
        async with self.sessions() as session:
            row = await sending.load_send(session, item.id, account_id)
            files = [await self._file(session, ref) for ref in row.files]
            letters = [await repo.letter_raw(session, i) for i in row.letter_ids]
        draft = self._draft(account, row, files, letters)
        return ComposedSend(compose_letter(draft), row.author)

    def _draft(
        self,
        account: AccountConfig,
        row: sending.SendRow,
        files: list[FileAttachment],
        letters: list[bytes],
    ) -> Draft:
        """Make the draft of a row, with its files and attached letters read."""
        return draft_for(
            self.config,
            account,
            row.author,
            Message(
                to=row.mail_to,
                cc=row.mail_cc,
                bcc=row.mail_bcc,
                subject=row.subject,
                text=row.text_body,
                html=row.html_body,
            ),
            request_number=row.request_number,
            files=files,
            letters=letters,
        )

    async def _file(self, session: AsyncSession, ref: sending.FileRef) -> FileAttachment:
        """Give an attachment's bytes: its own, or the file of a stored letter it refers to."""
        if ref.content is not None:
            return FileAttachment(ref.filename, ref.content_type, ref.content)
        if ref.letter_id is None or ref.letter_position is None:
            raise Unperformable(
                "an attachment row has neither content nor a letter to take it from"
            )
        try:
            name, ctype = await sending.attachment_of(session, ref.letter_id, ref.letter_position)
            raw = await repo.letter_raw(session, ref.letter_id)
            content = part_named(raw, name)
        except KeyError as exc:
            raise Unperformable(str(exc.args[0])) from exc
        return FileAttachment(ref.filename or name, ref.content_type or ctype, content)

    async def _file_in_sent(
        self, item: outbox.ClaimedItem, folder: str, letter_id: int, raw: bytes, message_id: str
    ) -> dict[str, Any]:
        """APPEND the sent letter to Sent (once) and give the stored letter its UID there."""
        session = await self._session(item.account)
        try:
            found = []
            if message_id and await session.folder_exists(folder):
                await session.select(folder)
                found = await session.search_message_id(message_id)
            if found:
                uid: int | None = found[0]
            else:
                place = await self._append(session, folder, raw)
                uid = place[1] if place is not None else None
            status = await session.select(folder)
        except ImapConnectionError:
            await self._drop(item.account)
            raise
        except (
            ImapCommandError
        ) as exc:  # sent, but the server will not file it: say so, do not resend
            log.warning("sent_not_filed", outbox_id=item.id, folder=folder, error=str(exc))
            return {"filed": False, "error": str(exc)[:500]}
        if uid is not None and status.uidvalidity is not None:
            async with self.sessions.begin() as db:
                await sending.file_sent(db, letter_id, uidvalidity=status.uidvalidity, uid=uid)
        return {"filed": True, "folder": folder, "uid": uid}

    async def _append(
        self, session: ImapSession, folder: str, raw: bytes
    ) -> tuple[int, int] | None:
        """APPEND as seen, creating the folder when the server says it does not exist."""
        try:
            return await session.append_placed(folder, raw, flags=["\\Seen"])
        except ImapCommandError as exc:
            if not exc.trycreate:
                raise
        await session.create_folder(folder)
        log.info("folder_created", folder=folder)
        return await session.append_placed(folder, raw, flags=["\\Seen"])

    def _smtp(self) -> SmtpSender:
        """Give the relay connection, made on first use."""
        if self._sender is None:
            if self.config.smtp is None:
                raise Unperformable("no [smtp] section in the config to send through")
            self._sender = SmtpSender(self.config.smtp, timeout=self.settings.smtp_timeout_seconds)
        return self._sender

    def _senders(self, letters: int) -> list[SmtpSender]:
        """Give up to SMTP_CONNECTIONS relay connections for a batch of letters, made on first use."""
        wanted = max(1, min(letters, SMTP_CONNECTIONS))
        first = self._smtp()
        while 1 + len(self._more_senders) < wanted and self.config.smtp is not None:
            self._more_senders.append(
                SmtpSender(self.config.smtp, timeout=self.settings.smtp_timeout_seconds)
            )
        return [first, *self._more_senders[: wanted - 1]]

    # -- the mailbox -----------------------------------------------------------------------

    async def _move(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Move the letter; into the deleted folder it first gets \\Deleted, which travels with it."""
        if item.folder == item.target:
            return {"folder": item.target, "already_there": True}
        session, uid = await self._locate(item)
        if uid is None:
            return {"folder": item.target, "missing": True}
        marks = bool(item.payload.get("marks_deleted"))
        if marks:
            await session.add_flags([uid], [DELETED_FLAG])
        try:
            moved = await self._into_folder(
                session, item.target, lambda: session.move([uid], item.target)
            )
        except ImapCommandError:
            if marks:  # the letter stays where it is: it must not be left marked for expunge
                await session.remove_flags([uid], [DELETED_FLAG])
            raise
        return {"folder": item.target, "uid": moved.get(uid)}

    async def _copy(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Copy the letter into another folder."""
        session, uid = await self._locate(item)
        if uid is None:
            return {"folder": item.target, "missing": True}
        copied = await self._into_folder(
            session, item.target, lambda: session.copy([uid], item.target)
        )
        return {"folder": item.target, "uid": copied.get(uid)}

    async def _add_flag(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Set a flag or keyword on the letter."""
        session, uid = await self._locate(item)
        if uid is not None:
            await session.add_flags([uid], [item.target])
        return {"flag": item.target, "missing": uid is None}

    async def _remove_flag(self, item: outbox.ClaimedItem) -> dict[str, Any]:
        """Clear a flag or keyword on the letter."""
        session, uid = await self._locate(item)
        if uid is not None:
            await session.remove_flags([uid], [item.target])
        return {"flag": item.target, "missing": uid is None}

    # -- the mailbox, many letters at a time --------------------------------------------------

    async def _perform_mailbox(
        self, items: list[outbox.ClaimedItem], claimed: float, report: DispatchReport
    ) -> list[outbox.ClaimedItem]:
        """Perform the claimed mailbox effects a group per command, round by round; give the rest."""
        for round_items in batch.rounds(items):
            kept = [item for item in round_items if not await self._claim_lost(item, claimed)]
            async with self.sessions() as session:
                blocked = await outbox.blocked(session, kept)
            if blocked:
                async with self.sessions.begin() as session:
                    await outbox.release(session, sorted(blocked))
                report.deferred += len(blocked)
            groups, singles = batch.group(item for item in kept if item.id not in blocked)
            for key, members in groups.items():
                await self._perform_group(key, members, report)
            for item in singles:
                await self._perform(item, report)
        return [item for item in items if item.kind not in outbox.IMAP_KINDS]

    async def _perform_group(
        self, key: batch.GroupKey, items: list[outbox.ClaimedItem], report: DispatchReport
    ) -> None:
        """Perform a group and record it in one transaction; if it fails, go one row at a time."""
        try:
            results = await self._group_effect(key, items)
        except Exception as exc:  # one bad letter must not cost the others: each row alone
            if isinstance(exc, ImapConnectionError):
                await self._drop(key.account)
            log.warning(
                "outbox_group_one_by_one",
                account=key.account,
                folder=key.folder,
                kind=key.kind,
                target=key.target,
                rows=len(items),
                error=_reason(exc),
            )
            results = None
        if results is None:
            for item in items:
                await self._perform(item, report)
            return
        async with self.sessions.begin() as session:
            await outbox.mark_done_many(session, [(item.id, results[item.id]) for item in items])
        for item in items:
            report.done += 1
            report.kinds[item.kind] = report.kinds.get(item.kind, 0) + 1
            self._outcome(item, "done")

    async def _group_effect(
        self, key: batch.GroupKey, items: list[outbox.ClaimedItem]
    ) -> dict[int, dict[str, Any]] | None:
        """Select the folder, keep the UIDs still there, act on them; None if UIDVALIDITY changed."""
        session = await self._session(key.account)
        status = await session.select(key.folder)
        if status.uidvalidity != key.uidvalidity:
            return None  # the UIDs mean other letters now: each row finds its letter by Message-ID
        present = await session.sizes(batch.uids_of(items))
        live = [uid for uid in batch.uids_of(items) if uid in present]
        new_uids = await self._group_command(session, key, live) if live else {}
        return {
            item.id: batch.result_of(key, item.uid or 0, item.uid in present, new_uids)
            for item in items
        }

    async def _group_command(
        self, session: ImapSession, key: batch.GroupKey, uids: list[int]
    ) -> dict[int, int]:
        """Run the group's action on its UIDs (chunked by the session); give old -> new UIDs."""
        if key.kind == "add_flag":
            await session.add_flags(uids, [key.target])
            return {}
        if key.kind == "remove_flag":
            await session.remove_flags(uids, [key.target])
            return {}
        if key.kind == "copy":
            return await self._into_folder(
                session, key.target, lambda: session.copy(uids, key.target)
            )
        if key.marks_deleted:  # set before the move, so \Deleted travels with the letters
            await session.add_flags(uids, [DELETED_FLAG])
        try:
            return await self._into_folder(
                session, key.target, lambda: session.move(uids, key.target)
            )
        except ImapCommandError:
            if key.marks_deleted:  # letters that stay must not be left marked for expunge
                await session.remove_flags(uids, [DELETED_FLAG])
            raise

    async def _into_folder(
        self, session: ImapSession, folder: str, act: Callable[[], Awaitable[dict[int, int]]]
    ) -> dict[int, int]:
        """Copy or move into a folder, creating it when the server says it does not exist."""
        try:
            return await act()
        except ImapCommandError as exc:
            if not getattr(exc, "trycreate", False):
                raise
        await session.create_folder(folder)
        log.info("folder_created", folder=folder)
        return await act()

    async def _locate(self, item: outbox.ClaimedItem) -> tuple[ImapSession, int | None]:
        """Select the letter's folder and find its UID now; None when it is no longer there."""
        if item.folder is None or item.uid is None:
            raise Unperformable("the letter's folder is not known")
        session = await self._session(item.account)
        try:
            status = await session.select(item.folder)
            if status.uidvalidity == item.uidvalidity:
                present = await session.sizes([item.uid])
                return session, (item.uid if item.uid in present else None)
            if not item.message_id:
                return session, None
            found = await session.search_message_id(item.message_id)
            return session, (found[0] if found else None)
        except ImapConnectionError:
            await self._drop(item.account)
            raise

    async def _session(self, account_name: str) -> ImapSession:
        """Give a logged-in session for the account, reconnecting when the last one broke."""
        session = self._imap.get(account_name)
        if session is not None and not session.broken:
            return session
        if session is not None:
            await self._drop(account_name)
        account = self._account(account_name)
        session = await self._connect_imap(self._endpoint_for(account))
        self._imap[account_name] = session
        return session

    async def _drop(self, account_name: str) -> None:
        """Forget a broken session."""
        session = self._imap.pop(account_name, None)
        if session is not None:
            await session.close()

    def _account(self, name: str) -> AccountConfig:
        """Find the account an effect belongs to in the config in force."""
        account = self._accounts.get(name)
        if account is None:
            raise Unperformable(f"account {name!r} is no longer in the config")
        return account


def _expected_size(one: _Sending) -> int:
    """Guess a letter's composed size before composing it: its files in base64, its letters.

    Base64 gives 76 characters and a line end for every 57 bytes.
    """
    files = sum(len(item.content) for item in one.files)
    texts = len(one.row.text_body) + len(one.row.html_body)
    return files * 78 // 57 + sum(len(raw) for raw in one.letters) + 2 * texts + 4096


def _by_size(stored: list[tuple[_Sending, int]], limit: int) -> list[list[tuple[_Sending, int]]]:
    """Split letters, in order, into groups of at most ``limit`` bytes (a larger one alone)."""
    groups: list[list[tuple[_Sending, int]]] = []
    size = limit + 1
    for pair in stored:
        if size + len(pair[0].raw) > limit:
            groups.append([])
            size = 0
        groups[-1].append(pair)
        size += len(pair[0].raw)
    return groups


def _reason(exc: BaseException) -> str:
    """Render an error for the row's last_error and the log, without secrets."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ImapError | SmtpTemporaryError | SmtpPermanentError):
        return text[:4000]
    return f"{type(exc).__name__}: {text}"[:4000]


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, *, seconds: float) -> None:
    """Sleep until woken, stopped, or the timeout passes."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
